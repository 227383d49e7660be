"""The management plugin's equivalent: a RabbitMQ-compatible HTTP API, the web console and
Prometheus metrics, served on the management port.

Sits above server/ (it reads the connections and sessions the shell holds) and below
node.py (which starts it). Imports aiohttp, amqpd.server, amqpd.broker, amqpd.auth,
amqpd.config and amqpd.codec; nothing below imports it.
"""
