"""Queue, exchange and consumer `x-` arguments: which are known, valid, compared, supported.

RabbitMQ validates the arguments it knows (type and range), compares only those when a
queue or exchange is declared again, and keeps unknown ones without interpreting them.
amqpd does the same, with one addition: a known argument whose behaviour amqpd does not
implement yet (today: quorum queues) is refused with 540 NOT_IMPLEMENTED rather than
accepted and ignored.

Synchronous and pure; imports amqpd.codec, amqpd.errors and broker.queue_settings only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from amqpd.broker.queue_settings import parse_age_ms
from amqpd.codec.fields import FieldTable, FieldValue, type_name, values_equal
from amqpd.errors import FeatureNotImplemented, PreconditionFailed

# A check returns None when the value is valid, else RabbitMQ's reason as it prints it.
Check = Callable[[FieldValue, FieldTable], str | None]


def _integer(value: FieldValue, _: FieldTable) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f'"expected integer, got {type_name(value)}"'
    return None


def _non_negative_integer(value: FieldValue, arguments: FieldTable) -> str | None:
    reason = _integer(value, arguments)
    if reason is None and isinstance(value, int) and value < 0:
        return f"{{value_negative,{value}}}"
    return reason


def _positive_integer(value: FieldValue, arguments: FieldTable) -> str | None:
    reason = _non_negative_integer(value, arguments)
    if reason is None and value == 0:
        return "{value_zero,0}"
    return reason


def _max_priority(value: FieldValue, arguments: FieldTable) -> str | None:
    reason = _non_negative_integer(value, arguments)
    if reason is None and isinstance(value, int) and value > 255:
        return f"{{max_value_exceeded,{value}}}"
    return reason


# x-partitions: a partition is a lane with its own log partition and owner, so the count
# is bounded like the other per-queue structures (a priority queue has at most 256 lanes).
PARTITIONS_MAX: Final = 1024


def _partitions(value: FieldValue, arguments: FieldTable) -> str | None:
    reason = _positive_integer(value, arguments)
    if reason is None and isinstance(value, int) and value > PARTITIONS_MAX:
        return f"{{max_value_exceeded,{value}}}"
    if reason is None and "x-max-priority" in arguments:
        # Both would split the queue into lanes, by different keys.
        return "x_partitions_and_x_max_priority_exclude_each_other"
    if reason is None and arguments.get("x-queue-type", "classic") != "classic":
        return "x_partitions_is_for_classic_queues_only"
    return reason


def _typed(expected: type) -> Check:
    def check(value: FieldValue, _: FieldTable) -> str | None:
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            return f"{{unacceptable_type,{type_name(value)}}}"
        return None

    return check


def _one_of(allowed: tuple[str, ...], reason: str) -> Check:
    """A string from `allowed`; `reason` is RabbitMQ's, with {value} for the value."""

    def check(value: FieldValue, _: FieldTable) -> str | None:
        if not isinstance(value, str):
            return f"{{unacceptable_type,{type_name(value)}}}"
        return None if value in allowed else reason.format(value=value)

    return check


def _retry_delays(value: FieldValue, _: FieldTable) -> str | None:
    if not isinstance(value, list):
        return f"{{unacceptable_type,{type_name(value)}}}"
    if not value:
        return "{empty_list}"
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int):
            return f'"expected a list of integers, got {type_name(item)} in it"'
        if item < 0:
            return f"{{value_negative,{item}}}"
    return None


def _retry_backoff(value: FieldValue, arguments: FieldTable) -> str | None:
    reason = _positive_integer(value, arguments)
    if reason is None and "x-retry-delays" in arguments:
        return "x_retry_delays_and_x_retry_backoff_ms_exclude_each_other"
    return reason


def _retry_backoff_max(value: FieldValue, arguments: FieldTable) -> str | None:
    reason = _positive_integer(value, arguments)
    if reason is None and "x-retry-backoff-ms" not in arguments:
        return "max_but_no_x_retry_backoff_ms_defined"
    return reason


def _max_age(value: FieldValue, _: FieldTable) -> str | None:
    if not isinstance(value, str):
        return f"{{unacceptable_type,{type_name(value)}}}"
    if parse_age_ms(value) is None:
        # RabbitMQ 3.10 fails with 541 INTERNAL_ERROR here; amqpd says what is wrong.
        return f"\"'{value}' is not a number followed by one of Y, M, D, h, m, s\""
    return None


def _stream_filter(value: FieldValue, _: FieldTable) -> str | None:
    """A filter value (string) or a non-empty array of them (RabbitMQ 3.13's shape)."""
    if isinstance(value, str):
        return None
    if not isinstance(value, list):
        return f"{{unacceptable_type,{type_name(value)}}}"
    if not value:
        return "{empty_list}"  # a filter that matches nothing would starve the consumer
    for item in value:
        if not isinstance(item, str):
            return f'"expected a list of strings, got {type_name(item)} in it"'
    return None


def _dead_letter_routing_key(value: FieldValue, arguments: FieldTable) -> str | None:
    if not isinstance(value, str):
        return f"{{unacceptable_type,{type_name(value)}}}"
    if "x-dead-letter-exchange" not in arguments:
        return "routing_key_but_no_dlx_defined"
    return None


# The queue arguments RabbitMQ 3.10 knows, in its order: validated on declare (with its
# reasons, verbatim) and compared on redeclare.
QUEUE_ARGUMENTS: Final[dict[str, Check]] = {
    "x-expires": _positive_integer,
    "x-message-ttl": _non_negative_integer,
    "x-dead-letter-exchange": _typed(str),
    "x-dead-letter-routing-key": _dead_letter_routing_key,
    "x-dead-letter-strategy": _one_of(("at-most-once", "at-least-once"), "invalid_dlx_strategy"),
    "x-max-length": _non_negative_integer,
    "x-max-length-bytes": _non_negative_integer,
    "x-max-in-memory-length": _non_negative_integer,
    "x-max-in-memory-bytes": _non_negative_integer,
    "x-max-priority": _max_priority,
    "x-overflow": _one_of(
        ("drop-head", "reject-publish", "reject-publish-dlx"), "invalid_overflow"
    ),
    "x-queue-mode": _one_of(("default", "lazy"), "\"unsupported queue mode '{value}'\""),
    "x-single-active-consumer": _typed(bool),
    "x-queue-type": _one_of(
        ("classic", "quorum", "stream"), "\"unsupported queue type '{value}'\""
    ),
    "x-quorum-initial-group-size": _positive_integer,
    "x-max-age": _max_age,
    "x-stream-max-segment-size-bytes": _non_negative_integer,
    "x-initial-cluster-size": _positive_integer,
    "x-queue-leader-locator": _one_of(("client-local", "balanced"), "invalid_queue_locator_arg"),
    "x-queue-master-locator": _one_of(
        ("min-masters", "client-local", "random"), "invalid_queue_locator_arg"
    ),
    # Quorum queues only in RabbitMQ 3.10; amqpd takes it on every queue.
    "x-delivery-limit": _non_negative_integer,
    "x-consumer-timeout": _positive_integer,  # RabbitMQ 3.12 and later
    # amqpd's own: consumed messages are kept this long for replay (x-stream-offset).
    "x-replay-max-age": _max_age,
    # amqpd's own: a returned message waits before it is ready again (retry with backoff).
    "x-retry-delays": _retry_delays,
    "x-retry-backoff-ms": _retry_backoff,
    "x-retry-backoff-max-ms": _retry_backoff_max,
    # amqpd's own: ordered per key, each partition with at most one active consumer.
    "x-partitions": _partitions,
}

# Known arguments that only quorum queues or streams take: RabbitMQ refuses them on a
# classic queue (406, with the queue type named as below).
NOT_FOR_CLASSIC_QUEUES: Final = frozenset(
    {
        "x-max-in-memory-length",
        "x-max-in-memory-bytes",
        "x-quorum-initial-group-size",
        "x-max-age",
        "x-stream-max-segment-size-bytes",
        "x-initial-cluster-size",
        "x-queue-leader-locator",
        "x-dead-letter-strategy",
    }
)

# The arguments a stream takes (RabbitMQ 3.10's, plus amqpd's own tag index needs none);
# any other known queue argument is refused on a stream (406, queue type named).
STREAM_ARGUMENTS: Final = frozenset(
    {
        "x-queue-type",
        "x-max-length-bytes",
        "x-max-age",
        "x-stream-max-segment-size-bytes",
        "x-initial-cluster-size",
        "x-queue-leader-locator",
    }
)

# Queue types amqpd serves today; quorum is refused until it exists.
SUPPORTED_QUEUE_TYPES: Final = frozenset({"classic", "stream"})

EXCHANGE_ARGUMENTS: Final[dict[str, Check]] = {"alternate-exchange": _typed(str)}

CONSUMER_ARGUMENTS: Final[dict[str, Check]] = {
    "x-priority": _integer,
    "x-cancel-on-ha-failover": _typed(bool),
    "x-consumer-timeout": _positive_integer,  # RabbitMQ 3.12 and later
    # RabbitMQ 3.13's stream filtering; amqpd filters consumers of classic queues by them
    # (filters.py). x-stream-match-unfiltered without a filter is accepted and means nothing.
    "x-stream-filter": _stream_filter,
    "x-stream-match-unfiltered": _typed(bool),
}


def _validate(
    arguments: FieldTable, known: Mapping[str, Check], what: str, name: str, vhost: str
) -> None:
    for key, check in known.items():
        if key not in arguments:
            continue
        reason = check(arguments[key], arguments)
        if reason is not None:
            raise PreconditionFailed(
                f"invalid arg '{key}' for {what} '{name}' in vhost '{vhost}': {reason}"
            )


def validate_queue_arguments(arguments: FieldTable, name: str, vhost: str) -> None:
    _validate(arguments, QUEUE_ARGUMENTS, "queue", name, vhost)
    if arguments.get("x-queue-type", "classic") == "classic":
        for key in arguments:
            if key in NOT_FOR_CLASSIC_QUEUES:
                raise PreconditionFailed(
                    f"invalid arg '{key}' for queue '{name}' in vhost '{vhost}' of queue type "
                    "rabbit_classic_queue"
                )
    queue_type = arguments.get("x-queue-type", "classic")
    if queue_type == "stream":
        for key in arguments:
            if key in QUEUE_ARGUMENTS and key not in STREAM_ARGUMENTS:
                raise PreconditionFailed(
                    f"invalid arg '{key}' for queue '{name}' in vhost '{vhost}' of queue type "
                    "rabbit_stream_queue"
                )
    if isinstance(queue_type, str) and queue_type not in SUPPORTED_QUEUE_TYPES:
        raise FeatureNotImplemented(
            f"queue type '{queue_type}' is not supported by this version of amqpd"
        )


def check_stream_properties(
    name: str, vhost: str, durable: bool, exclusive: bool, auto_delete: bool
) -> None:
    """A stream is durable, never exclusive or auto-delete (RabbitMQ's 406 texts)."""
    for flag, wrong in (
        ("non-durable", not durable),
        ("exclusive-owner", exclusive),
        ("auto-delete", auto_delete),
    ):
        if wrong:
            raise PreconditionFailed(
                f"invalid property '{flag}' for queue '{name}' in vhost '{vhost}'"
            )


def check_replay_properties(name: str, vhost: str, durable: bool, arguments: FieldTable) -> None:
    """x-replay-max-age keeps the queue's log: a durable, non-exclusive queue of one lane."""
    where = f"for queue '{name}' in vhost '{vhost}'"
    if not durable:
        raise PreconditionFailed(
            f"invalid arg 'x-replay-max-age' {where}: only a durable, non-exclusive queue "
            "keeps messages for replay"
        )
    for other in ("x-max-priority", "x-partitions"):
        if other in arguments:
            raise PreconditionFailed(
                f"invalid arg 'x-replay-max-age' {where}: it excludes '{other}'"
            )


def validate_exchange_arguments(arguments: FieldTable, name: str, vhost: str) -> None:
    _validate(arguments, EXCHANGE_ARGUMENTS, "exchange", name, vhost)


def validate_consumer_arguments(arguments: FieldTable, queue: str, vhost: str) -> None:
    _validate(arguments, CONSUMER_ARGUMENTS, "queue", queue, vhost)


def _described(value: FieldValue, present: bool) -> str:
    """One side of an inequivalence, as RabbitMQ prints an argument with its type."""
    if not present:
        return "none"
    return f"the value '{_format(value)}' of type '{type_name(value)}'"


def _format(value: FieldValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def check_equivalent_arguments(
    current: FieldTable,
    received: FieldTable,
    compared: Mapping[str, object],
    what: str,
    name: str,
    vhost: str,
) -> None:
    """406 if a compared argument differs between the existing entity and a redeclare."""
    for key in compared:
        in_current, in_received = key in current, key in received
        if not in_current and not in_received:
            continue
        if in_current and in_received:
            if values_equal(current[key], received[key]):
                continue
            # Both present: RabbitMQ prints the bare values.
            now, before = f"'{_format(received[key])}'", f"'{_format(current[key])}'"
        else:
            now = _described(received.get(key), in_received)
            before = _described(current.get(key), in_current)
        raise PreconditionFailed(
            f"inequivalent arg '{key}' for {what} '{name}' in vhost '{vhost}': "
            f"received {now} but current is {before}"
        )


def format_flag(value: bool) -> str:
    return "true" if value else "false"
