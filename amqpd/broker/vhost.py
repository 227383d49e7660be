"""A virtual host: its exchanges, queues and bindings, and routing between them.

Owns declare / delete / bind / unbind with RabbitMQ's rules and reply texts: the default
exchange and the reserved `amq.` prefix (403), missing entities (404), exclusive queues of
another connection (405), inequivalent redeclares and if-unused / if-empty (406), unknown
exchange types (503). Routing follows exchange-to-exchange bindings and alternate
exchanges, visiting each exchange once, and adds CC/BCC routing keys; a message with a
delay that reaches a delayed-message exchange stops there, held until its time, and is
routed on from that exchange when released. Holds the vhost's policies and gives each
queue and exchange the one that applies to it.

Synchronous and pure; imports amqpd.codec, amqpd.errors and broker.* only.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Final

import attrs

from amqpd.broker.access import CONFIGURE, READ, WRITE, Access
from amqpd.broker.arguments import (
    EXCHANGE_ARGUMENTS,
    QUEUE_ARGUMENTS,
    check_equivalent_arguments,
    check_replay_properties,
    check_stream_properties,
    format_flag,
    validate_exchange_arguments,
    validate_queue_arguments,
)
from amqpd.broker.binding import Binding, Destination
from amqpd.broker.dead_letter import dead_lettered, is_cycle
from amqpd.broker.definitions import (
    BindingDefinition,
    Definition,
    ExchangeDefinition,
    QueueDefinition,
)
from amqpd.broker.definitions import encode as encode_definition
from amqpd.broker.delayed import DelayedMessages, delayed_key
from amqpd.broker.durability import DeferredAcks, DurabilityWatch
from amqpd.broker.exchanges import EXCHANGE_TYPES, DirectExchange, Exchange
from amqpd.broker.exchanges.delayed import DelayedExchange, release_at_ms
from amqpd.broker.memory import MemoryBudget
from amqpd.broker.message import Message
from amqpd.broker.partitions import PartitionedQueue
from amqpd.broker.policies import Policy, choose
from amqpd.broker.ports import DefinitionLog, MessageLog, QueueStorage
from amqpd.broker.queue import Durability, Queue, Refused, lane_count_for, queue_key
from amqpd.broker.replay import ReplayQueue
from amqpd.broker.stats import MessageCounts
from amqpd.broker.stream import StreamQueue, stream_logs
from amqpd.broker.timers import Timers
from amqpd.codec.fields import FieldTable
from amqpd.codec.properties import FLAG_HEADERS
from amqpd.errors import (
    AccessRefused,
    CommandInvalid,
    FeatureNotImplemented,
    NotFound,
    PreconditionFailed,
    ResourceLocked,
)

DEFAULT_EXCHANGE: Final = ""
# The longest delay a delayed-message exchange accepts unless configured otherwise.
DELAY_MS_MAX_DEFAULT: Final = 365 * 86_400_000
# Where a routed message goes: a queue, or a delayed exchange's held messages.
Target = Queue | DelayedMessages
RESERVED_PREFIX: Final = "amq."
NAME_BYTES_MAX: Final = 255
_RESTORE_ORDER: Final = {ExchangeDefinition: 0, QueueDefinition: 1, BindingDefinition: 2}
STANDARD_EXCHANGES: Final = (
    ("amq.direct", "direct"),
    ("amq.fanout", "fanout"),
    ("amq.topic", "topic"),
    ("amq.headers", "headers"),
    ("amq.match", "headers"),
)


def server_generated_name(prefix: str) -> str:
    """`amq.gen-` or `amq.ctag-` plus 22 url-safe characters, as RabbitMQ makes them."""
    return prefix + base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()


def _durable_binding(source: Exchange, destination: Destination) -> bool:
    """RabbitMQ keeps a binding across restarts when both of its ends are durable."""
    return source.durable and bool(getattr(destination, "durable", False))


def default_exchange_refused() -> AccessRefused:
    return AccessRefused("operation not permitted on the default exchange")


@attrs.define
class BrokerServices:
    """What every vhost of a broker shares: where queues keep their logs, the definitions
    journal, the memory budget, and the registry of who waits for durability."""

    storage: QueueStorage | None = None
    definitions: DefinitionLog | None = None
    memory: MemoryBudget = attrs.field(factory=lambda: MemoryBudget(1 << 62, 1 << 62))
    durability: DurabilityWatch = attrs.field(factory=DurabilityWatch)
    timers: Timers = attrs.field(factory=Timers)
    # Server-wide consumer timeout (None: none); x-consumer-timeout overrides it.
    consumer_timeout_ms: int | None = None
    # The longest x-delay (or x-deliver-at-ms from now) a delayed exchange accepts.
    delay_ms_max: int = DELAY_MS_MAX_DEFAULT
    deferred_acks: DeferredAcks = attrs.field(
        default=attrs.Factory(lambda self: DeferredAcks(self.durability), takes_self=True)
    )
    # The last ticket the definitions journal gave out: a reply to a method that changed a
    # durable definition waits until the journal's durable_ticket reaches it.
    definitions_ticket: int = 0

    def definitions_durable(self, ticket: int) -> bool:
        journal = self.definitions
        return journal is None or journal.durable_ticket >= ticket


class VirtualHost:
    def __init__(self, name: str, services: BrokerServices | None = None) -> None:
        self.name = name
        self.services = services or BrokerServices()
        self.durability = self.services.durability
        self.exchanges: dict[str, Exchange] = {}
        self.queues: dict[str, Queue] = {}
        self.policies: tuple[Policy, ...] = ()
        # RabbitMQ's max-queues vhost limit: declaring one more is refused (406).
        self.queues_max: int | None = None
        self._restoring = False  # replaying stored definitions: nothing to write back
        # What deleted queues and closed channels counted, so totals never fall (apart:
        # both count `publish`, a channel what it received, a queue what it enqueued).
        self.retired_queue_counts = MessageCounts()
        self.retired_channel_counts = MessageCounts()
        # Only the default exchange's name and type matter; routing to it is by queue name.
        self.default_exchange = DirectExchange(DEFAULT_EXCHANGE, name, durable=True)
        self.exchanges[DEFAULT_EXCHANGE] = self.default_exchange
        for exchange_name, type_name in STANDARD_EXCHANGES:
            self.exchanges[exchange_name] = EXCHANGE_TYPES[type_name](
                exchange_name, name, durable=True
            )

    def __repr__(self) -> str:
        return f"<VirtualHost {self.name!r}>"

    def set_policies(self, policies: Iterable[Policy]) -> None:
        """Replace the policies; every queue and exchange follows the one now its own."""
        self.policies = tuple(policies)
        now_ms = self.services.timers.clock_ms()
        for exchange in self.exchanges.values():
            exchange.policy = choose(self.policies, "exchange", exchange.name)
        for queue in list(self.queues.values()):
            policy = choose(self.policies, "queue", queue.name)
            if policy is not queue.policy:
                queue.apply_policy(policy, now_ms)

    # ------------------------------------------------------------ exchanges

    def exchange(self, name: str) -> Exchange:
        exchange = self.exchanges.get(name)
        if exchange is None:
            raise NotFound(f"no exchange '{name}' in vhost '{self.name}'")
        return exchange

    def declare_exchange(
        self,
        name: str,
        type_name: str,
        *,
        passive: bool = False,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: FieldTable | None = None,
        access: Access | None = None,
    ) -> Exchange:
        """Declare (or find, if passive) an exchange; `access` checks the user's rights as
        RabbitMQ does: configure on the exchange, and for a new one naming an alternate
        exchange, read on it and write on the alternate."""
        arguments = arguments or {}
        if name == DEFAULT_EXCHANGE:
            raise default_exchange_refused()
        existing = self.exchanges.get(name)
        if passive:
            if existing is None:
                raise NotFound(f"no exchange '{name}' in vhost '{self.name}'")
            return existing
        cls = EXCHANGE_TYPES.get(type_name)
        if cls is None:
            # RabbitMQ says "invalid" only for names that happen to be Erlang atoms.
            raise CommandInvalid(f"unknown exchange type '{type_name}'")
        if access is not None:
            access.check(CONFIGURE, "exchange", name)
        if existing is not None:
            self._check_exchange_equivalence(
                existing, type_name, durable, auto_delete, internal, arguments
            )
            return existing
        if name.startswith(RESERVED_PREFIX):
            raise AccessRefused(
                f"exchange name '{name}' contains reserved prefix '{RESERVED_PREFIX}*'"
            )
        validate_exchange_arguments(arguments, name, self.name)
        cls.validate_arguments(arguments)
        alternate = arguments.get("alternate-exchange")
        if access is not None and isinstance(alternate, str):
            access.check(READ, "exchange", name)
            access.check(WRITE, "exchange", alternate)
        return self._add_exchange(cls, name, durable, auto_delete, internal, arguments)

    def _add_exchange(
        self,
        cls: type[Exchange],
        name: str,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
        recovered: Sequence[MessageLog] | None = None,
    ) -> Exchange:
        exchange = cls(
            name,
            self.name,
            durable=durable,
            auto_delete=auto_delete,
            internal=internal,
            arguments=arguments,
        )
        exchange.policy = choose(self.policies, "exchange", name)
        if isinstance(exchange, DelayedExchange):
            services = self.services
            exchange.pending = DelayedMessages(
                exchange,
                release=self._release_delayed,
                timers=services.timers,
                deferred_acks=services.deferred_acks,
                delay_ms_max=services.delay_ms_max,
                storage=services.storage,
                recovered=recovered[0] if recovered else None,
            )
        self.exchanges[name] = exchange
        if durable:
            self._persist(
                ExchangeDefinition(
                    self.name, name, cls.type_name, durable, auto_delete, internal, arguments
                )
            )
        return exchange

    def _check_exchange_equivalence(
        self,
        existing: Exchange,
        type_name: str,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    ) -> None:
        where = f"for exchange '{existing.name}' in vhost '{self.name}'"
        if existing.type_name != type_name:
            raise PreconditionFailed(
                f"inequivalent arg 'type' {where}: received '{type_name}' but current is "
                f"'{existing.type_name}'"
            )
        for flag, received, current in (
            ("durable", durable, existing.durable),
            ("auto_delete", auto_delete, existing.auto_delete),
            ("internal", internal, existing.internal),
        ):
            if received != current:
                raise PreconditionFailed(
                    f"inequivalent arg '{flag}' {where}: received '{format_flag(received)}' "
                    f"but current is '{format_flag(current)}'"
                )
        compared: dict[str, object] = dict(EXCHANGE_ARGUMENTS)
        if isinstance(existing, DelayedExchange):
            compared["x-delayed-type"] = None
        check_equivalent_arguments(
            existing.arguments, arguments, compared, "exchange", existing.name, self.name
        )

    def delete_exchange(
        self, name: str, *, if_unused: bool = False, access: Access | None = None
    ) -> None:
        if name == DEFAULT_EXCHANGE:
            raise default_exchange_refused()
        if name.startswith(RESERVED_PREFIX):
            raise AccessRefused(
                f"deletion of system exchange '{name}' in vhost '{self.name}' not allowed"
            )
        if access is not None:
            access.check(CONFIGURE, "exchange", name)
        exchange = self.exchanges.get(name)
        if exchange is None:
            return  # deleting what is not there succeeds, as RabbitMQ does
        if if_unused and exchange.bindings:
            raise PreconditionFailed(f"exchange '{name}' in vhost '{self.name}' in use")
        self._remove_exchange(exchange)

    def _remove_exchange(self, exchange: Exchange) -> None:
        del self.exchanges[exchange.name]
        for binding in list(exchange.bindings.values()):
            self._drop_binding(exchange, binding)
        self._remove_bindings_to(exchange)
        if isinstance(exchange, DelayedExchange) and exchange.pending is not None:
            exchange.pending.discard()
        if exchange.durable:
            self._forget(ExchangeDefinition(self.name, exchange.name, "", True, False, False, {}))

    # --------------------------------------------------------------- queues

    def queue(self, name: str, owner: object) -> Queue:
        """The queue called `name`, if this connection may use it (404, 405)."""
        queue = self.queues.get(name)
        if queue is None:
            raise NotFound(f"no queue '{name}' in vhost '{self.name}'")
        self.check_exclusive_access(queue, owner)
        return queue

    def check_exclusive_access(self, queue: Queue, owner: object) -> None:
        if queue.exclusive_owner is not None and queue.exclusive_owner is not owner:
            raise self._locked(queue)

    def _locked(self, queue: Queue) -> ResourceLocked:
        return ResourceLocked(
            f"cannot obtain exclusive access to locked queue '{queue.name}' in vhost "
            f"'{self.name}'. It could be originally declared on another connection or the "
            "exclusive property value does not match that of the original declaration."
        )

    def declare_queue(
        self,
        name: str,
        *,
        owner: object,
        passive: bool = False,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: FieldTable | None = None,
        access: Access | None = None,
    ) -> Queue:
        """Declare (or find, if passive) a queue; `access` checks the user's rights as
        RabbitMQ does: configure on the queue, and for a new one naming a dead-letter
        exchange, read on the queue and write on that exchange."""
        arguments = arguments or {}
        if passive:
            if not name:
                raise NotFound(f"no queue '{name}' in vhost '{self.name}'")
            queue = self.queue(name, owner)
            queue.used(self.services.timers.clock_ms())  # as RabbitMQ: x-expires restarts
            return queue
        if not name:
            name = server_generated_name("amq.gen-")
        elif name.startswith(RESERVED_PREFIX) and name not in self.queues:
            raise AccessRefused(
                f"queue name '{name}' contains reserved prefix '{RESERVED_PREFIX}*'"
            )
        if access is not None:
            access.check(CONFIGURE, "queue", name)
        existing = self.queues.get(name)
        if existing is not None:
            # A redeclare must match exclusivity exactly (405 either way, as RabbitMQ).
            if existing.exclusive_owner is not (owner if exclusive else None):
                raise self._locked(existing)
            self._check_queue_equivalence(existing, durable, auto_delete, arguments)
            existing.used(self.services.timers.clock_ms())
            return existing
        limit = self.queues_max
        if limit is not None and len(self.queues) >= limit:
            raise PreconditionFailed(
                f"cannot declare queue '{name}': queue limit in vhost '{self.name}' "
                f"({limit}) is reached"
            )
        validate_queue_arguments(arguments, name, self.name)
        dead_letter_exchange = arguments.get("x-dead-letter-exchange")
        if access is not None and isinstance(dead_letter_exchange, str):
            access.check(READ, "queue", name)
            access.check(WRITE, "exchange", dead_letter_exchange)
        if arguments.get("x-queue-type") == "stream":
            check_stream_properties(name, self.name, durable, exclusive, auto_delete)
        if "x-replay-max-age" in arguments:
            check_replay_properties(name, self.name, durable and not exclusive, arguments)
        # Exclusive queues never outlive their connection, so never a restart either.
        return self._add_queue(
            name, durable and not exclusive, exclusive, owner, auto_delete, arguments
        )

    def _add_queue(
        self,
        name: str,
        durable: bool,
        exclusive: bool,
        owner: object,
        auto_delete: bool,
        arguments: FieldTable,
        logs: Sequence[MessageLog] | None = None,
        recovered_log: Callable[[str], Sequence[MessageLog] | None] | None = None,
    ) -> Queue:
        services = self.services
        queue: Queue
        if arguments.get("x-queue-type") == "stream":
            if services.storage is None:
                raise FeatureNotImplemented("stream queues need the store")
            log, groups_log = stream_logs(services.storage, self.name, name, recovered_log)
            queue = StreamQueue(
                name,
                self.name,
                arguments=arguments,
                storage=services.storage,
                log=log,
                groups_log=groups_log,
                memory=services.memory,
                timers=services.timers,
                policy=choose(self.policies, "queue", name),
            )
            return self._register_queue(queue)
        replayed = "x-replay-max-age" in arguments
        if durable and logs is None and services.storage is not None:
            logs = services.storage.create_log(
                queue_key(self.name, name),
                durable=True,
                partitions=lane_count_for(arguments),
                keep_acked=replayed,
            )
        # A partitioned queue is a Queue with its own dispatch (partitions.py); replay
        # excludes partitions (check_replay_properties).
        queue_type: type[Queue] = Queue
        if "x-partitions" in arguments:
            queue_type = PartitionedQueue
        elif replayed and logs is not None:
            queue_type = ReplayQueue
        queue = queue_type(
            name,
            self.name,
            durable=durable,
            exclusive_owner=owner if exclusive else None,
            auto_delete=auto_delete,
            arguments=arguments,
            memory=services.memory,
            storage=services.storage,
            logs=logs,
            timers=services.timers,
            policy=choose(self.policies, "queue", name),
        )
        return self._register_queue(queue)

    def _register_queue(self, queue: Queue) -> Queue:
        services = self.services
        queue.on_unused = self._delete_unused
        queue.dead_letter = self._dead_letter
        queue.ack_when_durable = services.deferred_acks.ack_when_durable
        self.queues[queue.name] = queue
        if queue.durable:
            self._persist(
                QueueDefinition(self.name, queue.name, queue.auto_delete, queue.arguments)
            )
        return queue

    def _check_queue_equivalence(
        self, existing: Queue, durable: bool, auto_delete: bool, arguments: FieldTable
    ) -> None:
        where = f"for queue '{existing.name}' in vhost '{self.name}'"
        flags = [("auto_delete", auto_delete, existing.auto_delete)]
        if not existing.exclusive:  # an exclusive queue's durable flag means nothing
            flags.insert(0, ("durable", durable, existing.durable))
        for flag, received, current in flags:
            if received != current:
                raise PreconditionFailed(
                    f"inequivalent arg '{flag}' {where}: received '{format_flag(received)}' "
                    f"but current is '{format_flag(current)}'"
                )
        check_equivalent_arguments(
            existing.arguments, arguments, QUEUE_ARGUMENTS, "queue", existing.name, self.name
        )

    def delete_queue(self, queue: Queue, *, if_unused: bool = False, if_empty: bool = False) -> int:
        """Delete a queue; returns the ready messages it held. Consumers are cancelled."""
        if if_unused and queue.consumers:
            raise PreconditionFailed(f"queue '{queue.name}' in vhost '{self.name}' in use")
        if if_empty and queue.message_count:
            raise PreconditionFailed(f"queue '{queue.name}' in vhost '{self.name}' not empty")
        if queue.deleted:
            return 0
        message_count = queue.message_count
        queue.deleted = True
        del self.queues[queue.name]
        self.retired_queue_counts.add(queue.counts)
        for consumer in queue.every_consumer():
            consumer.channel.cancel_by_broker(consumer)
        queue.purge()
        self._remove_bindings_to(queue)
        queue.close_storage()
        if queue.durable:
            self._forget(QueueDefinition(self.name, queue.name, False, {}))
        return message_count

    def _delete_unused(self, queue: Queue) -> None:
        self.delete_queue(queue)

    # ------------------------------------------------------------- bindings

    def _binding_source(self, name: str) -> Exchange:
        if name == DEFAULT_EXCHANGE:
            raise default_exchange_refused()
        return self.exchange(name)

    def bind(
        self, source_name: str, destination: Destination, routing_key: str, arguments: FieldTable
    ) -> None:
        source = self._binding_source(source_name)
        source.validate_binding(routing_key, arguments)
        binding = Binding(source.name, destination, routing_key, arguments)
        if source.add_binding(binding) and _durable_binding(source, destination):
            self._persist(self._binding_definition(binding))

    def unbind(
        self, source_name: str, destination: Destination, routing_key: str, arguments: FieldTable
    ) -> None:
        source = self._binding_source(source_name)
        binding = source.bindings.get(Binding(source.name, destination, routing_key, arguments).key)
        if binding is not None:
            self._drop_binding(source, binding)
            self._after_binding_removed(source)

    def bind_exchange(
        self, source_name: str, destination_name: str, routing_key: str, arguments: FieldTable
    ) -> None:
        self.bind(source_name, self._binding_source(destination_name), routing_key, arguments)

    def unbind_exchange(
        self, source_name: str, destination_name: str, routing_key: str, arguments: FieldTable
    ) -> None:
        if destination_name == DEFAULT_EXCHANGE:
            raise default_exchange_refused()
        destination = self.exchanges.get(destination_name)
        if destination is not None:
            self.unbind(source_name, destination, routing_key, arguments)

    def _after_binding_removed(self, source: Exchange) -> None:
        if source.auto_delete and not source.bindings and source.name in self.exchanges:
            self._remove_exchange(source)

    def _remove_bindings_to(self, destination: Destination) -> None:
        for source in list(self.exchanges.values()):
            bindings = source.bindings_to(destination)
            for binding in bindings:
                self._drop_binding(source, binding)
            if bindings:
                self._after_binding_removed(source)

    def _drop_binding(self, source: Exchange, binding: Binding) -> None:
        source.remove_binding(binding.key)
        if _durable_binding(source, binding.destination):
            self._forget(self._binding_definition(binding))

    def _binding_definition(self, binding: Binding) -> BindingDefinition:
        return BindingDefinition(
            self.name,
            binding.source,
            binding.destination.kind,
            binding.destination.name,
            binding.routing_key,
            binding.arguments,
        )

    # ---------------------------------------------------------- persistence

    def _persist(self, definition: Definition) -> None:
        journal = self.services.definitions
        if journal is not None and not self._restoring:
            self.services.definitions_ticket = journal.put(
                definition.key, encode_definition(definition)
            )

    def _forget(self, definition: Definition) -> None:
        journal = self.services.definitions
        if journal is not None:
            self.services.definitions_ticket = journal.delete(definition.key)

    def restore(
        self,
        definitions: Iterable[Definition],
        recovered_log: Callable[[str], Sequence[MessageLog] | None],
    ) -> list[str]:
        """Rebuild durable exchanges, queues (with their recovered logs) and bindings.

        Returns a description of every definition that could not be restored.
        """
        skipped: list[str] = []
        ordered = sorted(definitions, key=lambda d: _RESTORE_ORDER[type(d)])
        self._restoring = True
        try:
            for definition in ordered:
                problem = self._restore_one(definition, recovered_log)
                if problem:
                    skipped.append(problem)
        finally:
            self._restoring = False
        return skipped

    def _restore_one(
        self, definition: Definition, recovered_log: Callable[[str], Sequence[MessageLog] | None]
    ) -> str | None:
        if isinstance(definition, ExchangeDefinition):
            cls = EXCHANGE_TYPES.get(definition.type_name)
            if cls is None:
                return f"exchange '{definition.name}': unknown type '{definition.type_name}'"
            if definition.name not in self.exchanges:
                recovered = None
                if cls is DelayedExchange:
                    recovered = recovered_log(delayed_key(self.name, definition.name))
                try:
                    self._add_exchange(
                        cls,
                        definition.name,
                        True,
                        definition.auto_delete,
                        definition.internal,
                        definition.arguments,
                        recovered,
                    )
                except PreconditionFailed as error:
                    return f"exchange '{definition.name}': {error}"
            return None
        if isinstance(definition, QueueDefinition):
            logs = recovered_log(queue_key(self.name, definition.name))
            if logs is not None:
                expected = lane_count_for(definition.arguments)
                if len(logs) != expected:
                    return (
                        f"queue '{definition.name}': its log has {len(logs)} partition(s), "
                        f"its arguments call for {expected}"
                    )
            self._add_queue(
                definition.name,
                True,
                False,
                None,
                definition.auto_delete,
                definition.arguments,
                logs,
                recovered_log,
            )
            return None
        source = self.exchanges.get(definition.source)
        destination: Destination | None = (
            self.queues.get(definition.destination)
            if definition.destination_kind == "queue"
            else self.exchanges.get(definition.destination)
        )
        if source is None or destination is None:
            return (
                f"binding from '{definition.source}' to {definition.destination_kind} "
                f"'{definition.destination}': one end no longer exists"
            )
        source.add_binding(
            Binding(source.name, destination, definition.routing_key, definition.arguments)
        )
        return None

    def bindings(self) -> Iterator[Binding]:
        for exchange in self.exchanges.values():
            yield from exchange.bindings.values()

    # -------------------------------------------------------- dead-lettering

    def _dead_letter(
        self, queue: Queue, message: Message, reason: str, now_ms: int
    ) -> list[Durability]:
        """Publish what `queue` dead-letters to its dead-letter exchange; returns what the
        copies wait on to be durable. A missing exchange drops it, as RabbitMQ does."""
        settings = queue.settings
        exchange_name = settings.dead_letter_exchange
        if exchange_name is None:
            return []
        exchange = self.exchanges.get(exchange_name)
        if exchange is None:
            return []
        copy = dead_lettered(
            message, queue.name, reason, now_ms, exchange_name, settings.dead_letter_routing_key
        )
        try:
            routed = self.route(exchange, copy, now_ms)
        except PreconditionFailed:  # a bad x-delay for a delayed exchange: no delay then
            routed = self.route(exchange, copy, now_ms, delaying=False)
        targets = [
            target
            for target in routed
            if not (isinstance(target, Queue) and is_cycle(copy, target.name))
        ]
        # A target that refuses its copy (reject-publish) just does not get it.
        waits, _ = self.enqueue(targets, copy, now_ms)
        return waits

    def enqueue(
        self, queues: Sequence[Target], message: Message, now_ms: int
    ) -> tuple[list[Durability], bool]:
        """Put `message` on every queue (without BCC, as RabbitMQ delivers it); returns
        what must become durable before it is safe, and whether a queue refused it."""
        held = message  # a delayed exchange keeps BCC: it routes the message when released
        if message.flags & FLAG_HEADERS and message.has_bcc():
            message = message.without_bcc()
        waits: list[Durability] = []
        refused = False
        for queue in queues:
            wait = queue.enqueue(held if type(queue) is DelayedMessages else message, now_ms)
            if wait is not None:
                if isinstance(wait, Refused):
                    refused = True
                else:
                    waits.append(wait)
        return waits, refused

    # -------------------------------------------------------------- routing

    def route(
        self,
        exchange: Exchange,
        message: Message,
        now_ms: int | None = None,
        *,
        delaying: bool = True,
    ) -> Sequence[Target]:
        """The queues a message published to `exchange` reaches (each once), and the
        delayed exchanges that hold it (none when not `delaying`: routed as if released)."""
        routing_keys: Sequence[str] = (message.routing_key,)
        if message.flags & FLAG_HEADERS:
            cc, bcc = message.sender_selected_keys()
            if cc or bcc:
                routing_keys = [message.routing_key, *cc, *bcc]
        if exchange is self.default_exchange:
            queues = self.queues
            if len(routing_keys) == 1:
                queue = queues.get(message.routing_key)
                return (queue,) if queue is not None else ()
            found: dict[Queue, None] = {}
            for key in routing_keys:
                queue = queues.get(key)
                if queue is not None:
                    found[queue] = None
            return tuple(found)
        if now_ms is None:
            now_ms = self.services.timers.recent_ms
        return self._route_through_exchanges(exchange, message, routing_keys, now_ms, delaying)

    def _route_through_exchanges(
        self,
        exchange: Exchange,
        message: Message,
        routing_keys: Sequence[str],
        now_ms: int,
        delaying: bool,
    ) -> list[Target]:
        found: dict[Target, None] = {}
        visited: set[str] = set()
        pending = [exchange]
        while pending:
            current = pending.pop()
            if current.name in visited:
                continue
            visited.add(current.name)
            if delaying and isinstance(current, DelayedExchange):
                held = current.pending
                if held is not None and release_at_ms(message, now_ms, held.delay_ms_max):
                    found[held] = None
                    continue
            destinations = list(current.route(message, routing_keys))
            if not destinations:
                alternate = current.alternate_exchange
                if alternate is not None and alternate in self.exchanges:
                    pending.append(self.exchanges[alternate])
                continue
            for destination in destinations:
                if isinstance(destination, Queue):
                    found[destination] = None
                elif isinstance(destination, Exchange):
                    pending.append(destination)
        return list(found)

    def _release_delayed(
        self, exchange: DelayedExchange, message: Message, now_ms: int
    ) -> list[Durability]:
        """Route a held message whose time has come from its exchange, as bound now."""
        if self.exchanges.get(exchange.name) is not exchange:
            return []
        targets = self.route(exchange, message, now_ms, delaying=False)
        waits, _ = self.enqueue(targets, message, now_ms)
        return waits

    def unroutable_when_released(
        self, exchange: Exchange, message: Message, targets: Sequence[Target], now_ms: int
    ) -> bool:
        """Whether a message that only delayed exchanges hold would route nowhere if it
        were released now (a mandatory publish is returned then, rather than held)."""
        return all(isinstance(target, DelayedMessages) for target in targets) and not self.route(
            exchange, message, now_ms, delaying=False
        )

    def delayed_exchanges(self) -> Iterator[DelayedExchange]:
        for exchange in self.exchanges.values():
            if isinstance(exchange, DelayedExchange):
                yield exchange
