"""A Celery app as projects configure one for reliability: late acks, prefetch 1, a task
that fails once and is retried. Results are written to files (no result backend)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from celery import Celery

RESULTS = Path(os.environ.get("CELERY_RESULTS_DIR", "."))

app = Celery("interop", broker=os.environ.get("AMQP_URL", "amqp://"))
app.conf.update(
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_default_queue=os.environ.get("RUN_PREFIX", "interop") + ".celery",
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(bind=True, max_retries=3, default_retry_delay=0.1)
def add(self: Any, a: int, b: int) -> int:
    marker = RESULTS / f"tried-{self.request.id}"
    if a == 0 and not marker.exists():
        marker.touch()
        raise self.retry()  # the first attempt of this one fails
    (RESULTS / f"result-{self.request.id}").write_text(str(a + b))
    return a + b
