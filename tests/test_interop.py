"""interop/ in the default run. The client runs (interop/client_runs.py): pika, aio-pika
across a restart, kombu with a Celery worker across a restart, Node's amqplib and the C
client all pass against amqpd. The differential run (interop/differential.py): every
scenario gives the same transcript on amqpd as on RabbitMQ 3.10, except the deviations
listed in interop/deviations.yaml.

RabbitMQ is Debian's: installed with apt-get and started for the run where there is none
(interop/rabbitmq.py), or the one INTEROP_RABBITMQ_URL names.
"""

from __future__ import annotations

import pytest

from interop import client_runs, permissions
from interop.differential import main

pytestmark = pytest.mark.timeout(900)


def test_every_scenario_matches_rabbitmq_but_the_listed_deviations(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main([])
    report = capsys.readouterr().out
    assert code == 0, report
    assert "| ttl | 5 | 5 | 0 | 0 |" in report  # the run covered what it claims


def test_every_client_run_passes(capsys: pytest.CaptureFixture[str]) -> None:
    code = client_runs.main([])
    report = capsys.readouterr().out
    assert code == 0, report
    assert report.count(" | 1 | 0 |") == len(client_runs.CLIENTS)


def test_the_permission_matrix_is_the_same_as_rabbitmqs(capsys: pytest.CaptureFixture[str]) -> None:
    code = permissions.main([])
    report = capsys.readouterr().out
    assert code == 0, report
    assert f"| {len(permissions.expected())} | {len(permissions.expected())} | 0 |" in report
