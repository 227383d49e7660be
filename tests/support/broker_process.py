"""Run the real `amqpd` command in a subprocess for tests, and wait on its log, not sleeps.

`BrokerProcess.start()` launches `python -m amqpd --port 0 ...` and waits for the ready
line, which names the port it bound; `stop()` sends SIGTERM and returns the exit code.
The broker's log is collected so tests can wait for a line and show it on failure.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

READY = re.compile(r"amqpd ready: accepting AMQP 0-9-1 connections on (\S+):(\d+)")


class BrokerProcess:
    def __init__(self, data_dir: Path, extra_args: Sequence[str] = ()) -> None:
        self.data_dir = data_dir
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.host = "127.0.0.1"
        self.port = 0
        self._stopping = False

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.port}/%2f"

    def start(self, timeout_s: float = 15.0) -> BrokerProcess:
        with self._changed:
            self.lines.clear()  # an earlier run's lines (its ready line) are not this one's
        self._stopping = False
        args = [sys.executable, "-m", "amqpd", "--data-dir", str(self.data_dir)]
        if "--port" not in self.extra_args and "--config" not in self.extra_args:
            args += ["--port", "0"]
        if "--management-port" not in self.extra_args:
            args += ["--management-port", "0"]  # tests that want it pass a free port
        args += self.extra_args
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._collector = threading.Thread(target=self._collect, daemon=True)
        self._collector.start()
        match = self.wait_for(READY, timeout_s)
        self.host, self.port = match.group(1), int(match.group(2))
        return self

    @property
    def line_count(self) -> int:
        """Log lines so far: pass it to `wait_for(since=)` to wait for a line to come."""
        with self._changed:
            return len(self.lines)

    def _collect(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(
        self, pattern: re.Pattern[str] | str, timeout_s: float = 10.0, since: int = 0
    ) -> re.Match[str]:
        """The first log line matching `pattern` from line `since` on (see `line_count`),
        waiting up to `timeout_s` for it."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        seen = since
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    match = regex.search(line)
                    if match:
                        return match
                seen = len(self.lines)
                assert self.process is not None
                if self.process.poll() is not None and seen == len(self.lines):
                    raise AssertionError(
                        f"amqpd exited ({self.process.returncode}) before logging "
                        f"{regex.pattern!r}:\n{self.log}"
                    )
                if not self._changed.wait(timeout_s):
                    raise AssertionError(f"no log line {regex.pattern!r} in time:\n{self.log}")

    @property
    def log(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)
        if signum in (signal.SIGTERM, signal.SIGINT):
            self._stopping = True

    def stop(self, timeout_s: float = 15.0) -> int:
        """SIGTERM (unless one was sent), then the exit code (SIGKILL if it hangs)."""
        assert self.process is not None
        if self.process.poll() is None and not self._stopping:
            self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"amqpd did not stop within {timeout_s} s:\n{self.log}") from None
        finally:
            self._release_pipe()

    def restart(self, how: int = 15, start_timeout_s: float = 15.0) -> int | None:
        """Stop (15, SIGTERM: gracefully, exit code returned; 9, SIGKILL: a crash) and start
        again (the method `signal` shadows the module, hence the numbers)."""
        exit_code = None
        if how == 9:  # SIGKILL
            self.kill()
        else:
            self.signal(how)
            exit_code = self.stop()
        self.start(start_timeout_s)
        return exit_code

    def kill(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._release_pipe()

    def _release_pipe(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None and self.process.stdout is not None:
            self._collector.join(timeout=5)
            self.process.stdout.close()
