"""The topic exchange: binding keys are dot-separated words where `*` matches exactly one
word and `#` matches zero or more; words may be empty (`a..b` has three words), but the
empty key has none (as RabbitMQ splits it), so `*` does not match it and `#` does.

Bindings live in a trie of words; matching walks it once per routing key, remembering
(node, position) pairs it has visited so that patterns with many `#` stay linear.
Results are cached per routing key until the bindings change.

Synchronous and pure; imports broker.exchanges.base and broker.binding only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from amqpd.broker.binding import Binding, Destination
from amqpd.broker.exchanges.base import Exchange, count_in, count_out
from amqpd.broker.message import Message

ROUTE_CACHE_ENTRIES_MAX: Final = 4096


def words_of(key: str) -> list[str]:
    return key.split(".") if key else []


class _Node:
    __slots__ = ("children", "destinations")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.destinations: dict[Destination, int] = {}


class TopicExchange(Exchange):
    __slots__ = ("_cache", "_root")
    type_name = "topic"

    def _init_index(self) -> None:
        self._root = _Node()
        self._cache: dict[str, tuple[Destination, ...]] = {}

    def _index(self, binding: Binding) -> None:
        node = self._root
        for word in words_of(binding.routing_key):
            node = node.children.setdefault(word, _Node())
        count_in(node.destinations, binding.destination)
        self._cache.clear()

    def _unindex(self, binding: Binding) -> None:
        path = [self._root]
        words = words_of(binding.routing_key)
        for word in words:
            path.append(path[-1].children[word])
        count_out(path[-1].destinations, binding.destination)
        # Prune nodes left with neither bindings nor children.
        for depth in range(len(words), 0, -1):
            node = path[depth]
            if node.children or node.destinations:
                break
            del path[depth - 1].children[words[depth - 1]]
        self._cache.clear()

    def route(self, message: Message, routing_keys: Iterable[str]) -> Iterable[Destination]:
        found: dict[Destination, None] = {}
        for routing_key in routing_keys:
            cached = self._cache.get(routing_key)
            if cached is None:
                cached = tuple(self._match(words_of(routing_key)))
                if len(self._cache) >= ROUTE_CACHE_ENTRIES_MAX:
                    self._cache.clear()
                self._cache[routing_key] = cached
            for destination in cached:
                found[destination] = None
        return found.keys()

    def _match(self, words: list[str]) -> dict[Destination, None]:
        found: dict[Destination, None] = {}
        seen: set[tuple[int, int]] = set()
        word_count = len(words)
        stack: list[tuple[_Node, int]] = [(self._root, 0)]
        while stack:
            node, position = stack.pop()
            mark = (id(node), position)
            if mark in seen:
                continue
            seen.add(mark)
            hash_node = node.children.get("#")
            if hash_node is not None:
                # `#` swallows zero or more words: try it at every remaining position.
                for rest in range(position, word_count + 1):
                    stack.append((hash_node, rest))
            if position == word_count:
                for destination in node.destinations:
                    found[destination] = None
                continue
            child = node.children.get(words[position])
            if child is not None:
                stack.append((child, position + 1))
            star = node.children.get("*")
            if star is not None:
                stack.append((star, position + 1))
        return found
