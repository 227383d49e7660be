"""The store imports the standard library and attrs only: nothing of AMQP, no event loop."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("anyio", "asyncio", "pamqp", "amqpd.broker", "amqpd.protocol", "amqpd.server")
PROBE = "import json, sys, amqpd.store; print(json.dumps(sorted(sys.modules)))"


def test_importing_the_store_loads_nothing_forbidden() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    modules = json.loads(result.stdout)
    assert [name for name in modules if name.startswith(FORBIDDEN)] == []
    assert {name for name in modules if name.startswith("amqpd")} <= {
        "amqpd",
        "amqpd.store",
        *(name for name in modules if name.startswith("amqpd.store.")),
    }
