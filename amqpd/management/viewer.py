"""Who is asking, and what their tags let them see and do (RabbitMQ's management rules).

- management: the vhosts they have permissions in, and their own connections;
- policymaker: as management (policies are owned by the config files here);
- monitoring: every vhost, every connection and channel, node figures;
- administrator: everything, users, permissions and definitions included.

Pure; imports attrs, amqpd.auth and amqpd.config.
"""

from __future__ import annotations

from typing import Final

import attrs

from amqpd.auth.users import Authenticator
from amqpd.config.model import User

MANAGEMENT_TAGS: Final = frozenset({"management", "policymaker", "monitoring", "administrator"})


@attrs.frozen
class Viewer:
    name: str
    tags: frozenset[str]
    # The vhosts the user holds permissions in (whatever they allow).
    permitted_vhosts: frozenset[str]

    @classmethod
    def of(cls, user: User, authenticator: Authenticator, vhosts: tuple[str, ...]) -> Viewer:
        return cls(
            user.name,
            frozenset(user.tags),
            frozenset(name for name in vhosts if authenticator.grant(user.name, name)),
        )

    @property
    def may_manage(self) -> bool:
        """Any management tag at all: without one, the API refuses the login."""
        return bool(self.tags & MANAGEMENT_TAGS)

    @property
    def is_administrator(self) -> bool:
        return "administrator" in self.tags

    @property
    def is_monitor(self) -> bool:
        return self.is_administrator or "monitoring" in self.tags

    def sees_vhost(self, vhost: str) -> bool:
        return self.is_monitor or vhost in self.permitted_vhosts

    def sees_connection_of(self, username: str) -> bool:
        return self.is_monitor or username == self.name

    def may_close_connection_of(self, username: str) -> bool:
        return self.is_administrator or username == self.name
