"""What a queue's `x-` arguments make it do, read once when the queue is declared.

The arguments were validated before (arguments.py); here they become typed settings the
queue consults on its hot paths without looking anything up. Units are in the names.

Synchronous and pure; imports amqpd.codec only.
"""

from __future__ import annotations

import re
from typing import Final

import attrs

from amqpd.codec.fields import FieldTable, FieldValue

_AGE: Final = re.compile(r"([0-9]+)([YMDhms])")
_AGE_UNIT_MS: Final = {
    "Y": 365 * 86_400_000,
    "M": 30 * 86_400_000,
    "D": 86_400_000,
    "h": 3_600_000,
    "m": 60_000,
    "s": 1000,
}
OVERFLOW_DROP_HEAD: Final = "drop-head"
OVERFLOW_REJECT_PUBLISH: Final = "reject-publish"
OVERFLOW_REJECT_PUBLISH_DLX: Final = "reject-publish-dlx"


def _int(value: FieldValue) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return int(value)


def _ints(value: FieldValue) -> tuple[int, ...] | None:
    if not isinstance(value, list) or not value:
        return None
    return tuple(item for item in value if isinstance(item, int) and not isinstance(item, bool))


def parse_age_ms(value: str) -> int | None:
    """x-max-age, x-replay-max-age and offset intervals: a number and a unit (Y, M, D, h,
    m, s); None if the text is not one."""
    match = _AGE.fullmatch(value)
    if match is None:
        return None
    return int(match.group(1)) * _AGE_UNIT_MS[match.group(2)]


def _age_ms(value: FieldValue) -> int | None:
    return parse_age_ms(value) if isinstance(value, str) else None


def _str(value: FieldValue) -> str | None:
    return value if isinstance(value, str) else None


@attrs.frozen
class QueueSettings:
    message_ttl_ms: int | None = None  # x-message-ttl
    expires_ms: int | None = None  # x-expires: deleted after this long unused
    max_length: int | None = None  # x-max-length: ready messages
    max_length_bytes: int | None = None  # x-max-length-bytes: bodies of ready messages
    overflow: str = OVERFLOW_DROP_HEAD  # x-overflow
    dead_letter_exchange: str | None = None  # x-dead-letter-exchange
    dead_letter_routing_key: str | None = None  # x-dead-letter-routing-key
    delivery_limit: int | None = None  # x-delivery-limit: returns before dead-lettering
    max_priority: int | None = None  # x-max-priority
    single_active_consumer: bool = False  # x-single-active-consumer
    consumer_timeout_ms: int | None = None  # x-consumer-timeout
    # How long a nacked or rejected message waits before it is ready again, by attempt:
    # x-retry-delays (the last one repeats), or x-retry-backoff-ms doubling up to
    # x-retry-backoff-max-ms.
    retry_delays_ms: tuple[int, ...] | None = None
    retry_backoff_ms: int | None = None
    retry_backoff_max_ms: int | None = None
    # x-replay-max-age: consumed messages are kept this long for replay consumers.
    replay_max_age_ms: int | None = None
    partitions: int | None = None  # x-partitions: ordered per key (partitions.py)

    @classmethod
    def from_arguments(cls, arguments: FieldTable) -> QueueSettings:
        get = arguments.get
        max_priority = _int(get("x-max-priority"))
        return cls(
            message_ttl_ms=_int(get("x-message-ttl")),
            expires_ms=_int(get("x-expires")),
            max_length=_int(get("x-max-length")),
            max_length_bytes=_int(get("x-max-length-bytes")),
            overflow=_str(get("x-overflow")) or OVERFLOW_DROP_HEAD,
            dead_letter_exchange=_str(get("x-dead-letter-exchange")),
            dead_letter_routing_key=_str(get("x-dead-letter-routing-key")),
            delivery_limit=_int(get("x-delivery-limit")),
            max_priority=max_priority or None,  # 0 means no priorities, as RabbitMQ
            single_active_consumer=get("x-single-active-consumer") is True,
            consumer_timeout_ms=_int(get("x-consumer-timeout")),
            retry_delays_ms=_ints(get("x-retry-delays")),
            retry_backoff_ms=_int(get("x-retry-backoff-ms")),
            retry_backoff_max_ms=_int(get("x-retry-backoff-max-ms")),
            replay_max_age_ms=_age_ms(get("x-replay-max-age")),
            partitions=_int(get("x-partitions")),
        )

    @property
    def retries_later(self) -> bool:
        """Whether a nacked or rejected message waits before it is ready again."""
        return self.retry_delays_ms is not None or self.retry_backoff_ms is not None

    @property
    def counts_deliveries(self) -> bool:
        """Whether redeliveries carry x-delivery-count (and restarts keep the count)."""
        return self.delivery_limit is not None or self.retries_later

    def retry_delay_ms(self, attempt: int) -> int:
        """The wait before the `attempt`-th return (1 for the first) is ready again."""
        delays = self.retry_delays_ms
        if delays is not None:
            return delays[min(attempt, len(delays)) - 1]
        base = self.retry_backoff_ms
        if base is None:
            return 0
        delay = base << min(max(attempt - 1, 0), 62)
        cap = self.retry_backoff_max_ms
        return delay if cap is None else min(delay, cap)

    @property
    def limited(self) -> bool:
        """Whether enqueue must look at TTL or length limits at all."""
        return (
            self.message_ttl_ms is not None
            or self.max_length is not None
            or self.max_length_bytes is not None
        )

    @property
    def rejects_publish(self) -> bool:
        return self.overflow != OVERFLOW_DROP_HEAD
