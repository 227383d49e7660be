"""The record codec and the format constants (disk format version 1)."""

from __future__ import annotations

import random
import struct
import zlib

import pytest

from amqpd.store import FsyncPolicy, StoreSettings
from amqpd.store.record import (
    FILE_HEADER_BYTES,
    FORMAT_VERSION,
    RECORD_HEADER_BYTES,
    SEGMENT_MAGIC,
    FormatError,
    check_record,
    decode_file_header,
    decode_record,
    encode_file_header,
    encode_record,
    find_record,
)


def test_format_constants_are_those_documented() -> None:
    assert FORMAT_VERSION == 1
    assert FILE_HEADER_BYTES == 16
    assert RECORD_HEADER_BYTES == 25
    assert SEGMENT_MAGIC == b"AMQS"


def test_file_header_layout() -> None:
    header = encode_file_header(SEGMENT_MAGIC, 1234)
    assert header == b"AMQS" + struct.pack(">HHQ", 1, 0, 1234)
    assert decode_file_header(header, SEGMENT_MAGIC) == 1234


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        (b"AMQS\x00\x01", "file header is 6 bytes"),
        (b"AMQA" + struct.pack(">HHQ", 1, 0, 0), "magic"),
        (b"AMQS" + struct.pack(">HHQ", 2, 0, 0), "format version 2"),
        (b"AMQS" + struct.pack(">HHQ", 1, 8, 0), "unknown flags"),
    ],
    ids=["short", "magic", "version", "flags"],
)
def test_bad_file_headers_are_refused(header: bytes, problem: str) -> None:
    with pytest.raises(FormatError, match=problem):
        decode_file_header(header, SEGMENT_MAGIC)


def test_record_layout() -> None:
    record = encode_record(7, 42, 1_700_000_000_000, b"hello")
    crc, length, kind, offset, timestamp_ms = struct.unpack_from(">IIBQQ", record)
    assert (length, kind, offset, timestamp_ms) == (5, 7, 42, 1_700_000_000_000)
    assert crc == zlib.crc32(record[4:])
    assert record[RECORD_HEADER_BYTES:] == b"hello"


@pytest.mark.parametrize("seed", range(5), ids=lambda seed: f"seed={seed}")
def test_record_round_trip(seed: int) -> None:
    rng = random.Random(seed)
    records = [
        (rng.randint(1, 255), offset, rng.randrange(2**64), rng.randbytes(rng.randint(0, 300)))
        for offset in sorted(rng.sample(range(10**6), 50))
    ]
    data = b"".join(encode_record(*record) for record in records)
    position = 0
    decoded = []
    while position < len(data):
        kind, offset, timestamp_ms, body, position = decode_record(data, position)
        decoded.append((kind, offset, timestamp_ms, body))
    assert decoded == records


@pytest.mark.parametrize(
    ("kind", "offset", "timestamp_ms"),
    [(0, 0, 0), (256, 0, 0), (1, -1, 0), (1, 2**64, 0), (1, 0, -5)],
    ids=["kind0", "kind256", "negative-offset", "huge-offset", "negative-timestamp"],
)
def test_unencodable_records_raise_value_error(kind: int, offset: int, timestamp_ms: int) -> None:
    with pytest.raises(ValueError, match=r"kind|encode"):
        encode_record(kind, offset, timestamp_ms, b"")


def test_every_truncation_and_every_bit_flip_fails_the_check() -> None:
    record = encode_record(3, 9, 77, b"some payload bytes")
    assert check_record(record, 0, len(record), -1, 2**64) == len(record)
    for cut in range(len(record)):
        assert check_record(record[:cut], 0, cut, -1, 2**64) == -1
    for bit in range(len(record) * 8):
        damaged = bytearray(record)
        damaged[bit // 8] ^= 1 << (bit % 8)
        assert check_record(bytes(damaged), 0, len(record), -1, 2**64) == -1
    zeroed = bytes(len(record))
    assert check_record(zeroed, 0, len(zeroed), -1, 2**64) == -1


def test_offset_bounds_are_checked() -> None:
    record = encode_record(3, 9, 77, b"x")
    assert check_record(record, 0, len(record), 9, 2**64) == -1  # not increasing
    assert check_record(record, 0, len(record), 8, 9) == -1  # not below the next segment


@pytest.mark.parametrize("seed", range(10), ids=lambda seed: f"seed={seed}")
def test_find_record_skips_garbage(seed: int) -> None:
    rng = random.Random(seed)
    good = encode_record(5, 1000 + seed, 1, rng.randbytes(40))
    garbage = rng.choice([bytes(rng.randint(0, 500)), rng.randbytes(rng.randint(0, 500))])
    data = garbage + good
    assert find_record(data, 0, len(data), 999, 2000) == len(garbage)
    assert find_record(data, 0, len(data), 1000 + seed, 2000) == -1  # offset too low


def test_fsync_policy_parse() -> None:
    assert FsyncPolicy.parse("always") == FsyncPolicy("always")
    assert FsyncPolicy.parse("never") == FsyncPolicy("never")
    assert FsyncPolicy.parse(200) == FsyncPolicy("interval", 200)
    assert FsyncPolicy.parse("50") == FsyncPolicy("interval", 50)
    for bad in ("sometimes", "0", "-5", "1.5", 0, -1, "", True):
        with pytest.raises(ValueError, match="fsync"):
            FsyncPolicy.parse(bad)


def test_settings_must_be_positive() -> None:
    with pytest.raises(ValueError, match="segment_bytes_max"):
        StoreSettings(segment_bytes_max=0)
