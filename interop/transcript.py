"""A scenario's transcript: what a client saw, in order, as plain comparable values.

Scenarios record events (a method's outcome, a message as delivered, an error with its
reply code and text). Values that differ between any two runs, and between brokers, for
reasons no user relies on are normalised: generated names (`amq.gen-…`), the run's unique
prefix, and times (x-death `time`, timestamps). Everything else is compared as is.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pika
import pika.exceptions

_GENERATED = re.compile(r"amq\.gen-[A-Za-z0-9_-]+")


class Transcript:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix  # unique per run: names in the broker never collide
        self.events: list[Any] = []

    def name(self, base: str) -> str:
        """A queue or exchange name unique to this run."""
        return f"{self.prefix}.{base}"

    def add(self, *event: Any) -> None:
        self.events.append(normalise(event, self.prefix))

    def message(self, label: str, method: Any, properties: Any, body: bytes) -> None:
        """A delivery or basic.get-ok, with what a user reads off it."""
        fields: dict[str, Any] = {"body": body, "redelivered": method.redelivered}
        for key in ("exchange", "routing_key", "message_count"):
            if hasattr(method, key):
                fields[key] = getattr(method, key)
        for key in ("priority", "expiration", "delivery_mode", "headers"):
            value = getattr(properties, key, None)
            if value is not None:
                fields[key] = value
        self.add(label, fields)

    @contextmanager
    def expect_error(self, label: str) -> Iterator[None]:
        """Record the channel or connection error the body raises (or that none came)."""
        try:
            yield
        except pika.exceptions.ChannelClosedByBroker as error:
            self.add(label, "channel.close", error.reply_code, error.reply_text)
        except pika.exceptions.ConnectionClosedByBroker as error:
            self.add(label, "connection.close", error.reply_code, error.reply_text)
        else:
            self.add(label, "no error")


def normalise(value: Any, prefix: str) -> Any:
    if isinstance(value, str):
        return _GENERATED.sub("amq.gen-*", value.replace(prefix + ".", "~"))
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (datetime.datetime, datetime.date)):
        return "<time>"
    if isinstance(value, dict):
        return {
            normalise(key, prefix): "<time>" if key == "time" else normalise(item, prefix)
            for key, item in sorted(value.items())
        }
    if isinstance(value, (list, tuple)):
        return [normalise(item, prefix) for item in value]
    return value
