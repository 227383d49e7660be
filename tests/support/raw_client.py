"""A minimal AMQP 0-9-1 client on a plain socket, built on pamqp, for tests that must see
every frame (errors, heartbeats, ordering) or send what no real client would."""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

from pamqp import body as pamqp_body
from pamqp import commands, frame, header, heartbeat

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
Frame = tuple[int, Any]  # (channel, pamqp frame object)


class Closed(Exception):
    """The broker closed the socket."""


class RawClient:
    def __init__(self, host: str, port: int, timeout_s: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout_s)
        self.timeout_s = timeout_s
        self._buffer = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ I/O

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, channel: int, value: Any) -> None:
        self.sock.sendall(frame.marshal(value, channel))

    def publish(
        self,
        channel: int,
        body: bytes,
        exchange: str = "",
        routing_key: str = "",
        properties: commands.Basic.Properties | None = None,
        frame_max: int = 131072,
        mandatory: bool = False,
    ) -> None:
        parts = [
            frame.marshal(
                commands.Basic.Publish(
                    exchange=exchange, routing_key=routing_key, mandatory=mandatory
                ),
                channel,
            ),
            frame.marshal(header.ContentHeader(0, len(body), properties), channel),
        ]
        step = frame_max - 8
        for start in range(0, len(body), step):
            parts.append(frame.marshal(pamqp_body.ContentBody(body[start : start + step]), channel))
        self.sock.sendall(b"".join(parts))

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no frame from the broker in time")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise TimeoutError("no frame from the broker in time") from None
        except ConnectionResetError:
            data = b""
        if not data:
            raise Closed("the broker closed the connection")
        self._buffer += data

    def receive_bytes(self, count: int, timeout_s: float | None = None) -> bytes:
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while len(self._buffer) < count:
            self._fill(deadline)
        data, self._buffer = self._buffer[:count], self._buffer[count:]
        return data

    def receive(self, timeout_s: float | None = None) -> Frame:
        """The next frame (heartbeats included)."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while True:
            if len(self._buffer) >= 7:
                (size,) = struct.unpack_from(">I", self._buffer, 3)
                if len(self._buffer) >= size + 8:
                    consumed, channel, value = frame.unmarshal(self._buffer[: size + 8])
                    self._buffer = self._buffer[consumed:]
                    return channel, value
            self._fill(deadline)

    def expect(self, kind: type, timeout_s: float | None = None) -> Any:
        """Skip heartbeats; the next frame must be of `kind`."""
        while True:
            channel, value = self.receive(timeout_s)
            if isinstance(value, heartbeat.Heartbeat) and kind is not heartbeat.Heartbeat:
                continue
            assert isinstance(value, kind), f"expected {kind.__name__}, got {value!r} on {channel}"
            return value

    def declare_and_confirm(self, channel: int, declare: commands.Queue.Declare) -> None:
        """queue.declare, then confirm.select on the same channel, each answered."""
        self.send(channel, declare)
        self.expect(commands.Queue.DeclareOk)
        self.send(channel, commands.Confirm.Select())
        self.expect(commands.Confirm.SelectOk)

    def wait_closed(self, timeout_s: float | None = None) -> list[Frame]:
        """Read until the broker closes the socket; return what came before."""
        frames = []
        try:
            while True:
                frames.append(self.receive(timeout_s))
        except Closed:
            return frames

    # ------------------------------------------------------------ handshake

    def handshake(
        self,
        user: str = "guest",
        password: str = "guest",
        vhost: str = "/",
        *,
        heartbeat_s: int = 0,
        frame_max: int = 131072,
        channel_max: int = 0,
        capabilities: dict[str, Any] | None = None,
    ) -> commands.Connection.Tune:
        self.send_raw(PROTOCOL_HEADER)
        self.expect(commands.Connection.Start)
        properties = {
            "product": "raw test client",
            "capabilities": capabilities
            if capabilities is not None
            else {"authentication_failure_close": True, "consumer_cancel_notify": True},
        }
        self.send(
            0,
            commands.Connection.StartOk(
                client_properties=properties,
                mechanism="PLAIN",
                response=f"\0{user}\0{password}",
            ),
        )
        tune = self.expect(commands.Connection.Tune)
        self.send(
            0,
            commands.Connection.TuneOk(
                channel_max=channel_max, frame_max=frame_max, heartbeat=heartbeat_s
            ),
        )
        self.send(0, commands.Connection.Open(virtual_host=vhost))
        self.expect(commands.Connection.OpenOk)
        return tune

    def open_channel(self, channel: int = 1) -> None:
        self.send(channel, commands.Channel.Open())
        self.expect(commands.Channel.OpenOk)
