#!/usr/bin/env python3
"""Logins per second: sequential connect + close with pika against each broker URL
given, interleaved, in rounds; prints the median rate per URL.

    tools/login_bench.py URL [URL ...] [--logins 100] [--rounds 3]

The URL's user and password are the ones that log in: compare a user with a RabbitMQ
format hash (guest), an argon2 user with the login cache on, and with
`authentication: {login_cache_s: 0}`; RabbitMQ's URL beside them.
"""

from __future__ import annotations

import argparse
import statistics
import time

import pika


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("urls", nargs="+")
    parser.add_argument("--logins", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {url: [] for url in args.urls}
    for _ in range(args.rounds):
        for url in args.urls:
            parameters = pika.URLParameters(url)
            started = time.perf_counter()
            for _ in range(args.logins):
                pika.BlockingConnection(parameters).close()
            rates[url].append(args.logins / (time.perf_counter() - started))
    for url, found in rates.items():
        rounded = [round(rate) for rate in found]
        print(f"{url}: median {statistics.median(found):.0f} logins/s {rounded}")


if __name__ == "__main__":
    main()
