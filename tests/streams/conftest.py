"""The integration fixtures (connection, channel, cleanup) for the stream tests."""

from tests.integration.conftest import channel, cleanup, connection

__all__ = ["channel", "cleanup", "connection"]
