"""What a bundle is: the parsed ``qiz-bundle.toml`` of a bundle directory.

The types are plain data so that the installer, the supervisor and the TUF layer share one
description of a bundle without importing each other. Parsing (``load_bundle``) checks every
field against :mod:`qiz.deploy.limits` before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
