"""The permission matrix (interop/permissions.py) against amqpd: each operation of
RabbitMQ's access-control table, tried by users holding each combination of configure,
write and read, plus topic permissions, user_id and vhost access, gives what RabbitMQ's
table says, reply code and text included. tests/test_interop.py runs the same matrix
against RabbitMQ and requires identical outcomes."""

from __future__ import annotations

from interop.permissions import COMBINATIONS, OPERATIONS, amqpd_with_matrix_users, expected, record


def test_every_operation_needs_what_rabbitmqs_access_control_table_says() -> None:
    with amqpd_with_matrix_users() as url:
        outcomes = record(url)
    table = expected()
    assert len(table) == len(COMBINATIONS) * len(OPERATIONS) + 10
    different = {
        case: (outcomes.get(case), want)
        for case, want in table.items()
        if outcomes.get(case) != want
    }
    assert not different
    # The matrix is not vacuous: both outcomes occur for every operation that needs a right.
    for operation in OPERATIONS:
        seen = {outcomes[f"{user.name} {operation.name}"] == "ok" for user in COMBINATIONS}
        assert seen == ({True, False} if operation.needs else {True}), operation.name
