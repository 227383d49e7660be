"""erlang:phash2 and the consistent-hash exchange's jump hash, against values recorded from
RabbitMQ 3.10.8 on OTP 25 (tools/record_erlang_hash_vectors.py wrote
erlang_hash_vectors.json): binaries of every length class, atoms, small and big integers,
floats, tuples, lists, header values as RabbitMQ's parser tags them, and buckets for 303
keys over ten ring sizes up to 10^9."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amqpd.broker.exchanges.consistent_hash import erlang_field
from amqpd.broker.exchanges.erlang_hash import (
    Atom,
    Term,
    atom_hash,
    jump_consistent_hash,
    make_hash2,
    phash2,
)
from amqpd.codec.fields import decode_table

VECTORS = json.loads((Path(__file__).parent / "erlang_hash_vectors.json").read_text())


def term_of(encoded: Any) -> Term:
    if isinstance(encoded, dict):
        if "atom" in encoded:
            return Atom(encoded["atom"])
        if "binary" in encoded:
            return bytes.fromhex(encoded["binary"])
        return tuple(term_of(item) for item in encoded["tuple"])
    if isinstance(encoded, list):
        return [term_of(item) for item in encoded]
    assert isinstance(encoded, (int, float))
    return encoded


@pytest.mark.parametrize(("encoded", "expected"), VECTORS["phash2"], ids=repr)
def test_phash2_equals_the_value_erlang_gave(encoded: Any, expected: int) -> None:
    assert phash2(term_of(encoded)) == expected


def test_the_vectors_cover_the_term_kinds_routing_hashes() -> None:
    kinds = {type(term_of(encoded)).__name__ for encoded, _ in VECTORS["phash2"]}
    assert kinds >= {"bytes", "Atom", "int", "float", "tuple", "list"}
    assert len(VECTORS["phash2"]) > 300
    assert phash2(b"abc") == 98228475  # as `erlang:phash2(<<"abc">>).` prints it


def test_header_values_hash_as_rabbitmq_parses_them() -> None:
    raw = bytes.fromhex(VECTORS["header_table"])
    table, _ = decode_table(struct.pack(">I", len(raw)) + raw, 0)
    recorded = VECTORS["header_phash2"]
    assert set(recorded) == set(table)
    assert {key: phash2(erlang_field(value)) for key, value in table.items()} == recorded


def test_jump_hash_picks_the_bucket_rand_exs1024_gave() -> None:
    sizes = VECTORS["jump"]["sizes"]
    for key, buckets in VECTORS["jump"]["cases"]:
        assert [jump_consistent_hash(key, size) for size in sizes] == buckets, key


def test_a_bool_is_not_a_term() -> None:
    with pytest.raises(TypeError):
        make_hash2(True)


def test_atom_hash_is_hashpjw() -> None:
    assert atom_hash("") == 0
    assert atom_hash("a") == ord("a")
    assert phash2(Atom("undefined")) == atom_hash("undefined") & ((1 << 27) - 1)


@given(st.binary(max_size=100))
def test_phash2_is_in_its_27_bit_range(data: bytes) -> None:
    assert 0 <= phash2(data) < 1 << 27


@given(st.integers(0, (1 << 27) - 1), st.integers(2, 5000))
def test_growing_the_ring_by_one_moves_a_key_only_to_the_new_bucket(key: int, size: int) -> None:
    """The jump hash's defining property, which any slip in the generator would break."""
    before, after = jump_consistent_hash(key, size), jump_consistent_hash(key, size + 1)
    assert 0 <= before < size
    assert after in (before, size)


@given(st.integers(0, (1 << 27) - 1))
def test_one_bucket_takes_every_key(key: int) -> None:
    assert jump_consistent_hash(key, 1) == 0
