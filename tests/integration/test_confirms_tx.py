"""Publisher confirms and transactions with pika: confirm.select, tx.select/commit/rollback.

Expected behaviour (reply codes and texts) is RabbitMQ 3.10's, checked by running these
tests against it.
"""

from __future__ import annotations

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from tests.integration.helpers import (
    Cleanup,
    drain,
    queue_depth,
    raw_rpc,
    round_trip,
    wait_until,
)

pytestmark = pytest.mark.timeout(30)


# --- publisher confirms ----------------------------------------------------------------------


def test_confirm_delivery_acks_every_publish(channel: BlockingChannel, queue: str) -> None:
    channel.confirm_delivery()
    for number in range(100):
        # With confirms on, basic_publish returns only after the broker's basic.ack.
        channel.basic_publish("", queue, str(number).encode())
    assert queue_depth(channel, queue) == (100, 0)


def test_confirm_delivery_acks_persistent_messages_on_durable_queue(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    channel.queue_declare(cleanup.queue(name), durable=True)
    channel.confirm_delivery()
    for number in range(10):
        channel.basic_publish("", name, str(number).encode(), pika.BasicProperties(delivery_mode=2))
    assert queue_depth(channel, name) == (10, 0)


def test_confirms_count_from_one_and_cover_every_publish(
    connection: BlockingConnection, channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    """Watch the raw basic.ack frames: every sequence number 1..N is confirmed exactly once."""
    acked: set[int] = set()
    nacked: list[int] = []

    def on_confirm(frame: pika.frame.Method) -> None:
        method = frame.method
        upto = {tag for tag in range(1, method.delivery_tag + 1) if tag not in acked}
        covered = upto if method.multiple else {method.delivery_tag}
        if isinstance(method, pika.spec.Basic.Nack):
            nacked.extend(covered)
        else:
            assert not covered & acked, f"tag confirmed twice: {method}"
            acked.update(covered)

    channel.queue_declare(cleanup.queue(name))
    channel._impl.confirm_delivery(on_confirm)  # asynchronous confirms, as SelectConnection
    round_trip(channel)
    for number in range(200):
        channel._impl.basic_publish("", name, str(number).encode())
        channel._impl.basic_publish("amq.direct", "nowhere", b"unroutable is acked too")
    wait_until(connection, lambda: len(acked) == 400, what="400 confirms")
    assert acked == set(range(1, 401))
    assert nacked == []


def test_mandatory_unroutable_publish_is_still_acked(
    channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    channel.exchange_declare(cleanup.exchange(name), "direct")
    channel.confirm_delivery()
    # pika raises UnroutableError after a basic.return followed by basic.ack (a nack
    # would be NackError).
    with pytest.raises(pika.exceptions.UnroutableError):
        channel.basic_publish(name, "nowhere", b"x", mandatory=True)


def test_confirm_select_twice_is_fine(
    connection: BlockingConnection, channel: BlockingChannel
) -> None:
    reply = raw_rpc(connection, channel, pika.spec.Confirm.Select(), [pika.spec.Confirm.SelectOk])
    assert isinstance(reply, pika.spec.Confirm.SelectOk)
    reply = raw_rpc(connection, channel, pika.spec.Confirm.Select(), [pika.spec.Confirm.SelectOk])
    assert isinstance(reply, pika.spec.Confirm.SelectOk)


# --- transactions ----------------------------------------------------------------------------


def test_publishes_become_visible_only_on_commit(
    connection: BlockingConnection, channel: BlockingChannel, queue: str
) -> None:
    observer = connection.channel()
    ok = channel.tx_select()
    assert isinstance(ok.method, pika.spec.Tx.SelectOk)
    for number in range(3):
        channel.basic_publish("", queue, str(number).encode())
    round_trip(channel)
    assert queue_depth(observer, queue) == (0, 0)
    ok = channel.tx_commit()
    assert isinstance(ok.method, pika.spec.Tx.CommitOk)
    # commit-ok means every effect of the transaction is visible.
    assert queue_depth(observer, queue) == (3, 0)
    assert drain(observer, queue) == [b"0", b"1", b"2"]


def test_rollback_discards_publishes(
    connection: BlockingConnection, channel: BlockingChannel, queue: str
) -> None:
    observer = connection.channel()
    channel.tx_select()
    channel.basic_publish("", queue, b"discarded")
    ok = channel.tx_rollback()
    assert isinstance(ok.method, pika.spec.Tx.RollbackOk)
    assert queue_depth(observer, queue) == (0, 0)
    # The channel stays transactional: the next transaction starts empty.
    channel.basic_publish("", queue, b"kept")
    assert queue_depth(observer, queue) == (0, 0)
    channel.tx_commit()
    assert drain(observer, queue) == [b"kept"]


def test_commit_of_an_empty_transaction(channel: BlockingChannel) -> None:
    channel.tx_select()
    channel.tx_commit()
    channel.tx_rollback()
    channel.tx_commit()


def test_uncommitted_publishes_are_dropped_when_the_channel_closes(
    connection: BlockingConnection, channel: BlockingChannel, queue: str
) -> None:
    channel.tx_select()
    channel.basic_publish("", queue, b"never committed")
    channel.close()
    assert queue_depth(connection.channel(), queue) == (0, 0)


def test_ack_in_a_transaction_takes_effect_on_commit(
    connection: BlockingConnection, channel: BlockingChannel, queue: str
) -> None:
    channel.basic_publish("", queue, b"m")
    round_trip(channel)
    channel.tx_select()
    method, _, _ = channel.basic_get(queue)
    channel.basic_ack(method.delivery_tag)
    channel.tx_commit()
    channel.close()
    # Committed: closing the channel has nothing to requeue.
    assert queue_depth(connection.channel(), queue) == (0, 0)


def test_ack_in_a_transaction_is_undone_by_closing_without_commit(
    connection: BlockingConnection, channel: BlockingChannel, queue: str
) -> None:
    channel.basic_publish("", queue, b"m")
    round_trip(channel)
    channel.tx_select()
    method, _, _ = channel.basic_get(queue)
    channel.basic_ack(method.delivery_tag)
    round_trip(channel)
    # Until commit the message is still unacked: not ready, and requeued on close.
    observer = connection.channel()
    assert queue_depth(observer, queue) == (0, 0)
    channel.close()
    got, _, body = observer.basic_get(queue, auto_ack=True)
    assert (body, got.redelivered) == (b"m", True)


def test_ack_after_rollback_can_be_acked_again(
    connection: BlockingConnection, channel: BlockingChannel, queue: str
) -> None:
    channel.basic_publish("", queue, b"m")
    round_trip(channel)
    channel.tx_select()
    method, _, _ = channel.basic_get(queue)
    channel.basic_ack(method.delivery_tag)
    channel.tx_rollback()
    # The rolled-back ack left the message unacked, so the same tag can be acked again.
    channel.basic_ack(method.delivery_tag)
    channel.tx_commit()
    channel.close()
    assert queue_depth(connection.channel(), queue) == (0, 0)


def test_reject_with_requeue_in_a_transaction_takes_effect_on_commit(
    connection: BlockingConnection, channel: BlockingChannel, queue: str
) -> None:
    channel.basic_publish("", queue, b"m")
    round_trip(channel)
    observer = connection.channel()
    channel.tx_select()
    method, _, _ = channel.basic_get(queue)
    channel.basic_reject(method.delivery_tag, requeue=True)
    round_trip(channel)
    assert queue_depth(observer, queue) == (0, 0)
    channel.tx_commit()
    assert queue_depth(observer, queue) == (1, 0)


def test_double_ack_in_one_transaction_is_406(channel: BlockingChannel, queue: str) -> None:
    channel.basic_publish("", queue, b"m")
    round_trip(channel)
    channel.tx_select()
    method, _, _ = channel.basic_get(queue)
    channel.basic_ack(method.delivery_tag)
    channel.basic_ack(method.delivery_tag)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.tx_commit()
    assert caught.value.reply_code == 406
    assert caught.value.reply_text == (
        f"PRECONDITION_FAILED - unknown delivery tag {method.delivery_tag}"
    )


def test_commit_without_select_is_406(
    connection: BlockingConnection, channel: BlockingChannel
) -> None:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.tx_commit()
    assert caught.value.reply_code == 406
    assert caught.value.reply_text == "PRECONDITION_FAILED - channel is not transactional"
    assert connection.is_open


def test_rollback_without_select_is_406(channel: BlockingChannel) -> None:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.tx_rollback()
    assert caught.value.reply_code == 406
    assert caught.value.reply_text == "PRECONDITION_FAILED - channel is not transactional"


def test_tx_select_after_confirm_select_is_406(channel: BlockingChannel) -> None:
    channel.confirm_delivery()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.tx_select()
    assert caught.value.reply_code == 406
    assert caught.value.reply_text == (
        "PRECONDITION_FAILED - cannot switch from confirm to tx mode"
    )


def test_confirm_select_after_tx_select_is_406(channel: BlockingChannel) -> None:
    channel.tx_select()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        channel.confirm_delivery()
    assert caught.value.reply_code == 406
    assert caught.value.reply_text == (
        "PRECONDITION_FAILED - cannot switch from tx to confirm mode"
    )


def test_mandatory_return_in_a_transaction_comes_with_the_commit(
    connection: BlockingConnection, channel: BlockingChannel, name: str, cleanup: Cleanup
) -> None:
    channel.exchange_declare(cleanup.exchange(name), "direct")
    returned: list[pika.spec.Basic.Return] = []
    channel.add_on_return_callback(lambda _ch, method, _props, _body: returned.append(method))
    channel.tx_select()
    channel.basic_publish(name, "nowhere", b"bounced", mandatory=True)
    round_trip(channel)  # a return would come before this reply on the same channel
    assert returned == []  # nothing is routed before the commit
    channel.tx_commit()
    wait_until(connection, lambda: bool(returned), what="basic.return after commit")
    assert (returned[0].reply_code, returned[0].reply_text) == (312, "NO_ROUTE")
