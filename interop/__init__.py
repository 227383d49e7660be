"""Compatibility checks against real clients and against RabbitMQ itself (see README.md)."""
