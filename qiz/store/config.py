"""The ``[store]`` table of config.toml: whether this node takes part in the storage pool, how
much it holds for others, and how often its owner-side upkeep runs.

The holder's limits are here rather than in constants because they are the owner's choice of
how much disk to lend; the protocol's own bounds (pieces, leases, manifests) are in
:mod:`qiz.store.limits`. The byte limit is a ceiling: the holder also keeps the disk's free
space in mind when it decides (:meth:`qiz.store.holdings.Holdings.capacity`), at each offer,
not once at start, since other programs fill the same disk.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from qiz import QizError
from qiz.store.limits import MAX_LEASE

GIB = 1 << 30
DAY = 86_400.0


class StoreConfigError(QizError):
    """A ``[store]`` setting in config.toml is not usable; the message names it."""


@dataclass
class StoreConfig:
    enabled: bool = True
    # bytes this node holds for all peers together (columns, tables; manifests are small)
    max_bytes: int = 8 * GIB
    # bytes one peer's leases and pending offers may take: no one owner fills the node
    per_peer_bytes: int = 1 * GIB
    # leases plus pending offers of one peer: bounds the rows one peer adds
    max_leases_per_peer: int = 4096
    # what an owner asks its holders for (a holder grants at most MAX_LEASE)
    lease_seconds: float = 7 * DAY
    renew_every: float = 3600.0
    repair_every: float = 3600.0
    collect_every: float = 600.0
    k: int = 3
    n: int = 5

    @classmethod
    def from_table(cls, table: object) -> StoreConfig:
        """Read ``[store]``: known keys only (a typo is refused, not ignored, since a
        misspelt quota would silently lend the default), each with its type and bounds."""
        if not isinstance(table, dict):
            raise StoreConfigError("config.toml: [store] must be a table")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(key) for key in table if key not in known)
        if unknown:
            raise StoreConfigError(
                f"config.toml: store.{unknown[0][:64]} is not a [store] setting "
                f"(known: {', '.join(sorted(known))})"
            )
        config = cls()
        for name, value in table.items():
            setattr(config, name, _check(name, value))
        config.validate()
        return config

    def validate(self) -> None:
        """The settings taken together: a code path that builds a config by hand gets the
        same checks as config.toml."""
        for f in fields(self):
            _check(f.name, getattr(self, f.name))
        if not 1 <= self.k <= self.n:
            raise StoreConfigError("config.toml: store.k must be between 1 and store.n")
        granted = min(self.lease_seconds, MAX_LEASE)  # what a holder grants at most
        if self.renew_every >= granted:
            raise StoreConfigError(
                f"config.toml: store.renew_every must be shorter than the lease a holder "
                f"grants ({granted:g} s: store.lease_seconds, at most {MAX_LEASE} s), "
                "otherwise leases lapse between renewals"
            )


# name -> (kind, lowest, highest): the bounds config.toml may set
BOUNDS: dict[str, tuple[type, float, float]] = {
    "enabled": (bool, 0, 1),
    "max_bytes": (int, 0, 1 << 50),
    "per_peer_bytes": (int, 0, 1 << 50),
    "max_leases_per_peer": (int, 0, 1 << 20),
    "lease_seconds": (float, 60.0, 366 * DAY),
    "renew_every": (float, 1.0, 30 * DAY),
    "repair_every": (float, 1.0, 30 * DAY),
    "collect_every": (float, 1.0, DAY),
    "k": (int, 1, 16),
    "n": (int, 1, 16),
}


def _check(name: str, value: object) -> object:
    kind, low, high = BOUNDS[name]
    if kind is bool:
        if not isinstance(value, bool):
            raise StoreConfigError(f"config.toml: store.{name} must be true or false")
        return value
    whole = kind is int
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (whole and not isinstance(value, int))
        or not low <= value <= high
    ):
        what = "a whole number" if whole else "a number"
        raise StoreConfigError(
            f"config.toml: store.{name} must be {what} from {_bound(low)} to {_bound(high)}"
        )
    return kind(value)


def _bound(value: float) -> str:
    """A bound as a person writes it: 1125899906842624, not 1.1259e+15; 0.5 stays 0.5."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
