"""Client runs: real clients used the way their users use them, each against amqpd.

Every run covers connect, declare, bind, publish with confirms, consume with acks, a
reject (requeued, then dropped), and a clean close, and exits 0 only if each step saw
what RabbitMQ would give it. The runner is interop/client_runs.py.
"""
