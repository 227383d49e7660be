"""Read the YAML config file into config.model values; errors name the file and the key.

Unknown keys, wrong types and out-of-range values stop start-up: the broker never runs
half-configured. Types are strict (no `"5672"` for a port, no `true` for a number).

Imports config.model, attrs, cattrs and yaml.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import cattrs
import yaml
from cattrs.errors import ForbiddenExtraKeysError
from cattrs.v import format_exception

from amqpd.config.model import ServerConfig


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
    return converter


def _describe(error: BaseException, expected: Any) -> str:
    if isinstance(error, (TypeError, ValueError)) and not isinstance(
        error, ForbiddenExtraKeysError
    ):
        if len(error.args) > 1 and isinstance(error.args[0], str):
            return error.args[0]  # attrs' validators add the attribute and the value
        return str(error)
    return format_exception(error, expected)


def _locate(source: str, reason: str) -> str:
    """'expected int @ .limits.port' -> 'amqpd.yaml: limits.port: expected int'.
    (Checks across keys have no path; their message names the keys.)"""
    message, _, path = reason.rpartition(" @ ")
    path = path.lstrip(".")
    return f"{source}: {path}: {message}" if path else f"{source}: {message}"


def parse(data: object, source: str) -> ServerConfig:
    """Structure already-parsed YAML; `source` names the file in error messages."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of settings")
    try:
        return _converter().structure(data, ServerConfig)
    except cattrs.BaseValidationError as error:
        reasons = cattrs.transform_error(error, path="", format_exception=_describe)
        raise ConfigError("\n".join(_locate(source, reason) for reason in reasons)) from None


def load(path: Path) -> ServerConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config file: {error.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    return parse(data, str(path))


def override(config: ServerConfig, **changes: Any) -> ServerConfig:
    """The config with command-line values (those not None) in place."""
    changes = {key: value for key, value in changes.items() if value is not None}
    return attrs.evolve(config, **changes)
