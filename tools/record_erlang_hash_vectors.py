"""Record erlang:phash2 values and the consistent-hash exchange's jump-hash buckets from a
running RabbitMQ node, for tests/broker/erlang_hash_vectors.json (the unit tests compare
amqpd.broker.exchanges.erlang_hash with them; no Erlang is needed at test time).

    python tools/record_erlang_hash_vectors.py NODE [OUTPUT]

NODE is a RabbitMQ node that rabbitmqctl reaches (`rabbitmqctl -n NODE eval ...`).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from amqpd.broker.exchanges.erlang_hash import Atom, Term
from amqpd.codec.fields import (
    FieldTable,
    Float32,
    LongInt,
    LongUInt,
    ShortInt,
    ShortShortInt,
    ShortShortUInt,
    ShortUInt,
    Timestamp,
    encode_table,
)

OUTPUT = Path(__file__).resolve().parent.parent / "tests/broker/erlang_hash_vectors.json"


def erlang(term: Term) -> str:
    """The term as an Erlang literal."""
    if isinstance(term, Atom):
        return "'" + term + "'"
    if isinstance(term, bytes):
        return "<<" + ",".join(str(byte) for byte in term) + ">>"
    if isinstance(term, bool):
        raise TypeError(term)
    if isinstance(term, int):
        return str(term)
    if isinstance(term, float):
        text = repr(term)
        if "e" in text and "." not in text.split("e")[0]:
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"
        return text
    if isinstance(term, tuple):
        return "{" + ",".join(erlang(item) for item in term) + "}"
    if isinstance(term, list):
        return "[" + ",".join(erlang(item) for item in term) + "]"
    raise TypeError(term)


def encode(term: Term) -> Any:
    """The term as JSON the tests decode: tagged where JSON has no such type."""
    if isinstance(term, Atom):
        return {"atom": str(term)}
    if isinstance(term, bytes):
        return {"binary": term.hex()}
    if isinstance(term, tuple):
        return {"tuple": [encode(item) for item in term]}
    if isinstance(term, list):
        return [encode(item) for item in term]
    return term


def evaluate(node: str, setup: str, value: str) -> Any:
    """The JSON of `value` evaluated on the node after `setup`."""
    expression = f'{setup} io:format("~s", [rabbit_json:encode({value})]).'
    done = subprocess.run(
        ["rabbitmqctl", "-q", "-n", node, "eval", expression],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().removesuffix("ok"))


def terms(rng: random.Random) -> list[Term]:
    found: list[Term] = [b"", b"a", b"abc", b"hello world!", b"0123456789ab", b"\x00\xff" * 20]
    found += [rng.randbytes(rng.randrange(0, 64)) for _ in range(150)]
    found += [f"key-{number}".encode() for number in range(50)]
    found += [Atom(name) for name in ("undefined", "true", "false", "longstr", "signedint")]
    found += [0, 1, -1, 2**27 - 1, 2**27, -(2**27), -(2**27) - 1, 2**31, -(2**31), 2**32 + 5]
    found += [2**59 - 1, 2**59, -(2**59), -(2**59) - 1, 2**63 - 1, -(2**63), 2**64, 2**130 + 7]
    found += [rng.randrange(-(2**40), 2**40) for _ in range(30)]
    found += [0.0, 1.5, -2.25, 1e300, 3.14159, 1e-300, 0.1]
    found += [(), (Atom("longstr"), b"abc"), (Atom("signedint"), 42), (Atom("bool"), Atom("true"))]
    found += [(Atom("void"), Atom("undefined")), (Atom("double"), 1.5), (Atom("long"), -7)]
    found += [(Atom("decimal"), (2, 12345)), (Atom("binary"), b"\x01\x02")]
    found += [(Atom("table"), [(b"k", Atom("longstr"), b"v"), (b"n", Atom("signedint"), 1)])]
    found += [(Atom("array"), [(Atom("longstr"), b"x"), (Atom("long"), 300)])]
    found += [[], [1, 2, 3], [1, 2, 3, 4, 5], [300, 1, 2], [b"a", []], [[], []], [Atom("a")]]
    found += [(Atom("longstr"), rng.randbytes(rng.randrange(0, 30))) for _ in range(30)]
    return found


def headers() -> FieldTable:
    """One header of every field type, for the hash of the value RabbitMQ parses."""
    return {
        "longstr": "abc",
        "longstr-utf8": "ünïcødé",
        "empty": "",
        "bool-true": True,
        "bool-false": False,
        "byte": ShortShortInt(-5),
        "unsignedbyte": ShortShortUInt(200),
        "short": ShortInt(-300),
        "unsignedshort": ShortUInt(60000),
        "signedint": LongInt(-70000),
        "unsignedint": LongUInt(4000000000),
        "long": 2**40,
        "long-negative": -(2**62),
        "float": Float32(1.5),
        "double": 2.718281828,
        "decimal": Decimal("123.45"),
        "decimal-negative": Decimal("-1.5"),
        "timestamp": Timestamp(1700000000),
        "void": None,
        "binary": b"\x00\x01\xff",
        "array": ["a", LongInt(1), [True]],
        "table": {"k": "v", "n": {"m": 2**33}},
    }


def main(argv: list[str]) -> int:
    node = argv[1]
    output = Path(argv[2]) if len(argv) > 2 else OUTPUT
    rng = random.Random(3108)
    cases = terms(rng)
    hashes = evaluate(
        node, "", "[erlang:phash2(T) || T <- [" + ",".join(erlang(term) for term in cases) + "]]"
    )
    keys = [rng.randrange(0, 2**27) for _ in range(300)] + [0, 1, 2**27 - 1]
    sizes = [1, 2, 3, 5, 10, 17, 100, 1000, 65536, 10**9]
    jump = (
        "Jump = fun Loop(B, J, N, _) when J >= N -> B;"
        " Loop(_, J, N, S0) -> {R, S} = rand:uniform_s(S0), Loop(J, trunc((J + 1) / R), N, S)"
        " end,"
    )
    buckets = evaluate(
        node,
        jump,
        "[[case N of 1 -> 0; _ -> Jump(-1, 0, N, rand:seed_s(exs1024, {K, K, K})) end"
        f" || N <- {sizes}] || K <- {keys}]",
    )
    table = headers()
    raw = encode_table(table)[4:]  # parse_table takes the entries without the length
    fields = evaluate(
        node,
        f"{{T, _}} = {{rabbit_binary_parser:parse_table({erlang(raw)}), 0}},",
        "[erlang:phash2(rabbit_misc:table_lookup(T, K)) || K <- "
        + erlang([key.encode() for key in table])
        + "]",
    )
    vectors = {
        "header_table": raw.hex(),
        "header_phash2": dict(zip(table, fields, strict=True)),
        "phash2": [[encode(term), value] for term, value in zip(cases, hashes, strict=True)],
        "jump": {
            "sizes": sizes,
            "cases": [[key, row] for key, row in zip(keys, buckets, strict=True)],
        },
    }
    output.write_text(json.dumps(vectors, indent=None, separators=(",", ":")) + "\n")
    print(f"{len(cases)} phash2 values and {len(keys)} x {len(sizes)} buckets in {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
