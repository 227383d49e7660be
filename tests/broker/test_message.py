"""A message's stored form (a log record's payload) reads back to the same message, whether
or not the message read before it shares its route."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from amqpd.broker.message import Message
from amqpd.codec.properties import BasicProperties, encode_content_header

short_strings = st.text(max_size=40).filter(lambda text: len(text.encode()) <= 255)


def message(exchange: str, routing_key: str, body: bytes, delivery_mode: int) -> Message:
    header = encode_content_header(len(body), BasicProperties(delivery_mode=delivery_mode))
    return Message(exchange, routing_key, header, body)


def same(a: Message, b: Message) -> bool:
    return (a.exchange, a.routing_key, a.header, a.body, a.flags) == (
        b.exchange,
        b.routing_key,
        b.header,
        b.body,
        b.flags,
    )


@given(
    routes=st.lists(st.tuples(short_strings, short_strings), min_size=1, max_size=6),
    bodies=st.lists(st.binary(max_size=64), min_size=1, max_size=12),
    delivery_mode=st.sampled_from([1, 2]),
)
def test_stored_messages_read_back_the_same_in_sequence(
    routes: list[tuple[str, str]], bodies: list[bytes], delivery_mode: int
) -> None:
    originals = [
        message(*routes[index % len(routes)], body, delivery_mode)
        for index, body in enumerate(bodies)
    ]
    previous: Message | None = None
    for original in originals:
        read = Message.from_stored(original.stored_form(), previous)
        assert same(read, original)
        assert read.persistent == (delivery_mode == 2)
        assert read.encoded_route == original.stored_form()[: len(read.encoded_route or b"")]
        assert Message.stored_flags(original.stored_form()) == original.flags
        previous = read


def test_a_routing_key_that_extends_the_previous_one_is_decoded_afresh() -> None:
    first = Message.from_stored(message("ex", "key", b"1", 2).stored_form())
    # Its bytes after "key" could pass for the header length that follows a route.
    longer = message("ex", "key\x00\x00\x00\x05", b"2", 2)
    read = Message.from_stored(longer.stored_form(), first)
    assert same(read, longer)
