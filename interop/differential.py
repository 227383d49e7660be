"""Run every scenario against amqpd and against RabbitMQ, compare the transcripts, print
a table (group, scenarios, same, listed deviations, different) and exit non-zero on any
difference not listed in deviations.yaml.

    python -m interop.differential [--only GROUP,...] [--amqpd-url URL] [--verbose]

amqpd is started from this checkout on a free port (unless --amqpd-url names one);
RabbitMQ as interop/rabbitmq.py says.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import tempfile
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from interop.rabbitmq import rabbitmq
from interop.scenarios import SCENARIOS, Session, load_all
from interop.transcript import Transcript

HERE = Path(__file__).resolve().parent
DEVIATIONS_FILE = HERE / "deviations.yaml"


def deviations() -> tuple[dict[str, str], dict[str, str]]:
    """(scenario name -> why amqpd differs there, header amqpd adds -> why)."""
    data = yaml.safe_load(DEVIATIONS_FILE.read_text(encoding="utf-8")) or {}
    scenarios = data.get("scenarios") or {}
    headers = data.get("added_headers") or {}
    return (
        {str(name): str(reason) for name, reason in scenarios.items()},
        {str(name): str(reason) for name, reason in headers.items()},
    )


def without(value: Any, keys: set[str]) -> Any:
    """A transcript without the listed header keys, wherever they appear."""
    if isinstance(value, dict):
        return {key: without(item, keys) for key, item in value.items() if key not in keys}
    if isinstance(value, list):
        return [without(item, keys) for item in value]
    return value


def record(name: str, url: str) -> list[Any]:
    _, function = SCENARIOS[name]
    transcript = Transcript(f"interop-{uuid.uuid4().hex[:8]}")
    session = Session(url)
    try:
        function(session, transcript)
    except Exception as error:  # recorded, and so compared
        transcript.add("raised", type(error).__name__, str(error))
        if "-v" in sys.argv or "--verbose" in sys.argv:
            traceback.print_exc()
    finally:
        session.close()
    return transcript.events


@contextmanager
def amqpd(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    sys.path.insert(0, str(HERE.parent))
    from tests.support.broker_process import BrokerProcess

    with tempfile.TemporaryDirectory() as data:
        process = BrokerProcess(Path(data) / "data").start()
        try:
            yield process.url
        finally:
            process.stop()


def _lines(events: list[Any]) -> list[str]:
    return [json.dumps(event, sort_keys=True, default=repr) for event in events]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated groups")
    parser.add_argument("--amqpd-url", help="an amqpd already running")
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args(argv)
    load_all()
    groups = set(args.only.split(",")) if args.only else None
    names = [name for name, (group, _) in SCENARIOS.items() if groups is None or group in groups]
    expected, added_headers = deviations()
    unknown = set(expected) - set(SCENARIOS)
    if unknown:
        print(f"deviations.yaml names no such scenario: {', '.join(sorted(unknown))}")
        return 2
    table: dict[str, list[int]] = {}
    failures: list[str] = []
    with amqpd(args.amqpd_url) as amqpd_url, rabbitmq() as rabbitmq_url:
        for name in names:
            group, _ = SCENARIOS[name]
            ours = without(record(name, amqpd_url), set(added_headers))
            theirs = record(name, rabbitmq_url)
            row = table.setdefault(group, [0, 0, 0, 0])
            row[0] += 1
            if ours == theirs:
                row[1] += 1
                verdict = "same"
                if name in expected:
                    failures.append(f"{name}: listed as a deviation but now the same")
                    row[3] += 1
                    verdict = "same, but listed as a deviation"
            elif name in expected:
                row[2] += 1
                verdict = f"deviation: {expected[name]}"
            else:
                row[3] += 1
                verdict = "DIFFERENT"
                diff = difflib.unified_diff(
                    _lines(theirs), _lines(ours), "rabbitmq", "amqpd", lineterm="", n=2
                )
                failures.append(f"{name}:\n" + "\n".join(diff))
            print(f"{group:16} {name:48} {verdict}", flush=True)
            if args.verbose:
                print("\n".join("    " + line for line in _lines(ours)))
    print()
    print("| group | scenarios | same | listed deviations | different |")
    print("|---|---|---|---|---|")
    for group, (count, same, deviating, different) in table.items():
        print(f"| {group} | {count} | {same} | {deviating} | {different} |")
    for failure in failures:
        print("\n" + failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
