"""Send tasks to the interop Celery app: `python -m interop.clients.celery_send FIRST LAST`
sends add(n, n) for n in FIRST..LAST (add(0, 0) fails once and is retried)."""

from __future__ import annotations

import sys

from interop.clients.celery_app import add

if __name__ == "__main__":
    first, last = int(sys.argv[1]), int(sys.argv[2])
    for number in range(first, last + 1):
        add.apply_async((number, number), retry=True)
