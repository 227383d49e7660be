"""Consumer groups and tag filtering on streams (amqpd's own), with pika against the real
broker: groups share messages among members, keep their place across reconnects and
restarts, and can be rewound; filtered readers get only their tags."""

from __future__ import annotations

from pathlib import Path

import httpx
import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from amqpd.config.model import Management
from interop.system import free_port
from tests.integration.helpers import Cleanup, Deliveries, connect, wait_until
from tests.streams.test_streams import STREAM, consume, offsets, publish, settle
from tests.support.broker_process import BrokerProcess
from tests.support.in_process import running_node, url_of


def member(
    connection: BlockingConnection, queue: str, group: str, prefetch: int = 10, **arguments: object
) -> tuple[BlockingChannel, Deliveries]:
    """A group member that does not ack by itself."""
    channel = connection.channel()
    channel.basic_qos(prefetch_count=prefetch)
    deliveries = Deliveries()
    channel.basic_consume(queue, deliveries, arguments={"x-consumer-group": group, **arguments})
    return channel, deliveries


def test_groups_each_read_every_message_once(
    connection: BlockingConnection, channel: BlockingChannel, stream: str
) -> None:
    publish(channel, stream, 30)
    first = consume(
        connection, stream, 30, **{"x-consumer-group": "billing", "x-stream-offset": "first"}
    )
    second = consume(
        connection, stream, 30, **{"x-consumer-group": "audit", "x-stream-offset": "first"}
    )
    settle(connection)
    assert offsets(first) == offsets(second) == list(range(30))


def test_members_of_a_group_share_its_messages(
    connection: BlockingConnection, channel: BlockingChannel, stream: str
) -> None:
    publish(channel, stream, 40)
    args = {"x-consumer-group": "workers", "x-stream-offset": "first"}
    one = consume(connection, stream, 0, prefetch=5, **args)
    two = consume(connection, stream, 0, prefetch=5, **args)
    wait_until(connection, lambda: len(one) + len(two) == 40)
    settle(connection)
    assert sorted(offsets(one) + offsets(two)) == list(range(40))
    assert one.bodies and two.bodies  # both took part


def test_a_group_resumes_where_it_stopped_after_a_reconnect(amqp_url: str, stream: str) -> None:
    with connect(amqp_url) as connection:
        publish(connection.channel(), stream, 10)
        channel, deliveries = member(
            connection, stream, "g", prefetch=10, **{"x-stream-offset": "first"}
        )
        wait_until(connection, lambda: len(deliveries) == 10)
        channel.basic_ack(deliveries.methods[5].delivery_tag, multiple=True)  # offsets 0..5
        settle(connection)
    with connect(amqp_url) as connection:
        # the six acked are done; the four delivered but not acked come again, redelivered
        channel, deliveries = member(connection, stream, "g", **{"x-stream-offset": "first"})
        wait_until(connection, lambda: len(deliveries) == 4)
        assert offsets(deliveries) == [6, 7, 8, 9]
        assert all(method.redelivered for method in deliveries.methods)
        channel.basic_ack(0, multiple=True)
        publish(connection.channel(), stream, 1, start=10)
        wait_until(connection, lambda: len(deliveries) == 5)
        assert offsets(deliveries)[-1] == 10 and not deliveries.methods[-1].redelivered


def test_nack_with_requeue_gives_the_message_back_to_the_group(
    connection: BlockingConnection, channel: BlockingChannel, stream: str
) -> None:
    publish(channel, stream, 3)
    reader, deliveries = member(connection, stream, "g", prefetch=1, **{"x-stream-offset": "first"})
    wait_until(connection, lambda: len(deliveries) == 1)
    reader.basic_nack(deliveries.methods[0].delivery_tag, requeue=True)
    wait_until(connection, lambda: len(deliveries) == 2)
    assert offsets(deliveries) == [0, 0] and deliveries.methods[1].redelivered
    reader.basic_reject(deliveries.methods[1].delivery_tag, requeue=False)  # done with it
    wait_until(connection, lambda: len(deliveries) == 3)
    assert offsets(deliveries)[-1] == 1


def test_the_application_rewinds_a_group(
    connection: BlockingConnection, channel: BlockingChannel, stream: str
) -> None:
    publish(channel, stream, 5)
    first, deliveries = member(connection, stream, "g", **{"x-stream-offset": "first"})
    wait_until(connection, lambda: len(deliveries) == 5)
    first.basic_ack(0, multiple=True)
    first.close()
    again = consume(
        connection,
        stream,
        3,
        **{"x-consumer-group": "g", "x-stream-offset": 2, "x-consumer-group-reset": True},
    )
    settle(connection)
    assert offsets(again) == [2, 3, 4]
    # without the reset flag, x-stream-offset does not move a group that exists
    later = consume(connection, stream, 0, **{"x-consumer-group": "g", "x-stream-offset": "first"})
    settle(connection)
    assert len(later) == 0


def test_a_group_name_and_reset_flag_are_checked(
    connection: BlockingConnection, stream: str
) -> None:
    for arguments in (
        {"x-consumer-group": ""},
        {"x-consumer-group": "g", "x-consumer-group-reset": "yes"},
    ):
        channel = connection.channel()
        channel.basic_qos(prefetch_count=1)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
            channel.basic_consume(stream, Deliveries(), arguments=arguments)
        assert closed.value.reply_code == 406


def test_stream_arguments_on_a_classic_queue_are_refused(
    connection: BlockingConnection, name: str, cleanup: Cleanup
) -> None:
    connection.channel().queue_declare(cleanup.queue(name))
    for arguments in ({"x-stream-offset": "first"}, {"x-consumer-group": "g"}):
        channel = connection.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
            channel.basic_consume(name, Deliveries(), arguments=arguments)
        assert closed.value.reply_code == 406
        assert "only a stream queue takes it" in closed.value.reply_text


def test_a_group_keeps_its_place_across_a_kill(broker_process: BrokerProcess) -> None:
    broker = broker_process.start()
    with connect(broker.url) as connection:
        channel = connection.channel()
        channel.queue_declare("orders", durable=True, arguments=STREAM)
        publish(channel, "orders", 20)
        reader, deliveries = member(
            connection, "orders", "shipping", prefetch=20, **{"x-stream-offset": "first"}
        )
        wait_until(connection, lambda: len(deliveries) == 20)
        reader.basic_ack(deliveries.methods[11].delivery_tag, multiple=True)  # 0..11 done
        settle(connection)
    broker.kill()  # kill -9: the group's place must already be in the log
    broker.start()
    with connect(broker.url) as connection:
        _, deliveries = member(connection, "orders", "shipping", prefetch=20)
        wait_until(connection, lambda: len(deliveries) == 8)
        settle(connection)
        assert offsets(deliveries) == list(range(12, 20))


def test_filtered_readers_get_only_their_tags(
    connection: BlockingConnection, channel: BlockingChannel, stream: str
) -> None:
    channel.confirm_delivery()
    for number in range(60):
        tag = ("red", "green", None)[number % 3]
        headers = {"x-stream-filter-value": tag} if tag else None
        channel.basic_publish(
            "", stream, f"m{number}".encode(), pika.BasicProperties(headers=headers)
        )
    red = consume(connection, stream, 20, **{"x-stream-offset": "first", "x-stream-filter": "red"})
    both = consume(
        connection, stream, 40, **{"x-stream-offset": "first", "x-stream-filter": ["red", "green"]}
    )
    plain = consume(
        connection,
        stream,
        40,
        **{
            "x-stream-offset": "first",
            "x-stream-filter": "green",
            "x-stream-match-unfiltered": True,
        },
    )
    settle(connection)
    assert offsets(red) == list(range(0, 60, 3))
    assert offsets(both) == [n for n in range(60) if n % 3 != 2]
    assert offsets(plain) == [n for n in range(60) if n % 3 != 0]


def test_a_bad_filter_is_refused(connection: BlockingConnection, stream: str) -> None:
    for arguments in (
        {"x-stream-filter": []},
        {"x-stream-filter": 5},
        {"x-stream-filter": "a", "x-stream-match-unfiltered": "yes"},
    ):
        channel = connection.channel()
        channel.basic_qos(prefetch_count=1)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
            channel.basic_consume(stream, Deliveries(), arguments=arguments)
        assert closed.value.reply_code == 406


def test_an_operator_lists_and_rewinds_groups_over_http(tmp_path: Path) -> None:
    with running_node(tmp_path, management=Management(port=free_port())) as node:
        address = node.management_address
        assert address is not None
        base = f"http://{address[0]}:{address[1]}"
        auth = ("guest", "guest")
        with connect(url_of(node)) as connection:
            channel = connection.channel()
            channel.queue_declare("s", durable=True, arguments=STREAM)
            publish(channel, "s", 10)
            first, taken = member(connection, "s", "g", **{"x-stream-offset": "first"})
            wait_until(connection, lambda: len(taken) == 10)
            first.basic_ack(0, multiple=True)
            settle(connection)
            groups = httpx.get(f"{base}/api/queues/%2F/s/groups", auth=auth).json()
            assert groups == [{"name": "g", "offset": 10, "lag": 0, "consumers": 1}]
            shown = httpx.get(f"{base}/api/queues/%2F/s", auth=auth).json()
            assert (shown["type"], shown["messages"], shown["next_offset"]) == ("stream", 10, 10)
            first.close()
            reply = httpx.put(f"{base}/api/queues/%2F/s/groups/g", json={"offset": 7}, auth=auth)
            assert reply.status_code == 200 and reply.json()["offset"] == 7
            # the member reading the group now gets 7, 8, 9 again
            _, deliveries = member(connection, "s", "g")
            wait_until(connection, lambda: len(deliveries) >= 3)
            assert offsets(deliveries)[:3] == [7, 8, 9]
            bad = httpx.put(f"{base}/api/queues/%2F/s/groups/g", json={"offset": "soon"}, auth=auth)
            assert bad.status_code == 400
            busy = httpx.delete(f"{base}/api/queues/%2F/s/groups/g", auth=auth)
            assert busy.status_code == 400
            channel.queue_declare("plain")
            not_stream = httpx.get(f"{base}/api/queues/%2F/plain/groups", auth=auth)
            assert not_stream.status_code == 400


def test_a_partitioned_queue_refuses_a_filtered_consumer(
    connection: BlockingConnection, name: str, cleanup: Cleanup
) -> None:
    connection.channel().queue_declare(cleanup.queue(name), arguments={"x-partitions": 2})
    channel = connection.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        channel.basic_consume(name, Deliveries(), arguments={"x-stream-filter": "a"})
    assert closed.value.reply_code == 406
    assert "a partitioned queue does not filter its consumers" in closed.value.reply_text
