"""Run every client in interop/clients/ against an amqpd started for the run; print a
table (client, passed, failed) and exit non-zero if any failed.

    python -m interop.client_runs [--only NAME,...]

Installs what a run needs where it is missing: Debian's amqp-tools (apt-get) for the C
client, amqplib from the npm registry for Node. aio-pika and Celery (kombu) are in the
project's test dependencies. Two runs restart amqpd in the middle: aio-pika's robust
connection and a Celery worker must carry on afterwards, with durable state intact.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from interop.system import ensure_debian_package, free_port  # noqa: E402
from tests.support.broker_process import BrokerProcess  # noqa: E402

RUN_TIMEOUT_S = 90.0
WAIT_S = 30.0


class Failed(Exception):
    pass


def environment(broker: BrokerProcess, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "AMQP_URL": broker.url,
        "RUN_PREFIX": f"interop-{uuid.uuid4().hex[:8]}",
        "PYTHONPATH": str(ROOT),
        **extra,
    }


def run(command: list[str], env: dict[str, str], cwd: Path = ROOT) -> None:
    done = subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    if done.returncode != 0:
        raise Failed(f"exit {done.returncode}\n{done.stdout}{done.stderr}")


def python_module(module: str) -> Callable[[BrokerProcess], None]:
    def client(broker: BrokerProcess) -> None:
        run([sys.executable, "-m", module], environment(broker))

    return client


def node_amqplib(broker: BrokerProcess) -> None:
    directory = HERE / "clients" / "node"
    if not (directory / "node_modules" / "amqplib").exists():
        run(["npm", "install", "--no-audit", "--no-fund", "--silent"], dict(os.environ), directory)
    run(["node", "run.js"], environment(broker), directory)


def amqp_tools(broker: BrokerProcess) -> None:
    ensure_debian_package("amqp-tools", "amqp-consume")
    run(["bash", str(HERE / "clients" / "amqp_tools.sh")], environment(broker))


def aio_pika_across_a_restart(broker: BrokerProcess) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "interop.clients.aio_pika_robust"],
        env=environment(broker),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        assert process.stdout is not None
        output = []
        for line in process.stdout:
            output.append(line)
            if line.strip() == "RESTART":
                if broker.restart() != 0:
                    raise Failed(f"amqpd did not stop cleanly:\n{broker.log}")
                break
        output += process.stdout.readlines()
        if process.wait(RUN_TIMEOUT_S) != 0:
            raise Failed("".join(output))


def celery_worker_across_a_restart(broker: BrokerProcess) -> None:
    with tempfile.TemporaryDirectory() as results:
        env = environment(broker, CELERY_RESULTS_DIR=results)
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "interop.clients.celery_app", "worker",
             "--pool=solo", "--loglevel=WARNING", "--without-gossip", "--without-mingle",
             "--without-heartbeat"],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            run([sys.executable, "-m", "interop.clients.celery_send", "0", "4"], env)
            wait_for_results(Path(results), 5, worker)
            if broker.restart() != 0:
                raise Failed(f"amqpd did not stop cleanly:\n{broker.log}")
            run([sys.executable, "-m", "interop.clients.celery_send", "5", "9"], env)
            wait_for_results(Path(results), 10, worker)
        finally:
            worker.terminate()
            try:
                log, _ = worker.communicate(timeout=WAIT_S)
            except subprocess.TimeoutExpired:
                worker.kill()
                log, _ = worker.communicate()
        values = sorted(int(path.read_text()) for path in Path(results).glob("result-*"))
        if values != [2 * number for number in range(10)]:
            raise Failed(f"results {values}\n{log}")
        if not list(Path(results).glob("tried-*")):
            raise Failed(f"the failing task was never retried\n{log}")


def wait_for_results(results: Path, count: int, worker: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + WAIT_S
    while len(list(results.glob("result-*"))) < count:
        if worker.poll() is not None or time.monotonic() > deadline:
            worker.kill()
            log, _ = worker.communicate()
            raise Failed(f"{len(list(results.glob('result-*')))} of {count} tasks done\n{log}")
        time.sleep(0.05)


CLIENTS: dict[str, Callable[[BrokerProcess], None]] = {
    "pika BlockingConnection": python_module("interop.clients.pika_blocking"),
    "pika SelectConnection": python_module("interop.clients.pika_select"),
    "aio-pika robust, across a restart": aio_pika_across_a_restart,
    "kombu Producer and Consumer": python_module("interop.clients.kombu_plain"),
    "kombu + Celery worker, across a restart": celery_worker_across_a_restart,
    "Node.js amqplib": node_amqplib,
    "C client (amqp-tools)": amqp_tools,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated client names (substrings)")
    args = parser.parse_args(argv)
    wanted = args.only.split(",") if args.only else None
    results: list[tuple[str, str | None]] = []
    with tempfile.TemporaryDirectory() as data:
        broker = BrokerProcess(Path(data) / "data", ["--port", str(free_port())]).start()
        try:
            for name, client in CLIENTS.items():
                if wanted and not any(part in name for part in wanted):
                    continue
                started = time.monotonic()
                try:
                    client(broker)
                    failure = None
                except (Failed, AssertionError, subprocess.TimeoutExpired, OSError) as error:
                    failure = str(error)
                elapsed = time.monotonic() - started
                print(
                    f"{name:42} {'passed' if failure is None else 'FAILED'} ({elapsed:.1f} s)",
                    flush=True,
                )
                results.append((name, failure))
        finally:
            broker.stop()
    print()
    print("| client | passed | failed |")
    print("|---|---|---|")
    for name, failure in results:
        print(f"| {name} | {int(failure is None)} | {int(failure is not None)} |")
    for name, failure in results:
        if failure is not None:
            print(f"\n{name}:\n{failure}")
    return 1 if any(failure is not None for _, failure in results) else 0


if __name__ == "__main__":
    sys.exit(main())
