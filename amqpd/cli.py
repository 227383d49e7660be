"""The `amqpd` command: arguments -> config -> node; signals; exit codes.

`amqpd` with no arguments serves AMQP on 127.0.0.1:5672 with data in ./amqpd-data and
the user guest/guest (loopback only) on vhost "/", and the management API, web console
and metrics on 127.0.0.1:15672 (`--management-port`, 0 turns them off). `--config FILE`
reads settings from a YAML file; `--bind`, `--port`, `--management-port` and `--data-dir`
override it. `--definitions FILE` (or the
`definitions_file` key) loads a RabbitMQ definitions export: its tenancy joins the
config's, its exchanges, queues and bindings are declared at start. SIGTERM or SIGINT
shut down gracefully (clients get 320 CONNECTION_FORCED) and the process exits 0. SIGHUP
reads the config file (and the definitions file) again and applies its policies; a
config with errors is refused and logged, and the running one stays.

Subcommands for operators:
  amqpd hash-password [--algorithm argon2|sha256|sha512|md5]   a hash for a users entry
  amqpd check-config [--config FILE] [...]    validate the config and print a summary
  amqpd reload [--config FILE] [--data-dir PATH]   validate, then SIGHUP the broker
and, through the management HTTP API of a running broker (amqpd.cli_operator; options
--management-url URL or --config FILE, --user, --password or AMQPD_USER/AMQPD_PASSWORD):
  amqpd list queues|exchanges|bindings|connections|channels|consumers|vhosts|users
             [--vhost V] [--format table|json|tsv] [--columns A,B]
  amqpd purge queue NAME [--vhost V]
  amqpd delete queue|exchange|connection NAME [--vhost V]
  amqpd export-definitions [FILE]       RabbitMQ's JSON export (standard output without FILE)
  amqpd alarms                          exit 1 while a resource alarm is in effect
  amqpd overview

Exit codes: 0 stopped cleanly (or the subcommand succeeded), 1 could not run (port in
use, data dir locked, no broker to reload; the API refused the request; an alarm is in
effect), 2 bad usage, 69 no management API answered (EX_UNAVAILABLE), 77 the API refused
the login (EX_NOPERM), 78 bad config (EX_CONFIG).
"""

from __future__ import annotations

import argparse
import fcntl
import gc
import getpass
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio
import attrs

from amqpd import __version__, logs
from amqpd.auth.passwords import ALGORITHM_NAMES, hash_password
from amqpd.cli_operator import OPERATOR_COMMANDS
from amqpd.config.definitions import Definitions, merge_definitions, read_definitions
from amqpd.config.load import ConfigError, load, override
from amqpd.config.model import LOG_FORMATS, Listener, ServerConfig
from amqpd.node import LOCK_FILE_NAME, DataDirInUse, Node, check_definitions

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONFIG = 78

log = logging.getLogger("amqpd")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amqpd",
        description="An AMQP 0-9-1 message broker compatible with RabbitMQ clients.",
        epilog="operator commands: amqpd hash-password | check-config | reload | list | "
        "purge | delete | export-definitions | alarms | overview (amqpd COMMAND --help for "
        "each)",
    )
    parser.add_argument("--version", action="version", version=f"amqpd {__version__}")
    parser.add_argument("--config", type=Path, metavar="FILE", help="YAML config file")
    parser.add_argument("--bind", metavar="ADDR", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, metavar="N", help="AMQP port (5672; 0 picks one)")
    parser.add_argument("--data-dir", type=Path, metavar="PATH", help="data folder (./amqpd-data)")
    parser.add_argument(
        "--definitions",
        type=Path,
        metavar="FILE",
        help="RabbitMQ definitions export (JSON) to load; overrides definitions_file",
    )
    parser.add_argument(
        "--management-port",
        type=int,
        metavar="N",
        help="management HTTP API, web console and /metrics port (15672; 0 turns them off)",
    )
    parser.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), help="log verbosity (info)"
    )
    parser.add_argument(
        "--log-format", choices=LOG_FORMATS, help="plain text lines, or JSON lines (plain)"
    )
    return parser


def configure(args: argparse.Namespace) -> tuple[ServerConfig, Definitions | None]:
    """The config from the file and the flags, with the definitions export (if one is
    named) read and its tenancy merged in; the definitions carry what node.py declares
    and what could not be applied."""
    config = load(args.config, args.definitions) if args.config is not None else ServerConfig()
    if args.bind is not None or args.port is not None:
        first = config.listeners[0] if config.listeners else Listener()
        listener = Listener(
            bind=args.bind if args.bind is not None else first.bind,
            port=args.port if args.port is not None else first.port,
        )
        config = override(config, listeners=(listener,))
    if args.management_port is not None:
        config = override(
            config, management=attrs.evolve(config.management, port=args.management_port)
        )
    config = override(
        config,
        data_dir=args.data_dir,
        log_level=args.log_level,
        log_format=args.log_format,
        definitions_file=args.definitions,
    )
    if config.definitions_file is None:
        return config, None
    definitions = read_definitions(config.definitions_file)
    config_source = str(args.config) if args.config is not None else "the default config"
    return merge_definitions(config, definitions, config_source), definitions


def make_config(args: argparse.Namespace) -> ServerConfig:
    """The config to run with: also what SIGHUP reads again, definitions file included."""
    return configure(args)[0]


def _use_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def _reload(node: Node, args: argparse.Namespace) -> None:
    """SIGHUP: read the config again; a bad one is refused and the running one stays."""
    try:
        config = make_config(args)
    except ConfigError as error:
        log.error("config not reloaded, the running one stays:\n%s", error)
        return
    node.reload(config)


async def _serve(node: Node, args: argparse.Namespace) -> None:
    # Signals are caught from before start-up: one that arrives as soon as the broker says
    # it is ready must find the handler in place.
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        await node.start()
        async with anyio.create_task_group() as tasks:

            async def watch_signals() -> None:
                # Watched for the whole run: a second signal during shutdown must not kill
                # the process mid-way; it only stops waiting for clients to answer.
                async for signum in signals:
                    log.info("received %s", signal.Signals(signum).name)
                    if signum == signal.SIGHUP:
                        _reload(node, args)
                        continue
                    if node.shutdown_requested:
                        node.abort_connections()
                    node.request_shutdown()

            tasks.start_soon(watch_signals)
            await node.serve()
            tasks.cancel_scope.cancel()


# Every message allocates a handful of short-lived objects; collecting the youngest
# generation every 700 allocations (the default) cost 5-10% of a deep queue's drain rate.
GC_YOUNG_OBJECTS_MAX = 10_000


def hash_password_command(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="amqpd hash-password",
        description="Print a password hash for a `users` entry. The password is read from "
        "the terminal (twice), or from the first line of standard input when it is not one.",
    )
    parser.add_argument(
        "--algorithm",
        choices=tuple(ALGORITHM_NAMES),
        default="argon2",
        help="argon2 (default), or one of RabbitMQ's formats: sha256, sha512, md5",
    )
    args = parser.parse_args(argv)
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("amqpd: the passwords differ", file=sys.stderr)
            return EXIT_USAGE
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("amqpd: an empty password cannot log in; give one", file=sys.stderr)
        return EXIT_USAGE
    print(hash_password(password, algorithm=args.algorithm))
    if args.algorithm != "argon2":
        print(f"hashing_algorithm: {ALGORITHM_NAMES[args.algorithm]}", file=sys.stderr)
    return EXIT_OK


def _config_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = build_parser()
    parser.prog = prog
    parser.description = description
    return parser


def summary(config: ServerConfig) -> list[str]:
    """What a config sets up, one line per item, for `check-config`."""
    lines = [
        "listeners: "
        + ", ".join(f"{listener.bind}:{listener.port}" for listener in config.listeners),
        f"data_dir: {config.data_dir}",
        f"fsync: {config.storage.fsync}",
        f"audit_log: {config.audit_log or 'off'}",
        f"vhosts ({len(config.vhosts)}):",
    ]
    for vhost in config.vhosts:
        limits = vhost.limits
        lines.append(
            f"  {vhost.name}  connections_max={_limit(limits.connections_max)} "
            f"queues_max={_limit(limits.queues_max)}"
        )
    lines.append(f"users ({len(config.users)}):")
    grants: dict[str, list[str]] = {}
    for user in config.users:
        grants[user.name] = [f"{vhost} (.* .* .*)" for vhost in user.vhosts]
    for permission in config.permissions:
        grants[permission.user].append(
            f"{permission.vhost} ({permission.configure!r} {permission.write!r} "
            f"{permission.read!r})"
        )
    for user in config.users:
        tags = ",".join(user.tags) or "-"
        login = "certificate only" if not user.password_hash else "password"
        lines.append(
            f"  {user.name}  tags={tags}  login={login}  vhosts: "
            + ("; ".join(grants[user.name]) or "none")
        )
    lines.append(f"topic permissions: {len(config.topic_permissions)}")
    lines.append(f"policies: {len(config.policies)}")
    lines.append(f"loopback_users: {', '.join(config.loopback_users) or 'none'}")
    return lines


def _limit(value: int | None) -> str:
    return "none" if value is None else str(value)


def check_config_command(argv: Sequence[str]) -> int:
    parser = _config_parser(
        "amqpd check-config",
        "Validate the configuration as `amqpd` would read it; print a summary.",
    )
    args = parser.parse_args(argv)
    try:
        config, definitions = configure(args)
    except ConfigError as error:
        print(f"amqpd: config error:\n{error}", file=sys.stderr)
        return EXIT_CONFIG
    print("\n".join(summary(config)))
    if definitions is not None:
        report = check_definitions(config, definitions)
        print(report.summary())
        for problem in report.problems:
            print(f"  - {problem}")
    print("config OK")
    return EXIT_OK


def reload_command(argv: Sequence[str]) -> int:
    parser = _config_parser(
        "amqpd reload",
        "Validate the configuration, then ask the broker serving the data folder to read "
        "it again (SIGHUP). A config with errors is not sent: the running one stays.",
    )
    args = parser.parse_args(argv)
    try:
        config = make_config(args)
    except ConfigError as error:
        print(f"amqpd: config error, not reloaded:\n{error}", file=sys.stderr)
        return EXIT_CONFIG
    pid = _serving_pid(config.data_dir)
    if pid is None:
        print(f"amqpd: no broker is serving {config.data_dir}", file=sys.stderr)
        return EXIT_FAILURE
    os.kill(pid, signal.SIGHUP)
    print(f"reload requested from the broker (pid {pid}); its log says what changed")
    return EXIT_OK


def _serving_pid(data_dir: Path) -> int | None:
    """The pid in the data folder's lock file, if a broker holds the lock."""
    try:
        lock_file = open(data_dir / LOCK_FILE_NAME, encoding="utf-8")  # noqa: SIM115
    except OSError:
        return None
    with lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            text = lock_file.read().strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(lock_file, fcntl.LOCK_UN)
        return None  # nobody holds it


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "hash-password": hash_password_command,
    "check-config": check_config_command,
    "reload": reload_command,
    **OPERATOR_COMMANDS,
}


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.port is not None and not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port} is not a TCP port")
    if args.management_port is not None and not 0 <= args.management_port <= 65535:
        parser.error(f"--management-port {args.management_port} is not a TCP port")
    try:
        config, definitions = configure(args)
    except ConfigError as error:
        print(f"amqpd: config error:\n{error}", file=sys.stderr)
        return EXIT_CONFIG
    logs.configure(config.log_level, config.log_format)
    node = Node(config, definitions=definitions)
    gc.set_threshold(GC_YOUNG_OBJECTS_MAX, *gc.get_threshold()[1:])
    try:
        anyio.run(_serve, node, args, backend_options={"use_uvloop": _use_uvloop()})
    except DataDirInUse as error:
        log.error("%s", error)
        return EXIT_FAILURE
    except ConfigError as error:  # a TLS file that changed after the config was read
        log.error("config error: %s", error)
        return EXIT_CONFIG
    except OSError as error:
        log.error("cannot listen: %s", error)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        pass
    return node.exit_code


if __name__ == "__main__":
    sys.exit(main())
