"""What one user may do in one vhost, checked as RabbitMQ's access-control table says.

RabbitMQ's model: three regular expressions per user and vhost (configure, write, read),
each searched (not anchored) in a resource's name, an empty one matching nothing; topic
permissions that limit the routing keys a user may publish with (write) or bind with
(read) on a topic exchange; and user tags, of which `impersonator` matters here (it may
set any `user_id` on a message). The default exchange is checked under the name
`amq.default`. A refusal is 403 ACCESS_REFUSED with RabbitMQ's text.

Which permission each method needs, in the order RabbitMQ checks them:

| method | configure | write | read |
|---|---|---|---|
| exchange.declare (not passive) | exchange | alternate exchange | exchange, if it names one |
| exchange.delete | exchange | | |
| queue.declare (not passive) | queue | dead-letter exchange | queue, if it names one |
| queue.delete | queue | | |
| exchange.bind / unbind | | destination | source (and topic read) |
| queue.bind / unbind | | queue | exchange (and topic read) |
| basic.publish | | exchange (and topic write) | |
| basic.consume, basic.get, queue.purge | | | queue |

Passive declares check nothing. A permission changed by a reload applies to the next
method on channels already open: the connection's Access object is replaced.

Pure; imports amqpd.errors only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

from amqpd.errors import AccessRefused

CONFIGURE: Final = "configure"
WRITE: Final = "write"
READ: Final = "read"
DEFAULT_EXCHANGE_NAME: Final = "amq.default"
# Names remembered per permission before the memo starts again (bounds its memory).
MEMO_NAMES_MAX: Final = 4096
_MATCH_ALL: Final = frozenset({".*", "^.*", "^.*$", ".*$"})


class _Pattern:
    """One permission's expression, with the answers already worked out per name."""

    __slots__ = ("_memo", "_search", "allows_all")

    def __init__(self, source: str) -> None:
        # RabbitMQ reads an empty pattern as ^$: nothing (every name is non-empty).
        self.allows_all = source in _MATCH_ALL
        self._search = re.compile(source or "^$").search
        self._memo: dict[str, bool] = {}

    def allows(self, name: str) -> bool:
        if self.allows_all:
            return True
        memo = self._memo
        allowed = memo.get(name)
        if allowed is None:
            if len(memo) >= MEMO_NAMES_MAX:
                memo.clear()
            allowed = memo[name] = self._search(name) is not None
        return allowed


class Access:
    """A user's rights in one vhost. `kind` is "exchange" or "queue"."""

    __slots__ = (
        "_patterns",
        "_topics",
        "has_topics",
        "impersonator",
        "tags",
        "username",
        "vhost",
        "write_all",
    )

    def __init__(
        self,
        username: str,
        vhost: str,
        configure: str,
        write: str,
        read: str,
        *,
        topics: Mapping[str, tuple[str, str]] | None = None,
        tags: Iterable[str] = (),
    ) -> None:
        self.username = username
        self.vhost = vhost
        self.tags = frozenset(tags)
        self.impersonator = "impersonator" in self.tags
        self._patterns = {
            CONFIGURE: _Pattern(configure),
            WRITE: _Pattern(write),
            READ: _Pattern(read),
        }
        # Topic exchange name -> (write, read) patterns, variables expanded.
        self._topics = {
            exchange: (_Pattern(self._expand(write_)), _Pattern(self._expand(read_)))
            for exchange, (write_, read_) in (topics or {}).items()
        }
        # Read on every publish: most users may write everywhere and have no topic rules.
        self.write_all = self._patterns[WRITE].allows_all
        self.has_topics = bool(self._topics)

    @classmethod
    def full(cls, username: str, vhost: str, tags: Iterable[str] = ()) -> Access:
        """Everything allowed (the embedded default user, tests)."""
        return cls(username, vhost, ".*", ".*", ".*", tags=tags)

    def __repr__(self) -> str:
        return f"<Access {self.username!r} in {self.vhost!r}>"

    def _expand(self, pattern: str) -> str:
        return pattern.replace("{username}", self.username).replace("{vhost}", self.vhost)

    def allows(self, permission: str, name: str) -> bool:
        return self._patterns[permission].allows(name or DEFAULT_EXCHANGE_NAME)

    def check(self, permission: str, kind: str, name: str) -> None:
        """403 unless `permission` covers the resource."""
        if not self.allows(permission, name):
            raise AccessRefused(
                f"access to {kind} '{name or DEFAULT_EXCHANGE_NAME}' in vhost '{self.vhost}' "
                f"refused for user '{self.username}'"
            )

    def check_topic(self, permission: str, exchange: str, routing_key: str) -> None:
        """403 unless the user's topic permission on `exchange` (a topic exchange) admits
        `routing_key`; an exchange without a topic permission admits every key."""
        topics = self._topics
        if not topics:
            return
        patterns = topics.get(exchange)
        if patterns is None:
            return
        pattern = patterns[0] if permission == WRITE else patterns[1]
        if not pattern.allows(routing_key):
            raise AccessRefused(
                f"access to topic '{routing_key}' in exchange '{exchange}' in vhost "
                f"'{self.vhost}' refused for user '{self.username}'"
            )
