"""Operator subcommands that talk to a running broker through its management HTTP API:
`amqpd list`, `purge`, `delete`, `export-definitions`, `alarms` and `overview`.

They are plain HTTP clients (urllib and json from the standard library), so they work
against any broker serving the API, amqpd or RabbitMQ. The API's address is
`--management-url`, else `AMQPD_MANAGEMENT_URL`, else the management bind and port of
`--config FILE` (and `--management-port`), else http://127.0.0.1:15672. The login is
`--user`/`--password`, else AMQPD_USER/AMQPD_PASSWORD, else guest/guest.

Exit codes (see amqpd.cli): 0 done; 1 the API refused or failed the request (no such
queue, ...) or, for `alarms`, an alarm is in effect; 2 bad usage; 69 (EX_UNAVAILABLE) no
API answered at the address; 77 (EX_NOPERM) the login was refused; 78 the config file
named by --config is bad.

Imports the standard library and amqpd.config (to read --config); never the broker,
the server or amqpd.management: it speaks HTTP only.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TextIO

from amqpd.config.load import ConfigError, load

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNAVAILABLE: Final = 69
EXIT_NOPERM: Final = 77
EXIT_CONFIG: Final = 78

DEFAULT_URL: Final = "http://127.0.0.1:15672"
DEFAULT_TIMEOUT_S: Final = 30.0

# What `amqpd list KIND` shows by default: the API's fields (dotted paths reach into
# nested objects), and the ones the rows are sorted by.
COLUMNS: Final[Mapping[str, tuple[str, ...]]] = {
    "queues": (
        "vhost",
        "name",
        "messages",
        "messages_ready",
        "messages_unacknowledged",
        "consumers",
        "durable",
        "auto_delete",
    ),
    "exchanges": ("vhost", "name", "type", "durable", "auto_delete", "internal"),
    "bindings": ("vhost", "source", "destination", "destination_type", "routing_key", "arguments"),
    "connections": ("name", "user", "vhost", "channels", "state", "client_properties.product"),
    "channels": (
        "name",
        "user",
        "vhost",
        "number",
        "consumer_count",
        "messages_unacknowledged",
        "prefetch_count",
    ),
    "consumers": (
        "queue.vhost",
        "queue.name",
        "consumer_tag",
        "channel_details.name",
        "ack_required",
        "prefetch_count",
        "active",
    ),
    "vhosts": ("name", "messages", "messages_ready", "messages_unacknowledged", "description"),
    "users": ("name", "tags"),
}
SORT_BY: Final[Mapping[str, tuple[str, ...]]] = {
    "queues": ("vhost", "name"),
    "exchanges": ("vhost", "name"),
    "bindings": ("vhost", "source", "destination", "routing_key"),
    "connections": ("name",),
    "channels": ("name",),
    "consumers": ("queue.vhost", "queue.name", "consumer_tag"),
    "vhosts": ("name",),
    "users": ("name",),
}
# Shorter headings in tables for the longest fields (JSON and TSV keep the field names,
# which --columns takes back).
HEADINGS: Final[Mapping[str, str]] = {
    "messages_ready": "ready",
    "messages_unacknowledged": "unacked",
    "client_properties.product": "client",
    "channel_details.name": "channel",
    "queue.vhost": "vhost",
    "queue.name": "queue",
    "consumer_count": "consumers",
    "destination_type": "dest_type",
}
# Kinds listed per vhost at /api/vhosts/{vhost}/KIND rather than /api/KIND/{vhost}.
_VHOST_SUBPATH: Final = frozenset({"connections", "channels"})


class OperatorError(Exception):
    """A request that did not succeed: the message for the operator and the exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Client:
    """A management API client: JSON in and out, HTTP basic auth."""

    def __init__(self, url: str, user: str, password: str, timeout_s: float) -> None:
        self.url = url.rstrip("/")
        self.user = user
        self.timeout_s = timeout_s
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        self._authorization = f"Basic {token}"

    def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None = None,
        body: object = None,
        headers: Mapping[str, str] | None = None,
        what: str = "",
        ok_statuses: tuple[int, ...] = (),
    ) -> tuple[int, Any]:
        """The status and decoded JSON body (None when empty) of one request; errors
        become OperatorError, except statuses in `ok_statuses`. `what` names the object
        for a 404 ("queue 'q' in vhost '/'")."""
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Authorization", self._authorization)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return response.status, _decode(response.read())
        except urllib.error.HTTPError as error:
            with error:
                payload = _decode(error.read())
            if error.code in ok_statuses:
                return error.code, payload
            raise self._refused(error.code, payload, what) from None
        except urllib.error.URLError as error:
            reason = error.reason
            detail = reason.strerror if isinstance(reason, OSError) and reason.strerror else reason
            raise OperatorError(
                f"cannot reach the management API at {self.url}: {detail}; is amqpd running "
                f"with its management port on {_host_port(self.url)}? (--management-url, "
                "or --config with the broker's config file)",
                EXIT_UNAVAILABLE,
            ) from None
        except (TimeoutError, ConnectionError) as error:
            raise OperatorError(
                f"the management API at {self.url} did not answer: {error}", EXIT_UNAVAILABLE
            ) from None

    def _refused(self, status: int, payload: Any, what: str) -> OperatorError:
        reason = _reason(payload)
        if status == 401:
            return OperatorError(
                f"login refused (401) for user '{self.user}' at {self.url}: "
                f"{reason or 'Login failed'}"
                " (wrong user or password, or a user without a management tag; "
                "--user/--password or AMQPD_USER/AMQPD_PASSWORD)",
                EXIT_NOPERM,
            )
        if status == 403:
            return OperatorError(f"not permitted (403): {reason}", EXIT_NOPERM)
        if status == 404:
            subject = f"{what} not found" if what else "not found"
            return OperatorError(f"{subject} (404: {reason or 'Not Found'})", EXIT_FAILURE)
        return OperatorError(f"the API answered {status}: {reason}", EXIT_FAILURE)

    def get(self, path: str, query: Mapping[str, str] | None = None, what: str = "") -> Any:
        return self.request("GET", path, query, what=what)[1]


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace").strip()


def _reason(payload: Any) -> str:
    if isinstance(payload, dict):
        return str(payload.get("reason") or payload.get("error") or "")
    return "" if payload is None else str(payload)


def _host_port(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return parts.netloc.rpartition("@")[2] or url


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


# --- arguments -----------------------------------------------------------------------


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog="exit codes: 0 done, 1 refused or failed (for `alarms`: an alarm is in "
        "effect), 2 bad usage, 69 no API at the address, 77 login refused, 78 bad config",
    )
    connection = parser.add_argument_group("connecting to the management API")
    connection.add_argument(
        "--management-url",
        metavar="URL",
        help=f"the API's base URL (AMQPD_MANAGEMENT_URL; else from --config; else {DEFAULT_URL})",
    )
    connection.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="the broker's config file: its management bind and port give the URL",
    )
    connection.add_argument(
        "--management-port", type=int, metavar="N", help="the management port (15672)"
    )
    connection.add_argument("--user", metavar="NAME", help="user (AMQPD_USER; guest)")
    connection.add_argument(
        "--password",
        metavar="PASSWORD",
        help="password (AMQPD_PASSWORD keeps it off the command line; guest)",
    )
    connection.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S", help="seconds (30)"
    )
    return parser


def management_url(args: argparse.Namespace) -> str:
    """Where the API is: the flag, the environment, the config file, the default."""
    if args.management_url:
        return str(args.management_url)
    from_env = os.environ.get("AMQPD_MANAGEMENT_URL")
    if from_env and args.config is None and args.management_port is None:
        return from_env
    host, port = "127.0.0.1", 15672
    if args.config is not None:
        management = load(args.config).management
        host, port = management.bind, management.port
        if port == 0 and args.management_port is None:
            raise OperatorError(
                f"{args.config} turns the management API off (management.port: 0)",
                EXIT_FAILURE,
            )
    if args.management_port is not None:
        port = args.management_port
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def client_for(args: argparse.Namespace) -> Client:
    user = args.user if args.user is not None else os.environ.get("AMQPD_USER", "guest")
    password = (
        args.password if args.password is not None else os.environ.get("AMQPD_PASSWORD", "guest")
    )
    return Client(management_url(args), user, password, args.timeout)


def _run(
    parser: argparse.ArgumentParser,
    argv: Sequence[str],
    action: Callable[[argparse.Namespace, Client], int],
) -> int:
    args = parser.parse_args(argv)
    try:
        return action(args, client_for(args))
    except ConfigError as error:
        print(f"amqpd: config error:\n{error}", file=sys.stderr)
        return EXIT_CONFIG
    except OperatorError as error:
        print(f"amqpd: {error}", file=sys.stderr)
        return error.exit_code


# --- output --------------------------------------------------------------------------


def field(item: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path in an API object (None where it is missing)."""
    value: Any = item
    for key in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def cell(value: Any) -> str:
    """A value as one table or TSV cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list) and all(isinstance(part, str) for part in value):
        return ",".join(value)
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), sort_keys=True) if value else ""
    return str(value)


def write_rows(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], output_format: str, out: TextIO
) -> None:
    if output_format == "json":
        selected = [{column: field(row, column) for column in columns} for row in rows]
        json.dump(selected, out, indent=2, ensure_ascii=False)
        out.write("\n")
        return
    cells = [[cell(field(row, column)) for column in columns] for row in rows]
    if output_format == "tsv":
        for line in [list(columns), *cells]:
            out.write("\t".join(_tsv_escape(value) for value in line) + "\n")
        return
    numeric = [
        bool(rows)
        and all(isinstance(field(row, column), int | float | type(None)) for row in rows)
        and any(isinstance(field(row, column), int | float) for row in rows)
        and not any(isinstance(field(row, column), bool) for row in rows)
        for column in columns
    ]
    headings = [HEADINGS.get(column, column) for column in columns]
    widths = [
        max([len(heading), *(len(line[index]) for line in cells)])
        for index, heading in enumerate(headings)
    ]
    for line in [headings, *cells]:
        padded = [
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(line, widths, numeric, strict=True)
        ]
        out.write("  ".join(padded).rstrip() + "\n")


def _tsv_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


# --- commands ------------------------------------------------------------------------


def list_command(argv: Sequence[str]) -> int:
    parser = _parser(
        "amqpd list",
        "List the broker's objects as a table (or JSON, or TSV) from the management API.",
    )
    parser.add_argument("kind", choices=tuple(COLUMNS), help="what to list")
    parser.add_argument("--vhost", metavar="NAME", help="only this vhost (every vhost)")
    parser.add_argument(
        "--format", choices=("table", "json", "tsv"), default="table", help="table (default)"
    )
    parser.add_argument(
        "--columns",
        metavar="A,B,...",
        help="the API fields to show (dotted paths reach nested ones, e.g. "
        "message_stats.publish_details.rate)",
    )

    def run(args: argparse.Namespace, client: Client) -> int:
        kind: str = args.kind
        if args.vhost is not None and kind in ("users", "vhosts"):
            parser.error(f"--vhost does not apply to {kind}")
        columns = (
            tuple(part.strip() for part in args.columns.split(",") if part.strip())
            if args.columns
            else COLUMNS[kind]
        )
        if not columns:
            parser.error("--columns names no column")
        if args.vhost is None:
            path = f"/api/{kind}"
            what = ""
        elif kind in _VHOST_SUBPATH:
            path = f"/api/vhosts/{_quote(args.vhost)}/{kind}"
            what = f"vhost '{args.vhost}'"
        else:
            path = f"/api/{kind}/{_quote(args.vhost)}"
            what = f"vhost '{args.vhost}'"
        items = client.get(path, what=what)
        if not isinstance(items, list):
            raise OperatorError(f"unexpected answer from {path}: {items!r}", EXIT_FAILURE)
        rows = [item for item in items if isinstance(item, dict)]
        rows.sort(key=lambda row: [cell(field(row, key)) for key in SORT_BY[kind]])
        write_rows(rows, columns, args.format, sys.stdout)
        return EXIT_OK

    return _run(parser, argv, run)


def purge_command(argv: Sequence[str]) -> int:
    parser = _parser("amqpd purge", "Remove every ready message from a queue.")
    parser.add_argument("kind", choices=("queue",))
    parser.add_argument("name", help="the queue")
    parser.add_argument("--vhost", default="/", metavar="NAME", help='its vhost ("/")')

    def run(args: argparse.Namespace, client: Client) -> int:
        what = f"queue '{args.name}' in vhost '{args.vhost}'"
        client.request(
            "DELETE",
            f"/api/queues/{_quote(args.vhost)}/{_quote(args.name)}/contents",
            what=what,
        )
        print(f"purged {what}")
        return EXIT_OK

    return _run(parser, argv, run)


def delete_command(argv: Sequence[str]) -> int:
    parser = _parser(
        "amqpd delete",
        "Delete a queue or an exchange, or close a client connection (its name as "
        "`amqpd list connections` shows it).",
    )
    parser.add_argument("kind", choices=("queue", "exchange", "connection"))
    parser.add_argument("name")
    parser.add_argument(
        "--vhost", default="/", metavar="NAME", help="the queue's or exchange's vhost (\"/\")"
    )
    parser.add_argument("--if-empty", action="store_true", help="queue: only if it is empty")
    parser.add_argument("--if-unused", action="store_true", help="only if it has no consumers")
    parser.add_argument(
        "--reason",
        default="closed by an operator (amqpd delete connection)",
        help="connection: the text the client gets with 320 CONNECTION_FORCED",
    )

    def run(args: argparse.Namespace, client: Client) -> int:
        if args.kind == "connection":
            what = f"connection '{args.name}'"
            client.request(
                "DELETE",
                f"/api/connections/{_quote(args.name)}",
                headers={"X-Reason": args.reason},
                what=what,
            )
            print(f"closed {what}")
            return EXIT_OK
        query = {}
        if args.if_empty:
            query["if-empty"] = "true"
        if args.if_unused:
            query["if-unused"] = "true"
        what = f"{args.kind} '{args.name}' in vhost '{args.vhost}'"
        client.request(
            "DELETE",
            f"/api/{args.kind}s/{_quote(args.vhost)}/{_quote(args.name)}",
            query,
            what=what,
        )
        print(f"deleted {what}")
        return EXIT_OK

    return _run(parser, argv, run)


def export_definitions_command(argv: Sequence[str]) -> int:
    parser = _parser(
        "amqpd export-definitions",
        "Write the broker's definitions (users, vhosts, permissions, policies, exchanges, "
        "queues, bindings) as RabbitMQ's JSON export, which `amqpd --definitions` loads.",
    )
    parser.add_argument(
        "file", nargs="?", type=Path, metavar="FILE", help="where to write (standard output)"
    )
    parser.add_argument("--vhost", metavar="NAME", help="only this vhost's objects")

    def run(args: argparse.Namespace, client: Client) -> int:
        if args.vhost is None:
            path, what = "/api/definitions", ""
        else:
            path, what = f"/api/definitions/{_quote(args.vhost)}", f"vhost '{args.vhost}'"
        definitions = client.get(path, what=what)
        text = json.dumps(definitions, indent=2, ensure_ascii=False) + "\n"
        if args.file is None:
            sys.stdout.write(text)
            return EXIT_OK
        try:
            args.file.write_text(text, encoding="utf-8")
        except OSError as error:
            raise OperatorError(f"cannot write {args.file}: {error}", EXIT_FAILURE) from None
        counts = ", ".join(
            f"{len(definitions.get(key) or [])} {key}"
            for key in ("users", "vhosts", "permissions", "policies", "exchanges", "queues")
        )
        print(
            f"exported definitions to {args.file} ({counts}, "
            f"{len(definitions.get('bindings') or [])} bindings)",
            file=sys.stderr,
        )
        return EXIT_OK

    return _run(parser, argv, run)


def alarms_command(argv: Sequence[str]) -> int:
    parser = _parser(
        "amqpd alarms",
        "Show the resource alarms in effect (as /api/health/checks/alarms); the exit "
        "status is 1 while any is, 0 when none is, so it serves as a health check.",
    )

    def run(args: argparse.Namespace, client: Client) -> int:
        status, payload = client.request("GET", "/api/health/checks/alarms", ok_statuses=(503,))
        if status == 200:
            print("no alarms in effect")
            return EXIT_OK
        alarms = payload.get("alarms", []) if isinstance(payload, dict) else []
        print(f"alarms in effect: {_reason(payload)}")
        for alarm in alarms:
            if isinstance(alarm, dict):
                print(f"  {alarm.get('resource', '?')} on {alarm.get('node', '?')}")
        return EXIT_FAILURE

    return _run(parser, argv, run)


def overview_command(argv: Sequence[str]) -> int:
    parser = _parser("amqpd overview", "A summary of the broker: version, totals, listeners.")
    parser.add_argument("--format", choices=("table", "json"), default="table")

    def run(args: argparse.Namespace, client: Client) -> int:
        overview = client.get("/api/overview")
        if args.format == "json":
            json.dump(overview, sys.stdout, indent=2, ensure_ascii=False)
            sys.stdout.write("\n")
            return EXIT_OK
        for line in overview_lines(overview):
            print(line)
        return EXIT_OK

    return _run(parser, argv, run)


def overview_lines(overview: Mapping[str, Any]) -> list[str]:
    product = overview.get("product_name") or "broker"
    version = overview.get("product_version") or overview.get("rabbitmq_version") or "?"
    totals = overview.get("object_totals") or {}
    queued = overview.get("queue_totals") or {}
    lines = [
        f"{product} {version} on {overview.get('node', '?')}",
        "objects: "
        + ", ".join(
            f"{totals.get(key, 0)} {key}"
            for key in ("connections", "channels", "consumers", "exchanges", "queues")
        ),
        f"messages: {queued.get('messages', 0)} ({queued.get('messages_ready', 0)} ready, "
        f"{queued.get('messages_unacknowledged', 0)} unacknowledged)",
    ]
    stats = overview.get("message_stats") or {}
    rates = [
        f"{key} {field(stats, key + '_details.rate') or 0:g}/s"
        for key in ("publish", "deliver_get", "ack")
        if key in stats
    ]
    if rates:
        lines.append("rates: " + ", ".join(rates))
    listeners = overview.get("listeners") or []
    lines.append(
        "listeners: "
        + (
            ", ".join(
                f"{item.get('protocol')} {item.get('ip_address')}:{item.get('port')}"
                for item in listeners
                if isinstance(item, dict)
            )
            or "none"
        )
    )
    alarms = overview.get("alarms") or []
    lines.append("alarms: " + (", ".join(str(alarm) for alarm in alarms) or "none"))
    return lines


OPERATOR_COMMANDS: Final[Mapping[str, Callable[[Sequence[str]], int]]] = {
    "list": list_command,
    "purge": purge_command,
    "delete": delete_command,
    "export-definitions": export_definitions_command,
    "alarms": alarms_command,
    "overview": overview_command,
}
