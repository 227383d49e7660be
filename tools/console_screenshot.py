#!/usr/bin/env python3
"""Take docs/console-overview.png: a broker with some traffic, the web console's overview
in Debian's chromium (playwright, as tests/management/test_console.py drives it).

    tools/console_screenshot.py [--out docs/console-overview.png] [--seconds 20]

Run by hand when the console changes; the tests never write into the repository.
"""

from __future__ import annotations

import argparse
import math
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pika
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(process: subprocess.Popen[str], pattern: str) -> re.Match[str]:
    assert process.stdout is not None
    for line in process.stdout:
        match = re.search(pattern, line)
        if match:
            return match
    raise SystemExit(f"amqpd exited before logging {pattern!r}")


def traffic(url: str, stop: threading.Event) -> None:
    """Publish in waves and consume part of it, so every line of the charts moves."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    for name in ("orders", "invoices", "emails"):
        channel.queue_declare(name, durable=True)
    started = time.monotonic()
    while not stop.is_set():
        wave = 20 + int(15 * (1 + math.sin(time.monotonic() - started)))
        for number in range(wave):
            channel.basic_publish("", ("orders", "invoices", "emails")[number % 3], b"x" * 200)
        for _ in range(wave // 2):
            method, _, _ = channel.basic_get("orders")
            if method is not None:
                channel.basic_ack(method.delivery_tag)
        connection.sleep(0.1)
    connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "console-overview.png")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "amqpd.yaml"
        config.write_text("management:\n  sample_interval_s: 1\n")
        command = [sys.executable, "-m", "amqpd", "--config", str(config), "--port", "0"]
        command += ["--data-dir", str(Path(folder) / "data")]
        command += ["--management-port", str(free_port())]
        broker = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            console = wait_for(broker, r"web console on (http://\S+/)").group(1)
            host, port = wait_for(broker, r"connections on (\S+):(\d+)").groups()
            stop = threading.Event()
            worker = threading.Thread(
                target=traffic, args=(f"amqp://guest:guest@{host}:{port}/%2f", stop)
            )
            worker.start()
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
                )
                page = browser.new_page(viewport={"width": 1280, "height": 720})
                page.goto(console)
                page.get_by_label("Username").fill("guest")
                page.get_by_label("Password").fill("guest")
                page.get_by_role("button", name="Log in").click()
                page.wait_for_timeout(args.seconds * 1000)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=args.out)
                browser.close()
            stop.set()
            worker.join()
        finally:
            broker.terminate()
            broker.wait()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
