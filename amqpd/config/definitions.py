"""A RabbitMQ definitions export (`rabbitmqctl export_definitions`), read into amqpd values.

Owns the reading of the JSON export and its merge into the ServerConfig: users (with
their password hashes and limits), vhosts (with their limits), permissions, topic
permissions and policies become tenancy values; exchanges, queues and bindings become
declarations that node.py makes in the broker at start. What amqpd cannot apply
(policy keys it has no equivalent for, quorum and stream queues, operator policies,
plugin parameters such as federation or shovel...) is kept as a `Problem` naming it,
never dropped silently. Malformed JSON, and entries that are not what an export holds,
are a ConfigError naming the file and the JSON path.

The shapes read are those of RabbitMQ 3.x: tags as a list or a comma-separated string,
vhost limits as the vhost's `limits` (pairs or a mapping) or as `vhost-limits`
parameters, user limits as a mapping.

Pure; imports json, re, attrs, config.model and config.load only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TypeAlias, TypeVar, Union

import attrs

from amqpd.config.load import ConfigError
from amqpd.config.model import (
    HASHING_ALGORITHMS,
    POLICY_APPLY_TO,
    POLICY_CHOICE_KEYS,
    POLICY_INTEGER_KEYS,
    POLICY_STRING_KEYS,
    Permission,
    Policy,
    ServerConfig,
    TopicPermission,
    User,
    UserLimits,
    Vhost,
    VhostLimits,
    check_references,
)

JsonValue: TypeAlias = Union[  # noqa: UP007 - a recursive alias needs the string form
    bool, int, float, str, list["JsonValue"], dict[str, "JsonValue"], None
]
Arguments: TypeAlias = dict[str, JsonValue]

# Top-level keys of an export: what each is read into, or why it is only noted.
_VERSION_KEYS: Final = ("rabbit_version", "rabbitmq_version", "product_name", "product_version")
_KEYS: Final = (
    *_VERSION_KEYS,
    "users",
    "vhosts",
    "permissions",
    "topic_permissions",
    "parameters",
    "global_parameters",
    "policies",
    "queues",
    "exchanges",
    "bindings",
)
# Global parameters that describe the RabbitMQ cluster the export came from; meaningless
# to amqpd, so noted rather than reported.
_CLUSTER_PARAMETERS: Final = ("cluster_name", "internal_cluster_id")
_POLICY_KEYS: Final = frozenset([*POLICY_INTEGER_KEYS, *POLICY_CHOICE_KEYS, *POLICY_STRING_KEYS])
# RabbitMQ's limit names and the amqpd fields they fill; -1 (or a negative) means none.
_VHOST_LIMITS: Final = {"max-connections": "connections_max", "max-queues": "queues_max"}
_USER_LIMITS: Final = {"max-connections": "connections_max", "max-channels": "channels_max"}
SUPPORTED_QUEUE_TYPES: Final = ("classic",)
_PATTERNS: Final = ("configure", "write", "read")
_INDEX: Final = re.compile(r"^[a-z_]+\[\d+\]: ")

T = TypeVar("T")


@attrs.frozen
class Problem:
    """Something in the export that amqpd did not apply (or applied only in part), named
    so an operator can find it: `subject` says which entry, `reason` why."""

    subject: str
    reason: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.reason}"


@attrs.frozen
class ExchangeDeclaration:
    vhost: str
    name: str
    type: str
    durable: bool = True
    auto_delete: bool = False
    internal: bool = False
    arguments: Arguments = attrs.field(factory=dict)

    @property
    def subject(self) -> str:
        return f"exchange '{self.name}' in vhost '{self.vhost}'"


@attrs.frozen
class QueueDeclaration:
    vhost: str
    name: str
    durable: bool = True
    auto_delete: bool = False
    arguments: Arguments = attrs.field(factory=dict)

    @property
    def subject(self) -> str:
        return f"queue '{self.name}' in vhost '{self.vhost}'"


@attrs.frozen
class BindingDeclaration:
    vhost: str
    source: str
    destination: str
    destination_type: str  # "queue" or "exchange"
    routing_key: str = ""
    arguments: Arguments = attrs.field(factory=dict)

    @property
    def subject(self) -> str:
        return (
            f"binding from exchange '{self.source}' to {self.destination_type} "
            f"'{self.destination}' (routing key '{self.routing_key}') in vhost '{self.vhost}'"
        )


@attrs.frozen
class Definitions:
    """What an export holds that amqpd applies, and what it does not (`problems`).
    `notes` are things read and deliberately ignored (the source cluster's name)."""

    source: str
    version: str = ""
    vhosts: tuple[Vhost, ...] = ()
    users: tuple[User, ...] = ()
    permissions: tuple[Permission, ...] = ()
    topic_permissions: tuple[TopicPermission, ...] = ()
    policies: tuple[Policy, ...] = ()
    exchanges: tuple[ExchangeDeclaration, ...] = ()
    queues: tuple[QueueDeclaration, ...] = ()
    bindings: tuple[BindingDeclaration, ...] = ()
    problems: tuple[Problem, ...] = ()
    notes: tuple[str, ...] = ()


@attrs.frozen
class DefinitionsReport:
    """What was applied from an export, by kind, and every problem by name. node.py makes
    one at start (with the declarations the broker refused); `amqpd check-config` prints
    the same."""

    source: str
    applied: dict[str, int]
    problems: tuple[Problem, ...]

    def summary(self) -> str:
        counts = ", ".join(f"{count} {kind}" for kind, count in self.applied.items())
        return f"definitions {self.source}: {counts} applied; {len(self.problems)} not applied"


def definitions_report(
    definitions: Definitions, refused: Sequence[Problem] = ()
) -> DefinitionsReport:
    """The report on `definitions`, with the declarations the broker `refused` (by
    subject) taken off the counts of what was applied."""
    refused_subjects = {problem.subject for problem in refused}

    def declared(
        entries: Iterable[ExchangeDeclaration | QueueDeclaration | BindingDeclaration],
    ) -> int:
        return sum(entry.subject not in refused_subjects for entry in entries)

    return DefinitionsReport(
        definitions.source,
        {
            "users": len(definitions.users),
            "vhosts": len(definitions.vhosts),
            "permissions": len(definitions.permissions),
            "topic permissions": len(definitions.topic_permissions),
            "policies": len(definitions.policies),
            "exchanges": declared(definitions.exchanges),
            "queues": declared(definitions.queues),
            "bindings": declared(definitions.bindings),
        },
        (*definitions.problems, *refused),
    )


# ------------------------------------------------------------------ reading


def read_definitions(path: Path) -> Definitions:
    """The definitions export in `path`; a ConfigError names the file and the JSON path."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the definitions file: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text: {error.reason}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"{path}: not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"
        ) from None
    return parse_definitions(data, str(path))


class _Invalid(Exception):
    """An entry that is not what an export holds, at a JSON path."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")


def parse_definitions(data: object, source: str) -> Definitions:
    """Already-parsed JSON of an export; `source` names the file in errors and reports."""
    try:
        return _Reader(source).read(data)
    except _Invalid as error:
        raise ConfigError(f"{source}: {error}") from None


def _kind(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )


def _object(value: object, path: str) -> dict[str, JsonValue]:
    if not isinstance(value, dict):
        raise _Invalid(path, f"expected an object, got {_kind(value)}")
    return value


def _array(value: object, path: str) -> list[JsonValue]:
    if not isinstance(value, list):
        raise _Invalid(path, f"expected an array, got {_kind(value)}")
    return value


def _string(entry: Mapping[str, JsonValue], key: str, path: str, default: str | None = None) -> str:
    value = entry.get(key, default)
    if not isinstance(value, str):
        if key not in entry:
            raise _Invalid(path, f"'{key}' is missing")
        raise _Invalid(f"{path}.{key}", f"expected a string, got {_kind(value)}")
    return value


def _bool(entry: Mapping[str, JsonValue], key: str, path: str, default: bool) -> bool:
    value = entry.get(key, default)
    if type(value) is not bool:
        raise _Invalid(f"{path}.{key}", f"expected true or false, got {_kind(value)}")
    return value


def _integer(value: JsonValue, path: str) -> int:
    if type(value) is not int:
        raise _Invalid(path, f"expected an integer, got {_kind(value)}")
    return value


def _arguments(entry: Mapping[str, JsonValue], path: str) -> Arguments:
    value = entry.get("arguments", {})
    return dict(_object({} if value is None else value, f"{path}.arguments"))


def _pairs(value: JsonValue, path: str) -> dict[str, JsonValue]:
    """A mapping written as an object or as RabbitMQ's [[key, value], ...] pairs."""
    if isinstance(value, dict):
        return value
    pairs: dict[str, JsonValue] = {}
    for index, pair in enumerate(_array(value, path)):
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
            raise _Invalid(f"{path}[{index}]", "expected a [name, value] pair")
        pairs[pair[0]] = pair[1]
    return pairs


def _limits(
    values: Mapping[str, JsonValue], names: Mapping[str, str], path: str
) -> tuple[dict[str, int | None], list[str]]:
    """amqpd's limit fields from RabbitMQ's limit names, and the names it has not."""
    limits: dict[str, int | None] = {}
    unknown: list[str] = []
    for name, value in values.items():
        if name not in names:
            unknown.append(name)
            continue
        count = _integer(value, f"{path}.{name}")
        limits[names[name]] = count if count >= 0 else None
    return limits, unknown


def _build(kind: type[T], path: str, **fields: Any) -> T:
    """A config value, its validation failure becoming an error at `path`."""
    try:
        return kind(**fields)
    except (TypeError, ValueError) as error:
        reason = error.args[0] if error.args and isinstance(error.args[0], str) else str(error)
        raise _Invalid(path, reason) from None


def _tags(value: JsonValue, path: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):  # RabbitMQ before 3.9: "administrator,monitoring"
        return tuple(tag.strip() for tag in value.split(",") if tag.strip())
    tags = _array(value, path)
    for index, tag in enumerate(tags):
        if not isinstance(tag, str):
            raise _Invalid(f"{path}[{index}]", f"expected a string, got {_kind(tag)}")
    return tuple(tag for tag in tags if isinstance(tag, str))


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[Problem] = []
        self.notes: list[str] = []
        self.skipped_users: set[str] = set()

    def report(self, subject: str, reason: str) -> None:
        self.problems.append(Problem(subject, reason))

    def section(self, data: Mapping[str, JsonValue], key: str) -> list[dict[str, JsonValue]]:
        value = data.get(key)
        if value is None:
            return []
        return [_object(entry, f"{key}[{index}]") for index, entry in enumerate(_array(value, key))]

    def read(self, data: object) -> Definitions:
        top = _object(data, "(top level)")
        for key in top:
            if key not in _KEYS:
                self.report(f"top-level key '{key}'", "not a definitions key amqpd knows")
        version = top.get("rabbitmq_version", top.get("rabbit_version", ""))
        vhost_limits = self.parameters(top)
        self.global_parameters(top)
        vhosts = self.vhosts(top, vhost_limits)
        users = self.users(top)
        permissions = self.permissions(top)
        topic_permissions = self.topic_permissions(top)
        policies = self.policies(top)
        exchanges = self.exchanges(top)
        queues, skipped_queues = self.queues(top)
        bindings = self.bindings(top, skipped_queues)
        return Definitions(
            source=self.source,
            version=version if isinstance(version, str) else "",
            vhosts=vhosts,
            users=users,
            permissions=permissions,
            topic_permissions=topic_permissions,
            policies=policies,
            exchanges=exchanges,
            queues=queues,
            bindings=bindings,
            problems=tuple(self.problems),
            notes=tuple(self.notes),
        )

    # --------------------------------------------------------------- tenancy

    def parameters(self, top: Mapping[str, JsonValue]) -> dict[str, dict[str, JsonValue]]:
        """Vhost limits by vhost; every other parameter is a problem (operator policies,
        federation upstreams, shovels...: amqpd has none of them)."""
        limits: dict[str, dict[str, JsonValue]] = {}
        for index, entry in enumerate(self.section(top, "parameters")):
            path = f"parameters[{index}]"
            component = _string(entry, "component", path)
            name = _string(entry, "name", path)
            vhost = _string(entry, "vhost", path)
            if component == "vhost-limits":
                limits.setdefault(vhost, {}).update(_object(entry.get("value"), f"{path}.value"))
            elif component == "operator_policy":
                self.report(
                    f"operator policy '{name}' in vhost '{vhost}'",
                    "not applied: amqpd has no operator policies",
                )
            else:
                self.report(
                    f"parameter '{name}' ({component}) in vhost '{vhost}'",
                    f"not applied: amqpd has no {component} (a RabbitMQ plugin's parameter)",
                )
        return limits

    def global_parameters(self, top: Mapping[str, JsonValue]) -> None:
        for index, entry in enumerate(self.section(top, "global_parameters")):
            name = _string(entry, "name", f"global_parameters[{index}]")
            if name in _CLUSTER_PARAMETERS:
                self.notes.append(f"global parameter '{name}' ignored: it names the source cluster")
            else:
                self.report(f"global parameter '{name}'", "not applied: amqpd has no equivalent")

    def vhosts(
        self, top: Mapping[str, JsonValue], parameter_limits: Mapping[str, Mapping[str, JsonValue]]
    ) -> tuple[Vhost, ...]:
        vhosts: list[Vhost] = []
        seen: set[str] = set()
        for index, entry in enumerate(self.section(top, "vhosts")):
            path = f"vhosts[{index}]"
            name = _string(entry, "name", path)
            if name in seen:
                raise _Invalid(path, f"vhost '{name}' is listed twice")
            seen.add(name)
            subject = f"vhost '{name}'"
            metadata = _object(entry.get("metadata") or {}, f"{path}.metadata")
            description = metadata.get("description", entry.get("description", ""))
            if not isinstance(description, str):
                raise _Invalid(f"{path}.metadata.description", "expected a string")
            tags = _tags(metadata.get("tags", entry.get("tags")), f"{path}.metadata.tags")
            if tags:
                self.report(subject, f"tags {', '.join(tags)} not applied: amqpd has no vhost tags")
            queue_type = metadata.get("default_queue_type", entry.get("default_queue_type"))
            if queue_type not in (None, "undefined", *SUPPORTED_QUEUE_TYPES):
                self.report(
                    subject,
                    f"default queue type '{queue_type}' not applied: queues declared there "
                    "without x-queue-type are classic queues",
                )
            raw = dict(_pairs(entry.get("limits") or [], f"{path}.limits"))
            raw.update(parameter_limits.get(name, {}))
            limits, unknown = _limits(raw, _VHOST_LIMITS, f"{path}.limits")
            for limit in unknown:
                self.report(subject, f"limit '{limit}' not applied: amqpd has no such limit")
            vhosts.append(
                _build(
                    Vhost,
                    path,
                    name=name,
                    description=description,
                    limits=_build(VhostLimits, f"{path}.limits", **limits),
                )
            )
        for vhost in parameter_limits:
            if vhost not in seen:
                raise _Invalid("parameters", f"vhost-limits for vhost '{vhost}', not in 'vhosts'")
        return tuple(vhosts)

    def users(self, top: Mapping[str, JsonValue]) -> tuple[User, ...]:
        users: list[User] = []
        seen: set[str] = set()
        for index, entry in enumerate(self.section(top, "users")):
            path = f"users[{index}]"
            name = _string(entry, "name", path)
            if name in seen:
                raise _Invalid(path, f"user '{name}' is listed twice")
            seen.add(name)
            password_hash = _string(entry, "password_hash", path, default="")
            algorithm = entry.get("hashing_algorithm")
            if algorithm is not None and not isinstance(algorithm, str):
                raise _Invalid(f"{path}.hashing_algorithm", "expected a string")
            if algorithm is not None and algorithm not in HASHING_ALGORITHMS:
                self.report(
                    f"user '{name}'",
                    f"not applied: its password is hashed with '{algorithm}', which amqpd "
                    "cannot check",
                )
                self.skipped_users.add(name)
                continue
            limits, unknown = _limits(
                _pairs(entry.get("limits") or {}, f"{path}.limits"), _USER_LIMITS, f"{path}.limits"
            )
            for limit in unknown:
                self.report(
                    f"user '{name}'", f"limit '{limit}' not applied: amqpd has no such limit"
                )
            users.append(
                _build(
                    User,
                    path,
                    name=name,
                    password_hash=password_hash,
                    hashing_algorithm=algorithm if password_hash else None,
                    tags=_tags(entry.get("tags"), f"{path}.tags"),
                    limits=_build(UserLimits, f"{path}.limits", **limits),
                )
            )
        return tuple(users)

    def permissions(self, top: Mapping[str, JsonValue]) -> tuple[Permission, ...]:
        permissions: list[Permission] = []
        for index, entry in enumerate(self.section(top, "permissions")):
            path = f"permissions[{index}]"
            fields = {key: _string(entry, key, path) for key in ("user", "vhost", *_PATTERNS)}
            if self.user_skipped(
                f"the permissions of user '{fields['user']}' in vhost '{fields['vhost']}'",
                fields["user"],
            ):
                continue
            permissions.append(_build(Permission, path, **fields))
        return tuple(permissions)

    def topic_permissions(self, top: Mapping[str, JsonValue]) -> tuple[TopicPermission, ...]:
        permissions: list[TopicPermission] = []
        for index, entry in enumerate(self.section(top, "topic_permissions")):
            path = f"topic_permissions[{index}]"
            keys = ("user", "vhost", "exchange", "write", "read")
            fields = {key: _string(entry, key, path) for key in keys}
            subject = (
                f"the topic permission of user '{fields['user']}' on exchange "
                f"'{fields['exchange']}' in vhost '{fields['vhost']}'"
            )
            if self.user_skipped(subject, fields["user"]):
                continue
            permissions.append(_build(TopicPermission, path, **fields))
        return tuple(permissions)

    def user_skipped(self, subject: str, user: str) -> bool:
        if user not in self.skipped_users:
            return False
        self.report(subject, f"not applied: user '{user}' is not")
        return True

    def policies(self, top: Mapping[str, JsonValue]) -> tuple[Policy, ...]:
        policies: list[Policy] = []
        for index, entry in enumerate(self.section(top, "policies")):
            path = f"policies[{index}]"
            name = _string(entry, "name", path)
            vhost = _string(entry, "vhost", path)
            subject = f"policy '{name}' in vhost '{vhost}'"
            apply_to = _string(entry, "apply-to", path, default="all")
            if apply_to not in POLICY_APPLY_TO:
                self.report(subject, f"not applied: amqpd has no apply-to '{apply_to}'")
                continue
            definition = _pairs(entry.get("definition"), f"{path}.definition")
            supported = {key: value for key, value in definition.items() if key in _POLICY_KEYS}
            unsupported = sorted(key for key in definition if key not in _POLICY_KEYS)
            if not supported:
                self.report(
                    subject,
                    f"not applied: amqpd has none of its keys ({', '.join(unsupported)})",
                )
                continue
            if unsupported:
                keys = "key" if len(unsupported) == 1 else "keys"
                self.report(
                    subject,
                    f"{keys} {', '.join(unsupported)} not applied (amqpd has no equivalent); "
                    f"applied with {', '.join(sorted(supported))}",
                )
            policies.append(
                _build(
                    Policy,
                    path,
                    name=name,
                    vhost=vhost,
                    pattern=_string(entry, "pattern", path),
                    definition=supported,
                    apply_to=apply_to,
                    priority=_integer(entry.get("priority", 0), f"{path}.priority"),
                )
            )
        return tuple(policies)

    # -------------------------------------------------------------- entities

    def exchanges(self, top: Mapping[str, JsonValue]) -> tuple[ExchangeDeclaration, ...]:
        exchanges: list[ExchangeDeclaration] = []
        for index, entry in enumerate(self.section(top, "exchanges")):
            path = f"exchanges[{index}]"
            exchanges.append(
                ExchangeDeclaration(
                    vhost=_string(entry, "vhost", path),
                    name=_string(entry, "name", path),
                    type=_string(entry, "type", path),
                    durable=_bool(entry, "durable", path, True),
                    auto_delete=_bool(entry, "auto_delete", path, False),
                    internal=_bool(entry, "internal", path, False),
                    arguments=_arguments(entry, path),
                )
            )
        return tuple(exchanges)

    def queues(
        self, top: Mapping[str, JsonValue]
    ) -> tuple[tuple[QueueDeclaration, ...], dict[tuple[str, str], str]]:
        """The queues amqpd can declare, and why each other one is not (by vhost, name)."""
        queues: list[QueueDeclaration] = []
        skipped: dict[tuple[str, str], str] = {}
        for index, entry in enumerate(self.section(top, "queues")):
            path = f"queues[{index}]"
            queue = QueueDeclaration(
                vhost=_string(entry, "vhost", path),
                name=_string(entry, "name", path),
                durable=_bool(entry, "durable", path, True),
                auto_delete=_bool(entry, "auto_delete", path, False),
                arguments=_arguments(entry, path),
            )
            queue_type = entry.get("type") or queue.arguments.get("x-queue-type") or "classic"
            if queue_type not in SUPPORTED_QUEUE_TYPES:
                reason = f"a {queue_type} queue; amqpd has classic queues only"
                self.report(queue.subject, f"not declared: {reason}")
                skipped[(queue.vhost, queue.name)] = reason
                continue
            queues.append(queue)
        return tuple(queues), skipped

    def bindings(
        self, top: Mapping[str, JsonValue], skipped_queues: Mapping[tuple[str, str], str]
    ) -> tuple[BindingDeclaration, ...]:
        bindings: list[BindingDeclaration] = []
        for index, entry in enumerate(self.section(top, "bindings")):
            path = f"bindings[{index}]"
            destination_type = _string(entry, "destination_type", path)
            if destination_type not in ("queue", "exchange"):
                raise _Invalid(
                    f"{path}.destination_type", f"expected queue or exchange: {destination_type!r}"
                )
            binding = BindingDeclaration(
                vhost=_string(entry, "vhost", path),
                source=_string(entry, "source", path),
                destination=_string(entry, "destination", path),
                destination_type=destination_type,
                routing_key=_string(entry, "routing_key", path, default=""),
                arguments=_arguments(entry, path),
            )
            skipped = skipped_queues.get((binding.vhost, binding.destination))
            if destination_type == "queue" and skipped is not None:
                self.report(binding.subject, f"not declared: its queue is {skipped}")
                continue
            bindings.append(binding)
        return tuple(bindings)


# ------------------------------------------------------------------ merging


def merge_definitions(
    config: ServerConfig, definitions: Definitions, config_source: str
) -> ServerConfig:
    """The config with the definitions' tenancy joined to its own.

    A user, vhost, permission (user and vhost), topic permission or policy defined in
    both is a ConfigError naming both files. The embedded default (the user guest and
    the vhost "/", as when no config file sets them) gives way: the definitions' users
    replace that default user, as RabbitMQ creates no default user when it imports
    definitions at boot, and "/" stays unless the definitions define it."""
    source = definitions.source

    def clash(key: str, what: str) -> ConfigError:
        return ConfigError(
            f"{source}: {key}: {what}: also defined in {config_source}; define it in one place"
        )

    default = ServerConfig()
    users = config.users
    if definitions.users and users == default.users:
        users = ()
    vhosts = config.vhosts
    defined_vhosts = {vhost.name for vhost in definitions.vhosts}
    if vhosts == default.vhosts:
        vhosts = tuple(vhost for vhost in vhosts if vhost.name not in defined_vhosts)
    for vhost in vhosts:
        if vhost.name in defined_vhosts:
            raise clash("vhosts", f"vhost '{vhost.name}'")
    user_names = {user.name for user in users}
    for user in definitions.users:
        if user.name in user_names:
            raise clash("users", f"user '{user.name}'")
    granted = {(user.name, vhost) for user in users for vhost in user.vhosts}
    granted |= {(permission.user, permission.vhost) for permission in config.permissions}
    for permission in definitions.permissions:
        if (permission.user, permission.vhost) in granted:
            raise clash(
                "permissions",
                f"the permissions of user '{permission.user}' in vhost '{permission.vhost}'",
            )
    topics = {(topic.user, topic.vhost, topic.exchange) for topic in config.topic_permissions}
    for topic in definitions.topic_permissions:
        if (topic.user, topic.vhost, topic.exchange) in topics:
            raise clash(
                "topic_permissions",
                f"the topic permission of user '{topic.user}' on exchange '{topic.exchange}' "
                f"in vhost '{topic.vhost}'",
            )
    policies = {(policy.vhost, policy.name) for policy in config.policies}
    for policy in definitions.policies:
        if (policy.vhost, policy.name) in policies:
            raise clash("policies", f"policy '{policy.name}' in vhost '{policy.vhost}'")
    try:
        merged = attrs.evolve(
            config,
            vhosts=(*vhosts, *definitions.vhosts),
            users=(*users, *definitions.users),
            permissions=(*config.permissions, *definitions.permissions),
            topic_permissions=(*config.topic_permissions, *definitions.topic_permissions),
            policies=(*config.policies, *definitions.policies),
        )
        # The config may name the export's users and vhosts (and the other way round):
        # names are checked once both are in.
        check_references(merged)
        return merged
    except (TypeError, ValueError) as error:  # e.g. a permission for a user defined nowhere
        reason = _INDEX.sub("", str(error))  # its index is into the merged tuple: meaningless
        raise ConfigError(f"{source} with {config_source}: {reason}") from None
