"""Erlang's `erlang:phash2/1` and the jump consistent hash RabbitMQ's consistent-hash
exchange computes with it, bit for bit, so that amqpd picks the queue RabbitMQ picks.

Terms are Python values: `bytes` is a binary, `int` an integer (small or big), `float` a
float, `tuple` a tuple, `list` a proper list and `Atom` an atom (ASCII names only: the
atoms RabbitMQ hashes here are field type names, `true`, `false` and `undefined`).

phash2 is OTP's make_hash2 (Bob Jenkins' mix over 32-bit words) masked to 27 bits; its
values are stable across OTP releases. The jump hash seeds `rand`'s exs1024 (xorshift1024*,
in OTP's list form) with the key and draws `rand:uniform_s` floats, as the plugin does.
Verified against RabbitMQ 3.10 on OTP 25 by tests with recorded values.

Pure functions; imports nothing from amqpd.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final, TypeAlias, Union

_M32: Final = 0xFFFFFFFF
_M64: Final = 0xFFFFFFFFFFFFFFFF
_PHASH2_RANGE_MASK: Final = (1 << 27) - 1

# The golden ratio and its multiples mod 2^32, as make_hash2 mixes them with each type.
_HCONST: Final = 0x9E3779B9
_HCONST_2: Final = 0x3C6EF372
_HCONST_3: Final = 0xDAA66D2B
_HCONST_4: Final = 0x78DDE6E4
_HCONST_9: Final = 0x8FF34781
_HCONST_10: Final = 0x2E2AC13A
_HCONST_11: Final = 0xCC623AF3
_HCONST_12: Final = 0x6A99B4AC
_HCONST_13: Final = 0x08D12E65
# make_hash2's value for [] when it is the whole term, and the tag it mixes otherwise.
_NIL_ALONE: Final = 3468870702
_NIL_TAG: Final = 0x2
# A small integer is an immediate of 60 bits on a 64-bit VM; beyond it is a bignum.
_SMALL_MIN: Final = -(1 << 59)
_SMALL_MAX: Final = (1 << 59) - 1
_DOUBLE: Final = struct.Struct("<d")
_TWO_WORDS: Final = struct.Struct("<II")


class Atom(str):
    """An Erlang atom (a `str` otherwise)."""


UNDEFINED: Final = Atom("undefined")

Term: TypeAlias = Union[  # noqa: UP007 - a recursive alias needs the string form
    Atom, bytes, int, float, tuple["Term", ...], list["Term"]
]


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    """Bob Jenkins' mix of three 32-bit words."""
    a = ((a - b - c) & _M32) ^ (c >> 13)
    b = ((b - c - a) & _M32) ^ ((a << 8) & _M32)
    c = ((c - a - b) & _M32) ^ (b >> 13)
    a = ((a - b - c) & _M32) ^ (c >> 12)
    b = ((b - c - a) & _M32) ^ ((a << 16) & _M32)
    c = ((c - a - b) & _M32) ^ (b >> 5)
    a = ((a - b - c) & _M32) ^ (c >> 3)
    b = ((b - c - a) & _M32) ^ ((a << 10) & _M32)
    c = ((c - a - b) & _M32) ^ (b >> 15)
    return a, b, c


def _words(x: int, y: int, constant: int, hash_value: int) -> int:
    """make_hash2's step for two 32-bit words of one type (its constant)."""
    return _mix((constant + x) & _M32, (constant + y) & _M32, hash_value)[2]


def _block_hash(data: bytes, initial: int) -> int:
    """make_hash2's hash of a binary's bytes: 12 at a time, then the rest and the length."""
    a = b = _HCONST
    c = initial
    length = len(data)
    whole = length - length % 12
    for at in range(0, whole, 12):
        a = (a + int.from_bytes(data[at : at + 4], "little")) & _M32
        b = (b + int.from_bytes(data[at + 4 : at + 8], "little")) & _M32
        c = (c + int.from_bytes(data[at + 8 : at + 12], "little")) & _M32
        a, b, c = _mix(a, b, c)
    rest = data[whole:]
    # The last bytes: up to 4 into a, 4 into b, 3 into c above its lowest byte (the
    # length's place).
    a = (a + int.from_bytes(rest[0:4], "little")) & _M32
    b = (b + int.from_bytes(rest[4:8], "little")) & _M32
    c = (c + (length & _M32) + (int.from_bytes(rest[8:11], "little") << 8)) & _M32
    return _mix(a, b, c)[2]


def atom_hash(name: str) -> int:
    """The atom table's hash of a name (hashpjw over its bytes), which make_hash2 mixes."""
    value = 0
    for byte in name.encode("ascii"):
        value = (value << 4) + byte
        top = value & 0xF0000000
        if top:
            value ^= top >> 24
            value ^= top
    return value & _M32


class _ListTail:
    """A list's remaining cells, still to hash (make_hash2 walks cons cells)."""

    __slots__ = ("items", "start")

    def __init__(self, items: Sequence[Term], start: int) -> None:
        self.items = items
        self.start = start


def make_hash2(term: Term) -> int:
    """OTP's make_hash2: the 32-bit hash phash2 masks."""
    hash_value = 0
    stack: list[Term | _ListTail] = []
    current: Term | _ListTail = term
    while True:
        if isinstance(current, list):
            current = _ListTail(current, 0)
        if isinstance(current, _ListTail):
            items, at = current.items, current.start
            if at == len(items):  # []
                if hash_value == 0:
                    hash_value = _NIL_ALONE
                else:
                    hash_value = _words(_NIL_TAG, 0, _HCONST_2, hash_value)
            else:
                # Leading bytes (integers 0..255) are packed four to a word, as strings.
                packed = count = 0
                while at < len(items):
                    item = items[at]
                    if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item < 256:
                        break
                    packed = ((packed << 8) + item) & _M32
                    at += 1
                    if count == 3:
                        hash_value = _words(packed, 0, _HCONST_4, hash_value)
                        packed = count = 0
                    else:
                        count += 1
                if count:
                    hash_value = _words(packed, 0, _HCONST_4, hash_value)
                if at < len(items):
                    stack.append(_ListTail(items, at + 1))
                    current = items[at]
                else:
                    current = _ListTail(items, at)  # the [] that ends it
                continue
        elif isinstance(current, tuple):
            hash_value = _words(len(current), 0, _HCONST_9, hash_value)
            if current:
                stack.extend(reversed(current[1:]))
                current = current[0]
                continue
        elif isinstance(current, Atom):
            hashed = atom_hash(current)
            # Alone, an atom's hash is its table hash, unmixed.
            hash_value = hashed if hash_value == 0 else _words(hashed, 0, _HCONST_3, hash_value)
        elif isinstance(current, (bytes, bytearray)):
            initial = (_HCONST_13 + hash_value) & _M32
            hash_value = _block_hash(bytes(current), initial) if current else initial
        elif isinstance(current, bool):
            raise TypeError("a bool is no Erlang term: use Atom('true') or Atom('false')")
        elif isinstance(current, int):
            hash_value = _integer_hash(current, hash_value)
        elif isinstance(current, float):
            value = current if current != 0.0 else 0.0  # -0.0 hashes as 0.0
            low, high = _TWO_WORDS.unpack(_DOUBLE.pack(value))
            hash_value = _words(high, low, _HCONST_12, hash_value)
        else:
            raise TypeError(f"no Erlang term for {type(current).__name__}")
        if not stack:
            return hash_value
        current = stack.pop()


def _integer_hash(value: int, hash_value: int) -> int:
    if -(1 << 27) <= value < (1 << 27):
        word = value & _M32
        if value < 0:  # negative numbers are mixed twice, as make_hash2 does
            hash_value = _words(-value & _M32, 0, _HCONST, hash_value)
        return _words(word, 0, _HCONST, hash_value)
    # Larger smalls and bignums alike: 64-bit digits, least significant first, each as
    # two words, with the sign in the constant.
    constant = _HCONST_10 if value < 0 else _HCONST_11
    magnitude = -value if value < 0 else value
    while True:
        digit = magnitude & _M64
        hash_value = _words(digit & _M32, digit >> 32, constant, hash_value)
        magnitude >>= 64
        if not magnitude:
            return hash_value


def phash2(term: Term) -> int:
    """erlang:phash2/1: make_hash2 in the range 0..2^27-1."""
    return make_hash2(term) & _PHASH2_RANGE_MASK


# ----------------------------------------------------------------- rand:exs1024


def _exs64_next(state: int) -> tuple[int, int]:
    r1 = state ^ (state >> 12)
    r2 = r1 ^ ((r1 & ((1 << 39) - 1)) << 25)
    r3 = r2 ^ (r2 >> 27)
    return (r3 * 2685821657736338717) & _M64, r3


class Exs1024:
    """rand's exs1024 state as OTP keeps it: a list it consumes from the front and the
    values it consumed, reversed, which it takes back when the list runs out."""

    __slots__ = ("_ahead", "_behind")

    def __init__(self, seed: tuple[int, int, int]) -> None:
        a1, a2, a3 = seed
        m21 = (1 << 21) - 1
        b1 = (((a1 & m21) + 1) * 2097131) & m21
        b2 = (((a2 & m21) + 1) * 2097133) & m21
        b3 = (((a3 & m21) + 1) * 2097143) & m21
        state = (b1 << 43) | (b2 << 22) | (b3 << 1) | 1
        generated: list[int] = []
        for _ in range(16):
            value, state = _exs64_next(state)
            generated.append(value)
        # OTP conses each value onto the list: the last generated comes first.
        self._ahead = generated[::-1]
        self._behind: list[int] = []  # most recent last

    def next(self) -> int:
        if len(self._ahead) == 1:
            self._ahead = self._ahead + self._behind
            self._behind = []
        s0, s1 = self._ahead[0], self._ahead[1]
        s11 = s1 ^ ((s1 & ((1 << 33) - 1)) << 31)
        s12 = s11 ^ (s11 >> 11)
        s01 = s0 ^ (s0 >> 30)
        ns1 = s01 ^ s12
        self._ahead = [ns1, *self._ahead[2:]]
        self._behind.append(s0)
        return (ns1 * 1181783497276652981) & _M64

    def uniform(self) -> float:
        """rand:uniform_s for exs1024: the 64-bit value over 2^64 (0.0 =< X < 1.0)."""
        return float(self.next()) / 18446744073709551616.0


def jump_consistent_hash(key: int, buckets: int) -> int:
    """The bucket (0..buckets-1) for an integer key, as the plugin's jump hash draws it
    from rand seeded with {Key, Key, Key}."""
    if buckets == 1:
        return 0
    generator = Exs1024((key, key, key))
    bucket, jump = -1, 0
    while jump < buckets:
        bucket = jump
        jump = int((bucket + 1) / generator.uniform())
    return bucket
