"""The one error hierarchy: every failure a peer must hear about, with its AMQP reply code.

The subclass chooses the reply code and the scope: a `ChannelException` is answered with
`channel.close` and the connection stays up; a `ConnectionException` is answered with
`connection.close`. Raise sites give only the detail text; `reply_text` adds RabbitMQ's
`NAME - ` prefix, and the dispatcher adds the class and method ids of the offending method.

Imports nothing from amqpd: protocol/, broker/ and server/ all import this module.
"""

from __future__ import annotations

from typing import ClassVar, Final

REPLY_SUCCESS: Final = 200
CONTENT_TOO_LARGE: Final = 311
NO_ROUTE: Final = 312
NO_CONSUMERS: Final = 313
CONNECTION_FORCED: Final = 320
INVALID_PATH: Final = 402
ACCESS_REFUSED: Final = 403
NOT_FOUND: Final = 404
RESOURCE_LOCKED: Final = 405
PRECONDITION_FAILED: Final = 406
FRAME_ERROR: Final = 501
SYNTAX_ERROR: Final = 502
COMMAND_INVALID: Final = 503
CHANNEL_ERROR: Final = 504
UNEXPECTED_FRAME: Final = 505
RESOURCE_ERROR: Final = 506
NOT_ALLOWED: Final = 530
NOT_IMPLEMENTED: Final = 540
INTERNAL_ERROR: Final = 541

REPLY_NAMES: Final[dict[int, str]] = {
    REPLY_SUCCESS: "REPLY_SUCCESS",
    CONTENT_TOO_LARGE: "CONTENT_TOO_LARGE",
    NO_ROUTE: "NO_ROUTE",
    NO_CONSUMERS: "NO_CONSUMERS",
    CONNECTION_FORCED: "CONNECTION_FORCED",
    INVALID_PATH: "INVALID_PATH",
    ACCESS_REFUSED: "ACCESS_REFUSED",
    NOT_FOUND: "NOT_FOUND",
    RESOURCE_LOCKED: "RESOURCE_LOCKED",
    PRECONDITION_FAILED: "PRECONDITION_FAILED",
    FRAME_ERROR: "FRAME_ERROR",
    SYNTAX_ERROR: "SYNTAX_ERROR",
    COMMAND_INVALID: "COMMAND_INVALID",
    CHANNEL_ERROR: "CHANNEL_ERROR",
    UNEXPECTED_FRAME: "UNEXPECTED_FRAME",
    RESOURCE_ERROR: "RESOURCE_ERROR",
    NOT_ALLOWED: "NOT_ALLOWED",
    NOT_IMPLEMENTED: "NOT_IMPLEMENTED",
    INTERNAL_ERROR: "INTERNAL_ERROR",
}

SHORTSTR_BYTES_MAX: Final = 255  # reply_text is a shortstr on the wire


def reply_text(reply_code: int, detail: str) -> str:
    """`NOT_FOUND - no queue 'q' in vhost '/'`, cut to fit a shortstr as RabbitMQ does."""
    text = f"{REPLY_NAMES.get(reply_code, str(reply_code))} - {detail}"
    encoded = text.encode("utf-8", "surrogateescape")
    if len(encoded) <= SHORTSTR_BYTES_MAX:
        return text
    return encoded[:SHORTSTR_BYTES_MAX].decode("utf-8", "ignore")


def erlang_binary(data: bytes) -> str:
    """Bytes as RabbitMQ's error texts print them (Erlang's ~p): <<"abc">> or <<0,50>>."""
    if data and all(32 <= octet <= 126 for octet in data) and b'"' not in data:
        return '<<"' + data.decode("ascii") + '">>'
    return "<<" + ",".join(str(octet) for octet in data) + ">>"


class AMQPException(Exception):
    """A failure the peer must hear about; the subclass picks the reply code and the scope."""

    reply_code: ClassVar[int] = INTERNAL_ERROR

    def __init__(self, detail: str, class_id: int = 0, method_id: int = 0) -> None:
        super().__init__(detail)
        self.detail = detail
        # The method that failed, as connection.close / channel.close report it; the
        # dispatcher fills these in when the raise site does not know them.
        self.class_id = class_id
        self.method_id = method_id

    @property
    def reply_text(self) -> str:
        return reply_text(self.reply_code, self.detail)


class ChannelException(AMQPException):
    """Answered with channel.close; the connection and its other channels go on."""


class ConnectionException(AMQPException):
    """Answered with connection.close; every channel of the connection ends."""


# Channel scope (soft errors).
class AccessRefused(ChannelException):
    reply_code = ACCESS_REFUSED


class NotFound(ChannelException):
    reply_code = NOT_FOUND


class ResourceLocked(ChannelException):
    reply_code = RESOURCE_LOCKED


class PreconditionFailed(ChannelException):
    reply_code = PRECONDITION_FAILED


# Connection scope (hard errors).
class ConnectionForced(ConnectionException):
    reply_code = CONNECTION_FORCED


class LoginRefused(ConnectionException):
    """Authentication failed: 403 on connection.close, as RabbitMQ does."""

    reply_code = ACCESS_REFUSED


class FrameError(ConnectionException):
    reply_code = FRAME_ERROR


class AMQPSyntaxError(ConnectionException):
    """Malformed method or content fields (502)."""

    reply_code = SYNTAX_ERROR


class CommandInvalid(ConnectionException):
    reply_code = COMMAND_INVALID


class ChannelError(ConnectionException):
    reply_code = CHANNEL_ERROR


class UnexpectedFrame(ConnectionException):
    reply_code = UNEXPECTED_FRAME


class ResourceError(ConnectionException):
    reply_code = RESOURCE_ERROR


class NotAllowed(ConnectionException):
    reply_code = NOT_ALLOWED


class FeatureNotImplemented(ConnectionException):
    """A feature the protocol defines that this broker refuses (540)."""

    reply_code = NOT_IMPLEMENTED


class InternalError(ConnectionException):
    reply_code = INTERNAL_ERROR
