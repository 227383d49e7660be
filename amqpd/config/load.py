"""Read the YAML config file into config.model values; errors name the file and the key.

Unknown keys, wrong types and out-of-range values stop start-up: the broker never runs
half-configured. Types are strict (no `"5672"` for a port, no `true` for a number).

TLS files are read at load time too (config.tls): a certificate or key that does not
load is a config error, not a failure at the first client.

Imports config.model, config.tls, attrs, cattrs and yaml.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import cattrs
import yaml
from cattrs.errors import ForbiddenExtraKeysError
from cattrs.v import format_exception

from amqpd.config.model import TENANCY_KEYS, ServerConfig, Vhost
from amqpd.config.tls import TlsSettingsError, server_context


class ConfigError(Exception):
    """A config file that cannot be used, with every reason found."""


def _strict(kind: type) -> Any:
    def structure(value: object, _: type) -> object:
        if type(value) is not kind and not (kind is float and type(value) is int):
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__} {value!r}")
        return kind(value)  # type: ignore[call-arg]

    return structure


def _str_or_int(value: object, _: object) -> str | int:
    if type(value) not in (str, int):
        raise TypeError(f"expected a string or an integer, got {type(value).__name__} {value!r}")
    return value  # type: ignore[return-value]


def _converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True)
    for kind in (int, float, str, bool):
        converter.register_structure_hook(kind, _strict(kind))
    converter.register_structure_hook(Path, lambda value, _: Path(_strict(str)(value, str)))
    converter.register_structure_hook(str | int, _str_or_int)
    structure_vhost = converter.gen_structure_attrs_fromdict(Vhost)

    def vhost(value: Any, kind: type) -> Vhost:
        # A bare name is a vhost with no description and no limits.
        return Vhost(value) if type(value) is str else structure_vhost(value, kind)

    converter.register_structure_hook(Vhost, vhost)
    return converter


def _describe(error: BaseException, expected: Any) -> str:
    if isinstance(error, (TypeError, ValueError)) and not isinstance(
        error, ForbiddenExtraKeysError
    ):
        if len(error.args) > 1 and isinstance(error.args[0], str):
            return error.args[0]  # attrs' validators add the attribute and the value
        return str(error)
    return format_exception(error, expected)


def _locate(source: str, reason: str, sources: dict[str, str]) -> str:
    """'expected int @ .limits.port' -> 'amqpd.yaml: limits.port: expected int'.
    (Checks across keys have no path; their message names the keys.) A key read from
    another file (`sources`: top-level key -> file) is reported against that file."""
    message, _, path = reason.rpartition(" @ ")
    path = path.lstrip(".")
    source = sources.get(path.split(".", 1)[0].split("[", 1)[0], source)
    return f"{source}: {path}: {message}" if path else f"{source}: {message}"


def parse(data: object, source: str, sources: dict[str, str] | None = None) -> ServerConfig:
    """Structure already-parsed YAML; `source` names the file in error messages."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of settings")
    try:
        return _converter().structure(data, ServerConfig)
    except cattrs.BaseValidationError as error:
        reasons = cattrs.transform_error(error, path="", format_exception=_describe)
        raise ConfigError(
            "\n".join(_locate(source, reason, sources or {}) for reason in reasons)
        ) from None
    except (TypeError, ValueError) as error:  # a check across keys, from the constructor
        raise ConfigError(f"{source}: {error}") from None


def _read_yaml(path: Path) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config file: {error.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None


def load(path: Path, definitions_file: Path | None = None) -> ServerConfig:
    """The server config in `path`, with its tenants file if it names one; relative
    paths in it are taken from the config file's folder. `definitions_file` (the
    command line's) replaces the file's own: with one, the tenancy may name users and
    vhosts that only the export defines (they are checked once it has joined)."""
    data = _read_yaml(path)
    if not isinstance(data, dict):
        return parse(data, str(path))
    sources: dict[str, str] = {}
    folder = path.parent
    tenants = data.get("tenants_file")
    if isinstance(tenants, str):
        tenants_path = folder / tenants
        data["tenants_file"] = str(tenants_path)
        tenancy = _read_yaml(tenants_path) or {}
        if not isinstance(tenancy, dict):
            raise ConfigError(f"{tenants_path}: the top level must be a mapping of settings")
        for key in tenancy:
            if key not in TENANCY_KEYS:
                raise ConfigError(
                    f"{tenants_path}: {key}: not a tenancy key (those are "
                    f"{', '.join(TENANCY_KEYS)})"
                )
            if key in data:
                raise ConfigError(
                    f"{path}: {key}: also set in the tenants file {tenants_path}; keep it in one"
                )
            sources[key] = str(tenants_path)
        data.update(tenancy)
    definitions = data.get("definitions_file")
    if definitions_file is not None:
        data["definitions_file"] = str(definitions_file)
    elif isinstance(definitions, str):
        data["definitions_file"] = str(folder / definitions)
    _resolve_tls_files(data.get("listeners"), folder)
    config = parse(data, str(path), sources)
    check_tls_files(config, str(path))
    return config


_TLS_FILE_KEYS = ("cert_file", "key_file", "ca_file")


def _resolve_tls_files(listeners: object, folder: Path) -> None:
    """Relative TLS file names are taken from the config file's folder. (Shapes that are
    wrong are left for `parse` to report.)"""
    if not isinstance(listeners, list):
        return
    for listener in listeners:
        tls = listener.get("tls") if isinstance(listener, dict) else None
        if not isinstance(tls, dict):
            continue
        for key in _TLS_FILE_KEYS:
            if isinstance(tls.get(key), str):
                tls[key] = str(folder / tls[key])


def check_tls_files(config: ServerConfig, source: str) -> None:
    """ConfigError if a TLS listener's certificate, key or CA file cannot be used."""
    for index, listener in enumerate(config.listeners):
        if listener.tls is None:
            continue
        try:
            server_context(listener.tls)
        except TlsSettingsError as error:
            raise ConfigError(
                f"{source}: listeners[{index}].tls.{error.key}: {error.reason}"
            ) from None


def override(config: ServerConfig, **changes: Any) -> ServerConfig:
    """The config with command-line values (those not None) in place."""
    changes = {key: value for key, value in changes.items() if value is not None}
    return attrs.evolve(config, **changes)
