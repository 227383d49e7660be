"""The definitions journal: a durable key -> value map with tickets."""

from __future__ import annotations

import shutil
from pathlib import Path

from amqpd.store.record import FILE_HEADER_BYTES, decode_record
from tests.store.helpers import flush, open_store


def journal_records(root: Path) -> int:
    data = (root / "definitions" / "definitions.journal").read_bytes()
    position, count = FILE_HEADER_BYTES, 0
    while position < len(data):
        position = decode_record(data, position)[4]
        count += 1
    return count


def test_put_delete_items_across_reopen(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    definitions = store.definitions
    tickets = [
        definitions.put(b"exchange/x", b"direct"),
        definitions.put(b"queue/q", b"durable"),
        definitions.put(b"queue/q", b"durable,ttl"),
        definitions.delete(b"exchange/x"),
        definitions.delete(b"never/there"),
    ]
    assert tickets == sorted(tickets)
    assert len(set(tickets)) == 5
    assert definitions.items() == {b"queue/q": b"durable,ttl"}
    assert definitions.durable_ticket < tickets[0]
    flush(store)
    assert definitions.durable_ticket == tickets[-1]
    store.close()
    reopened = open_store(tmp_path)
    assert reopened.definitions.items() == {b"queue/q": b"durable,ttl"}
    assert reopened.definitions.put(b"z", b"") > reopened.definitions.durable_ticket


def test_compaction_at_open(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    for round_ in range(20):
        for key in range(5):
            store.definitions.put(b"k%d" % key, b"v%d" % round_)
    store.definitions.delete(b"k4")
    flush(store)
    store.close()
    assert journal_records(tmp_path) == 101
    reopened = open_store(tmp_path)
    expected = {b"k%d" % key: b"v19" for key in range(4)}
    assert reopened.definitions.items() == expected
    assert journal_records(tmp_path) == 4
    ticket = reopened.definitions.put(b"k9", b"x")
    flush(reopened)
    reopened.close()
    assert open_store(tmp_path).definitions.items() == {**expected, b"k9": b"x"}
    assert ticket == 5


def test_compaction_of_a_large_journal(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    big = b"v" * 5000
    for index in range(300):
        store.definitions.put(b"key%d" % (index % 200), big + b"%d" % index)
    flush(store)
    store.close()
    assert (tmp_path / "definitions" / "definitions.journal").stat().st_size > 1 << 20
    reopened = open_store(tmp_path)
    assert len(reopened.definitions.items()) == 200
    assert journal_records(tmp_path) == 200


def test_torn_tail_at_every_byte_of_the_last_record(tmp_path: Path) -> None:
    template = tmp_path / "template"
    store = open_store(template)
    store.definitions.put(b"a", b"1")
    store.definitions.put(b"b", b"2")
    flush(store)
    size_before = (template / "definitions" / "definitions.journal").stat().st_size
    store.definitions.put(b"c", b"three")
    flush(store)
    store.close()
    size_after = (template / "definitions" / "definitions.journal").stat().st_size
    for cut in range(size_before, size_after):
        root = tmp_path / f"cut{cut}"
        shutil.copytree(template, root)
        with open(root / "definitions" / "definitions.journal", "r+b") as file:
            file.truncate(cut)
        reopened = open_store(root)
        assert reopened.definitions.items() == {b"a": b"1", b"b": b"2"}
        assert reopened.recovery.definitions_truncated_bytes == cut - size_before
        reopened.close()
        shutil.rmtree(root)
