"""The memory alarm on the real broker process, with real clients: a publisher of ever
larger messages is blocked when the broker's resident memory passes the watermark, the
broker's memory stays under the watermark plus a margin while it is blocked, a slow
consumer's draining brings memory back down, the publisher is unblocked and resumes,
and every confirmed message reaches the consumer.

The watermark is the broker's own idle resident size plus WATERMARK_HEADROOM_BYTES,
measured on a first run of the broker. The queue is allowed to hold its whole backlog in
memory (queue_memory_bytes_max, memory_bytes_max raised): it stands for the many queues
that, each within its own bound, together fill the memory.

What brings memory down: the consumer acks messages the queue held in memory, Python
frees their bodies, and the broker's memory check hands free heap pages back to the OS
(malloc_trim) while it is above the watermark; what the blocked publisher had sent
meanwhile went to the queue's log, not to memory. Without the trim memory falls too,
but more slowly (heap fragments stay resident): the first block lasted about twice as
long when this was measured. On unblocking, the publisher's socket backlog (several MiB
on loopback) is read at once, so the publisher is typically blocked again at once: it
goes on in steps, each within the margin.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pika
import pika.channel
import pika.frame
import pika.spec
import pytest

from tests.support.broker_process import BrokerProcess

MIB = 1024 * 1024
WATERMARK_HEADROOM_BYTES = 48 * MIB
# How far above the watermark the broker's resident size may go: what the publisher
# can push in one memory check interval (20 ms here; on loopback a publisher released
# from a block delivers its socket backlog at a few hundred MB/s, so some 5 MiB), the
# publishes it has in flight when it is blocked (PUBLISH_WINDOW messages of up to
# BODY_BYTES_MAX: 2 MiB), the read buffer and the content being assembled.
MARGIN_BYTES = 16 * MIB
BODY_BYTES_MIN = 8 * 1024
BODY_BYTES_MAX = 512 * 1024
PUBLISH_WINDOW = 4  # publishes awaiting their confirm
SLOW_CONSUMER_PAUSE_S = 0.03  # the consumer's pace: one message per pause (~30/s)
QUEUE = "alarm"


def body_bytes(seq: int) -> int:
    """Steadily larger messages: 8 KiB growing 2% per message, up to 512 KiB."""
    return int(min(BODY_BYTES_MIN * 1.02**seq, BODY_BYTES_MAX))


def resident_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
        time.sleep(0.01)


class Sampler(threading.Thread):
    """Reads the broker's resident size every few milliseconds."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.samples.append((time.monotonic(), resident_bytes(self.pid)))
            self.done.wait(0.005)

    def peak(self, start: float = 0.0, end: float = float("inf")) -> int:
        return max(rss for at, rss in self.samples if start <= at <= end)


class Publisher(threading.Thread):
    """pika's asynchronous connection (its blocked callbacks run as the frames arrive):
    persistent messages with confirms, PUBLISH_WINDOW in flight, each larger than the
    last. The delivery tag of a message is its sequence number."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.events: list[tuple[str, float]] = []  # ("blocked" | "unblocked", when)
        self.blocked = threading.Event()
        self.unblocked = threading.Event()
        self.reason = ""
        self.confirmed: set[int] = set()
        self.nacked: set[int] = set()
        self.confirmed_after_unblock = 0
        self.error: str | None = None
        self._published = 0
        self._stopping = False
        self.closed = threading.Event()

    def run(self) -> None:
        connection = pika.SelectConnection(
            pika.URLParameters(self.url),
            on_open_callback=self._opened,
            on_open_error_callback=lambda _c, error: self._fail(f"open: {error}"),
            on_close_callback=self._closed,
        )
        connection.add_on_connection_blocked_callback(self._on_blocked)
        connection.add_on_connection_unblocked_callback(self._on_unblocked)
        self.connection = connection
        try:
            connection.ioloop.start()
        finally:
            connection.ioloop.close()

    def stop(self) -> None:
        """Stop publishing; close once every publish is confirmed."""
        self.connection.ioloop.add_callback_threadsafe(self._stop)

    def _fail(self, error: str) -> None:
        self.error = error
        self.closed.set()

    def _opened(self, connection: pika.SelectConnection) -> None:
        connection.channel(on_open_callback=self._channel_opened)

    def _channel_opened(self, channel: pika.channel.Channel) -> None:
        self.channel = channel
        channel.confirm_delivery(self._on_confirm, callback=lambda _frame: self._fill_window())

    def _closed(self, connection: pika.SelectConnection, reason: Exception) -> None:
        if not self._stopping:
            self.error = f"closed: {reason!r}"
        self.closed.set()
        connection.ioloop.stop()

    def _on_blocked(self, _connection: object, frame: pika.frame.Method) -> None:  # type: ignore[type-arg]
        self.reason = frame.method.reason
        self.events.append(("blocked", time.monotonic()))
        self.unblocked.clear()
        self.blocked.set()

    def _on_unblocked(self, _connection: object, _frame: object) -> None:
        self.events.append(("unblocked", time.monotonic()))
        self.confirmed_after_unblock = 0
        self.blocked.clear()
        self.unblocked.set()

    def _fill_window(self) -> None:
        while not self._stopping and self._published - self._settled < PUBLISH_WINDOW:
            self._published += 1
            seq = self._published
            self.channel.basic_publish(
                "",
                QUEUE,
                bytes(body_bytes(seq)),
                pika.BasicProperties(delivery_mode=2, message_id=str(seq)),
            )

    @property
    def _settled(self) -> int:
        return len(self.confirmed) + len(self.nacked)

    def _on_confirm(self, frame: pika.frame.Method) -> None:  # type: ignore[type-arg]
        method = frame.method
        settled = self.confirmed if isinstance(method, pika.spec.Basic.Ack) else self.nacked
        tags = [method.delivery_tag]
        if method.multiple:
            first = max([0, *self.confirmed, *self.nacked]) + 1
            tags = list(range(first, method.delivery_tag + 1))
        settled.update(tags)
        if self.unblocked.is_set():
            self.confirmed_after_unblock += len(tags)
        self._fill_window()
        if self._stopping and self._settled == self._published:
            self.connection.close()

    def _stop(self) -> None:
        self._stopping = True
        if self._settled == self._published:
            self.connection.close()


class SlowConsumer(threading.Thread):
    """Takes one message at a time (prefetch 1), pausing after each, until `drain` is
    set: then as fast as it can."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.received: set[int] = set()
        self.drain = threading.Event()
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            connection = pika.BlockingConnection(pika.URLParameters(self.url))
            channel = connection.channel()
            channel.basic_qos(prefetch_count=1)
            for method, properties, body in channel.consume(QUEUE, inactivity_timeout=0.05):
                if self.done.is_set():
                    break
                if method is None:
                    continue
                seq = int(properties.message_id)
                assert len(body) == body_bytes(seq)
                self.received.add(seq)
                channel.basic_ack(method.delivery_tag)
                if not self.drain.is_set():
                    self.drain.wait(SLOW_CONSUMER_PAUSE_S)  # the consumer's pace
            channel.cancel()
            connection.close()
        except BaseException as error:
            self.error = error
            raise


@pytest.fixture
def idle_resident_bytes(tmp_path: Path) -> int:
    """The broker's resident size once started, with a client connected and the queue
    declared."""
    process = BrokerProcess(tmp_path / "measure").start()
    try:
        connection = pika.BlockingConnection(pika.URLParameters(process.url))
        connection.channel().queue_declare(QUEUE, durable=True)
        assert process.process is not None
        idle = resident_bytes(process.process.pid)
        connection.close()
    finally:
        assert process.stop() == 0
    return idle


@pytest.fixture
def broker(tmp_path: Path, idle_resident_bytes: int) -> Iterator[tuple[BrokerProcess, int]]:
    watermark = idle_resident_bytes + WATERMARK_HEADROOM_BYTES
    config = tmp_path / "amqpd.yaml"
    config.write_text(
        "listeners: [{bind: 127.0.0.1, port: 0}]\n"
        "limits:\n"
        f"  memory_high_watermark_bytes: {watermark}\n"
        "  memory_check_interval_s: 0.02\n"
        # One queue standing for many: it may hold its whole backlog in memory.
        "  queue_memory_bytes_max: 1073741824\n"
        "  memory_bytes_max: 1073741824\n"
    )
    process = BrokerProcess(tmp_path / "data", ["--config", str(config)]).start()
    try:
        yield process, watermark
    finally:
        assert process.stop() == 0, process.log


def test_a_blocked_publisher_holds_memory_under_the_watermark_and_resumes_when_it_falls(
    broker: tuple[BrokerProcess, int], idle_resident_bytes: int
) -> None:
    process, watermark = broker
    assert process.process is not None
    pid = process.process.pid
    setup = pika.BlockingConnection(pika.URLParameters(process.url))
    setup.channel().queue_declare(QUEUE, durable=True)
    setup.close()
    before = resident_bytes(pid)
    sampler = Sampler(pid)
    sampler.start()
    consumer = SlowConsumer(process.url)
    publisher = Publisher(process.url)
    consumer.start()
    publisher.start()
    try:
        assert publisher.blocked.wait(120), (
            f"never blocked; peak {sampler.peak()} watermark {watermark}\n{process.log}"
        )
        assert publisher.reason == "low on memory"
        blocked_at = publisher.events[0][1]
        process.wait_for(r"memory alarm: \d+ bytes resident, above the watermark")
        # The slow consumer drains what the queue holds in memory; the broker hands the
        # freed memory back, the alarm clears and the publisher is unblocked.
        assert publisher.unblocked.wait(120), f"never unblocked\n{process.log}"
        unblocked_at = next(at for kind, at in publisher.events if kind == "unblocked")
        process.wait_for(r"memory alarm cleared: \d+ bytes resident, under the watermark")
        # ... and resumes: confirms come again (it may be blocked again later on).
        wait_for(lambda: publisher.confirmed_after_unblock >= 20, 60, "confirms after unblock")
        publisher.stop()
        assert publisher.closed.wait(120), "the publisher's last confirms never came"
        assert publisher.error is None, publisher.error
        consumer.drain.set()
        try:
            wait_for(lambda: publisher.confirmed <= consumer.received, 120, "the drain")
        except AssertionError:
            missing = sorted(publisher.confirmed - consumer.received)
            check = pika.BlockingConnection(pika.URLParameters(process.url))
            depth = check.channel().queue_declare(QUEUE, passive=True).method
            check.close()
            raise AssertionError(
                f"{len(missing)} missing: {missing[:20]}...; confirmed {len(publisher.confirmed)}"
                f" received {len(consumer.received)}; queue {depth}; consumer alive "
                f"{consumer.is_alive()}"
            ) from None
    finally:
        consumer.drain.set()
        consumer.done.set()
        consumer.join(10)
        sampler.done.set()
        sampler.join(10)
    assert consumer.error is None
    assert not publisher.nacked
    after = resident_bytes(pid)
    blocked_peak = max(
        sampler.peak(start, end)
        for start, end in _blocked_intervals(publisher.events, sampler.samples[-1][0])
    )
    peak = sampler.peak()
    blocks = sum(kind == "blocked" for kind, _ in publisher.events)
    print(
        f"\nmemory alarm: idle {idle_resident_bytes / MIB:.1f} MiB, before {before / MIB:.1f}, "
        f"watermark {watermark / MIB:.1f}, peak {peak / MIB:.1f} "
        f"(while blocked {blocked_peak / MIB:.1f}), after the drain {after / MIB:.1f}; "
        f"margin {MARGIN_BYTES / MIB:.0f}; blocked {blocks} time(s), "
        f"first for {unblocked_at - blocked_at:.2f} s; "
        f"{len(publisher.confirmed)} confirmed, {len(consumer.received)} received"
    )
    timeline = _timeline(sampler.samples, publisher.events)
    alarms = "\n".join(line for line in process.log.splitlines() if "alarm" in line)
    assert blocked_peak <= watermark + MARGIN_BYTES, f"{timeline}\n{alarms}"
    assert peak <= watermark + MARGIN_BYTES, f"{timeline}\n{alarms}"


def _timeline(samples: list[tuple[float, int]], events: list[tuple[str, float]]) -> str:
    """The resident size every 50 ms and the publisher's blocked/unblocked, in order."""
    start = samples[0][0]
    lines = [(at, f"{at - start:7.3f} s  {kind}") for kind, at in events]
    last = -1.0
    for at, rss in samples:
        if at - last >= 0.05:
            lines.append((at, f"{at - start:7.3f} s  {rss / MIB:.1f} MiB"))
            last = at
    return "\n".join(text for _, text in sorted(lines))


def _blocked_intervals(
    events: list[tuple[str, float]], end: float
) -> Iterator[tuple[float, float]]:
    start: float | None = None
    for kind, at in events:
        if kind == "blocked":
            start = at
        elif start is not None:
            yield start, at
            start = None
    if start is not None:
        yield start, end
