#!/usr/bin/env python3
"""The broker core alone (no sockets, no protocol): N transient 1 KB messages published to
a queue whose consumer (prefetch 100) acks every 10, as S2 does. Run it under callgrind,
which counts instructions whatever else the machine does, at two sizes; the difference
divided by the difference in N is the cost of one message:

    for n in 20000 40000; do
        valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
            python3 tools/core_cost.py --queue limited -n $n 2>&1 | grep Collected
    done

--queue: plain, limited (x-message-ttl, x-max-length, a dead-letter exchange),
priority (x-max-priority 10) or partitioned (x-partitions 4; one routing key, so one
partition takes everything: the cost of the ownership rules, not of spreading).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from amqpd.broker.memory import MemoryBudget
from amqpd.broker.timers import Timers
from amqpd.broker.vhost import BrokerServices, VirtualHost
from amqpd.codec.fields import FieldTable
from tests.support.broker_harness import Client, header
from tools.limits_bench import LIMITED

QUEUES: dict[str, FieldTable] = {
    "plain": {},
    "limited": dict(LIMITED),
    "priority": {"x-max-priority": 10},
    "partitioned": {"x-partitions": 4},
}


def run(arguments: FieldTable, count: int) -> None:
    vhost = VirtualHost("/", BrokerServices(memory=MemoryBudget(1 << 30, 1 << 30), timers=Timers()))
    client = Client(vhost)
    channel, sink = client.channel()
    vhost.declare_queue("limits-dlq", owner=None)
    vhost.declare_queue("q", owner=None, arguments=arguments)
    channel.qos(0, 100, global_=False)
    channel.start(channel.consume("q", "c", no_ack=False, exclusive=False, arguments={}))
    body = b"x" * 1024
    content_header = header(body)
    acked = 0
    for _ in range(count):
        channel.publish("", "q", False, False, content_header, body, None, 0)
        if len(sink.deliveries) - acked >= 10:
            channel.ack(sink.deliveries[-1].delivery_tag, multiple=True)
            sink.deliveries.clear()
            acked = 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queue", choices=sorted(QUEUES), default="plain")
    parser.add_argument("-n", type=int, default=20_000)
    args = parser.parse_args()
    run(QUEUES[args.queue], 2_000)  # warm-up: the same code paths before counting
    run(QUEUES[args.queue], args.n)


if __name__ == "__main__":
    main()
