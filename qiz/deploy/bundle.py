"""What a bundle is: the parsed ``qiz-bundle.toml`` of a bundle directory.

The types are plain data so that the installer, the supervisor and the TUF layer share one
description of a bundle without importing each other. Parsing (``load_bundle``) checks every
field against :mod:`qiz.deploy.limits` before anything runs.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from qiz.deploy import limits
from qiz.deploy.errors import BundleError
from qiz.fsio import FileTooLarge, read_bounded

MANIFEST_NAME = "qiz-bundle.toml"


@dataclass(frozen=True)
class ResourceLimits:
    """Applied to the child with setrlimit before it runs (None: the node's default bound)."""

    memory_mb: int | None = None  # RLIMIT_AS
    cpu_seconds: int | None = None  # RLIMIT_CPU
    open_files: int | None = None  # RLIMIT_NOFILE


@dataclass(frozen=True)
class HealthCheck:
    """A command run in the bundle's directory; exit 0 means healthy.

    A started version is healthy once one check passes after ``start_period``; it has failed
    after ``retries`` consecutive failures.
    """

    command: tuple[str, ...]
    interval: float = 5.0
    timeout: float = 5.0
    start_period: float = 2.0
    retries: int = 3


@dataclass(frozen=True)
class RestartPolicy:
    """systemd-like: restart on failure with exponential backoff; a crash loop (``max_starts``
    starts within ``window`` seconds without becoming healthy/stable) triggers a rollback."""

    mode: str = "on-failure"  # "on-failure" | "always" | "never"
    backoff: float = 1.0
    backoff_max: float = 30.0
    max_starts: int = 3
    window: float = 60.0


@dataclass(frozen=True)
class BundleSpec:
    """Exactly one of ``command`` (argv, run in the install directory) and ``job`` (the path,
    inside the bundle, of a job spec a "quantum container" submits to the mesh) is set."""

    name: str
    version: str
    command: tuple[str, ...] | None = None
    job: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    limits: ResourceLimits = ResourceLimits()
    health: HealthCheck | None = None
    restart: RestartPolicy = RestartPolicy()


# --- parsing qiz-bundle.toml -------------------------------------------------------------------

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]*")
VERSION_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
ENV_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# names a version directory may not take: the installer keeps these beside the versions
RESERVED_VERSIONS = frozenset({"current", "state.json", "data", "logs"})
# variables the supervisor sets itself; a bundle's [env] may not override them
RESERVED_ENV = frozenset({"PATH", "HOME", "LANG", "QIZ_BUNDLE_NAME", "QIZ_BUNDLE_VERSION"})
RESTART_MODES = ("on-failure", "always", "never")

_TOP = ("name", "version", "command", "job", "env", "limits", "health", "restart")
_LIMITS = ("memory_mb", "cpu_seconds", "open_files")
_HEALTH = ("command", "interval", "timeout", "start_period", "retries")
_RESTART = ("mode", "backoff", "backoff_max", "max_starts", "window")


def _fail(message: str) -> NoReturn:
    raise BundleError(f"{MANIFEST_NAME}: {message}")


def _table(value: object, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        _fail(f"{where} must be a table")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        _fail(f"unknown key {unknown[0]!r} in {where} (allowed: {', '.join(allowed)})")
    return value


def _text(value: object, where: str, max_bytes: int, pattern: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str):
        _fail(f"{where} must be a string")
    if not value or len(value.encode("utf-8", "surrogatepass")) > max_bytes:
        _fail(f"{where} must be 1 to {max_bytes} bytes")
    if pattern is not None and not pattern.fullmatch(value):
        _fail(f"{where} {value[:max_bytes]!r} must match {pattern.pattern}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value) or "\x00" in value:
        _fail(f"{where} holds a control character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        _fail(f"{where} is not valid Unicode")
    return value


def check_name(value: object, where: str = "name") -> str:
    """A bundle (and channel) name: lowercase letters, digits, ``._-``; safe as a directory."""
    return _text(value, where, limits.MAX_NAME_BYTES, NAME_PATTERN)


def check_version(value: object, where: str = "version") -> str:
    """A version string: safe as one directory name, and not one the installer reserves."""
    version = _text(value, where, limits.MAX_VERSION_BYTES, VERSION_PATTERN)
    if version in RESERVED_VERSIONS:
        _fail(f"{where} {version!r} is reserved (the installer keeps a file of that name)")
    return version


def _argv(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        _fail(f"{where} must be a non-empty array of strings (argv)")
    if len(value) > limits.MAX_COMMAND_ARGS:
        _fail(f"{where} has {len(value)} entries, over {limits.MAX_COMMAND_ARGS}")
    return tuple(_text(arg, f"{where}[{i}]", limits.MAX_ARG_BYTES) for i, arg in enumerate(value))


def _int(value: object, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(f"{where} must be an integer")
    if not low <= value <= high:
        _fail(f"{where} must be between {low} and {high}, got {value}")
    return value


def _seconds(value: object, where: str, low: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(f"{where} must be a number of seconds")
    if not math.isfinite(value) or not low <= value <= limits.MAX_SECONDS:
        _fail(f"{where} must be between {low} and {limits.MAX_SECONDS:g} seconds")
    return float(value)


def _env(value: object) -> dict[str, str]:
    table = value if isinstance(value, dict) else _fail("[env] must be a table of strings")
    if len(table) > limits.MAX_ENV_VARS:
        _fail(f"[env] has {len(table)} entries, over {limits.MAX_ENV_VARS}")
    env = {}
    for key, item in table.items():
        _text(key, "an [env] name", limits.MAX_ENV_BYTES, ENV_NAME_PATTERN)
        if key in RESERVED_ENV:
            _fail(f"[env] may not set {key} (the supervisor sets it)")
        if not isinstance(item, str):
            _fail(f"env.{key} must be a string")
        if len(item.encode("utf-8", "surrogatepass")) > limits.MAX_ENV_BYTES or "\x00" in item:
            _fail(f"env.{key} must be at most {limits.MAX_ENV_BYTES} bytes without NUL")
        env[key] = item
    return env


def _limits(value: object) -> ResourceLimits:
    table = _table(value, "[limits]", _LIMITS)
    bounds = {
        "memory_mb": limits.MAX_MEMORY_MB,
        "cpu_seconds": limits.MAX_CPU_SECONDS,
        "open_files": limits.MAX_OPEN_FILES,
    }
    return ResourceLimits(**{k: _int(v, f"limits.{k}", 1, bounds[k]) for k, v in table.items()})


def _health(value: object) -> HealthCheck:
    table = _table(value, "[health]", _HEALTH)
    if "command" not in table:
        _fail("[health] needs a command")
    fields: dict[str, Any] = {"command": _argv(table["command"], "health.command")}
    if "interval" in table:
        low = limits.MIN_HEALTH_INTERVAL
        fields["interval"] = _seconds(table["interval"], "health.interval", low=low)
    if "timeout" in table:
        fields["timeout"] = _seconds(table["timeout"], "health.timeout", low=0.01)
    if "start_period" in table:
        fields["start_period"] = _seconds(table["start_period"], "health.start_period")
    if "retries" in table:
        fields["retries"] = _int(table["retries"], "health.retries", 1, limits.MAX_RETRIES)
    return HealthCheck(**fields)


def _restart(value: object) -> RestartPolicy:
    table = _table(value, "[restart]", _RESTART)
    fields: dict[str, Any] = {}
    if "mode" in table:
        if table["mode"] not in RESTART_MODES:
            _fail(f"restart.mode must be one of {', '.join(RESTART_MODES)}")
        fields["mode"] = table["mode"]
    for key in ("backoff", "backoff_max", "window"):
        if key in table:
            fields[key] = _seconds(table[key], f"restart.{key}", low=0.01)
    if "max_starts" in table:
        fields["max_starts"] = _int(
            table["max_starts"], "restart.max_starts", 1, limits.MAX_RESTART_STARTS
        )
    policy = RestartPolicy(**fields)
    if policy.backoff > policy.backoff_max:
        _fail("restart.backoff must not exceed restart.backoff_max")
    return policy


def _job_path(value: object) -> str:
    path = _text(value, "job", limits.MAX_JOB_PATH_BYTES)
    parts = path.split("/")
    if path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts):
        _fail(f"job {path!r} must be a relative path inside the bundle (no '..', no '/' first)")
    return path


def parse_bundle(text: str | bytes) -> BundleSpec:
    """The bundle a ``qiz-bundle.toml`` describes; :class:`BundleError` (one line) for anything
    missing, unknown, of the wrong type or out of bounds."""
    if isinstance(text, bytes):
        if len(text) > limits.MAX_MANIFEST_BYTES:
            _fail(f"is {len(text)} bytes, over the {limits.MAX_MANIFEST_BYTES}-byte limit")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            _fail(f"is not UTF-8 (byte {exc.start})")
    if len(text.encode("utf-8", "surrogatepass")) > limits.MAX_MANIFEST_BYTES:
        _fail(f"is over the {limits.MAX_MANIFEST_BYTES}-byte limit")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        _fail(f"is not valid TOML: {str(exc).splitlines()[0]}")
    except RecursionError:
        _fail("is nested too deeply")
    table = _table(doc, "the top level", _TOP)
    for key in ("name", "version"):
        if key not in table:
            _fail(f"needs a {key}")
    if ("command" in table) == ("job" in table):
        _fail("needs exactly one of command (argv to run) and job (a job spec to submit)")
    return BundleSpec(
        name=check_name(table["name"]),
        version=check_version(table["version"]),
        command=_argv(table["command"], "command") if "command" in table else None,
        job=_job_path(table["job"]) if "job" in table else None,
        env=_env(table["env"]) if "env" in table else {},
        limits=_limits(table["limits"]) if "limits" in table else ResourceLimits(),
        health=_health(table["health"]) if "health" in table else None,
        restart=_restart(table["restart"]) if "restart" in table else RestartPolicy(),
    )


def load_bundle(directory: Path) -> BundleSpec:
    """Parse ``directory/qiz-bundle.toml`` (read with a size bound; a symlink is refused)."""
    path = Path(directory) / MANIFEST_NAME
    if path.is_symlink():
        _fail(f"{path} is a symbolic link; a bundle's manifest must be a regular file")
    try:
        data = read_bounded(path, limits.MAX_MANIFEST_BYTES, MANIFEST_NAME)
    except FileTooLarge:
        _fail(f"is over the {limits.MAX_MANIFEST_BYTES}-byte limit")
    except FileNotFoundError:
        raise BundleError(f"{directory} has no {MANIFEST_NAME}") from None
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc.strerror}") from None
    return parse_bundle(data)
