"""A node's home directory: ``config.toml`` and the identity key file.

The home is ``--home DIR``, else ``$QIZ_HOME``, else the platform's user data directory. Nothing
here ever overwrites a key file it could not read: a damaged or locked file stops the command
with one clear sentence and stays exactly as it was.

Everything in a home is its owner's alone: the directory is 0700 and its files 0600
(:meth:`Home.secure` tightens a home made looser, and says what it changed), and an identity
key that group or others could read is refused, as ssh refuses such a key, with the chmod
that fixes it: a key others could have copied is not a secret any more.
"""

from __future__ import annotations

import os
import shlex
import stat
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs
import tomli_w

from qiz import QizError
from qiz.crypto import keyfile
from qiz.crypto.errors import InvalidKey
from qiz.fsio import read_bounded, write_atomic
from qiz.identity import NodeIdentity
from qiz.identity.puzzle import generate_identity

CONFIG_NAME = "config.toml"
IDENTITY_NAME = "identity.key"
DEFAULT_LISTEN = "127.0.0.1:7450"
MAX_CONFIG_FILE = 1 << 20
MAX_IDENTITY_FILE = 2 * keyfile.MAX_SECRET  # an encrypted secret plus its header, with room
DEFAULT_PUZZLE_BITS = 8  # about 256 key generations, a tenth of a second, per identity
HOME_MODE = 0o700  # a home holds keys, tokens and databases: its owner's alone
DATA_MODE = 0o600  # every file in it (config, databases and their -wal/-shm, token, key)
PRIVATE_UMASK = 0o077  # what a node process creates files with, SQLite's side files included
# the top-level keys that are tables
TABLES = ("node", "dht", "identity", "compute", "api", "links")


class HomeError(QizError):
    """A user-facing problem with the home directory; the message is one sentence."""


@dataclass
class Config:
    """What ``config.toml`` holds. Unknown keys are kept so later versions' settings survive."""

    listen: str = DEFAULT_LISTEN
    bootstrap: list[str] = field(default_factory=list)
    puzzle_bits: int = DEFAULT_PUZZLE_BITS  # S/Kademlia id puzzle: ids must have this many
    extra: dict[str, Any] = field(default_factory=dict)

    def to_toml(self) -> bytes:
        data = dict(self.extra)
        node = dict(data.get("node", {}))
        node.update({"listen": self.listen, "bootstrap": list(self.bootstrap)})
        data["node"] = node
        data["dht"] = {**dict(data.get("dht", {})), "puzzle_bits": self.puzzle_bits}
        data.setdefault("identity", {"key_file": IDENTITY_NAME})
        return tomli_w.dumps(data).encode("utf-8")

    @classmethod
    def from_toml(cls, text: str, *, name: str) -> Config:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise HomeError(f"{name} is not valid TOML: {exc}") from None
        for table in TABLES:
            if not isinstance(data.get(table, {}), dict):
                raise HomeError(f"{name}: {table} must be a table ([{table}]), not a value")
        node = data.get("node", {})
        listen = node.get("listen", DEFAULT_LISTEN)
        bootstrap = node.get("bootstrap", [])
        if not isinstance(listen, str):
            raise HomeError(f"{name}: node.listen must be a string like '127.0.0.1:7450'")
        if not isinstance(bootstrap, list) or not all(isinstance(b, str) for b in bootstrap):
            raise HomeError(f"{name}: node.bootstrap must be a list of 'ip:port' strings")
        puzzle_bits = data.get("dht", {}).get("puzzle_bits", DEFAULT_PUZZLE_BITS)
        if (
            not isinstance(puzzle_bits, int)
            or isinstance(puzzle_bits, bool)
            or not 0 <= puzzle_bits <= 24
        ):
            raise HomeError(f"{name}: dht.puzzle_bits must be an integer from 0 to 24")
        return cls(listen=listen, bootstrap=bootstrap, puzzle_bits=puzzle_bits, extra=data)


def default_home() -> Path:
    env = os.environ.get("QIZ_HOME")
    if env:
        return Path(env)
    return Path(platformdirs.user_data_dir("qiz", appauthor=False))


def _move_aside(path: Path) -> Path:
    """Rename ``path`` to a ``.bak-<time>`` name that did not exist: ``os.link`` fails rather
    than replace, so no earlier backup is ever overwritten."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for attempt in range(1000):
        suffix = f".bak-{stamp}" + (f"-{attempt}" if attempt else "")
        target = path.with_name(path.name + suffix)
        try:
            os.link(path, target)
        except FileExistsError:
            continue
        path.unlink()
        return target
    raise HomeError(f"cannot find a free backup name for {path}")


class Home:
    """Paths and loaders for one node home."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else default_home()
        self.given = path is not None  # named on the command line: hints repeat it

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_NAME

    @property
    def identity_path(self) -> Path:
        return self.path / IDENTITY_NAME

    def exists(self) -> bool:
        return self.config_path.exists() or self.identity_path.exists()

    def init(
        self,
        *,
        passphrase: str | None = None,
        force: bool = False,
        scrypt: keyfile.ScryptParams = keyfile.DEFAULT_SCRYPT,
        identity: NodeIdentity | None = None,
    ) -> NodeIdentity:
        """Create the home with a new identity. An existing home is refused unless ``force``;
        even then the old files are renamed aside (``*.bak-<time>``), never destroyed."""
        if self.path.exists() and not self.path.is_dir():
            raise HomeError(f"{self.path} exists and is not a directory")
        if self.exists():
            if not force:
                raise HomeError(
                    f"{self.path} already holds a QIZ home; use --force to replace it "
                    "(the old files are kept as *.bak-<time>)"
                )
            for old in (self.config_path, self.identity_path):
                if old.exists():
                    _move_aside(old)
        identity = identity or generate_identity(DEFAULT_PUZZLE_BITS)
        try:
            self.path.mkdir(parents=True, exist_ok=True, mode=HOME_MODE)
            write_atomic(
                self.identity_path,
                keyfile.encode(identity.to_secret_bytes(), passphrase, scrypt),
                mode=DATA_MODE,
            )
            write_atomic(self.config_path, Config().to_toml(), mode=DATA_MODE)
        except OSError as exc:
            raise HomeError(
                f"cannot create the home at {self.path}: {exc.strerror or exc}"
            ) from None
        return identity

    def secure(self) -> list[str]:
        """Make the home 0700 and its files 0600 where they are looser (a home made by
        ``mkdir``, files of an older version); one sentence per change, for the caller to
        say once (after this, there is nothing left to change)."""
        changed: list[str] = []
        if not self.path.is_dir():
            return changed
        entries = [self.path, *self.path.iterdir()]
        for entry in entries:
            try:
                info = entry.lstat()
            except OSError:
                continue
            if stat.S_ISDIR(info.st_mode) and entry == self.path:
                wanted = HOME_MODE
            elif stat.S_ISREG(info.st_mode):
                wanted = DATA_MODE
            else:  # sockets are made 0600 by the node; links and subdirectories are left
                continue
            mode = stat.S_IMODE(info.st_mode)
            if mode & ~wanted & 0o077:  # open to group or others: take exactly that away
                private = mode & ~0o077
                try:
                    os.chmod(entry, private)
                except OSError as exc:
                    raise HomeError(
                        f"cannot make {entry} private (chmod {wanted:o}): {exc.strerror or exc}"
                    ) from None
                changed.append(f"{entry} was mode {mode:04o}; it is now {private:04o}")
        return changed

    def _require(self) -> None:
        if not self.path.is_dir() or not self.identity_path.exists():
            again = f"qiz --home {shlex.quote(str(self.path))} init" if self.given else "qiz init"
            raise HomeError(f"no QIZ home at {self.path}; create it with: {again}")

    def load_config(self) -> Config:
        self._require()
        if not self.config_path.exists():
            return Config()
        try:
            raw = read_bounded(self.config_path, MAX_CONFIG_FILE, "config file")
        except OSError as exc:
            raise HomeError(f"cannot read {self.config_path}: {exc.strerror or exc}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise HomeError(f"{self.config_path} is not UTF-8 text") from None
        return Config.from_toml(text, name=str(self.config_path))

    def identity_locked(self) -> bool:
        self._require()
        try:
            return keyfile.is_locked(self._read_identity())
        except OSError as exc:
            raise HomeError(f"cannot read {self.identity_path}: {exc.strerror or exc}") from None

    def _read_identity(self) -> bytes:
        """The key file's bytes, bounded: a key file is small, a huge one is not ours. A key
        that group or others may read or write is refused before it is read."""
        mode = stat.S_IMODE(os.stat(self.identity_path).st_mode)
        if mode & 0o077:
            raise HomeError(
                f"the identity key {self.identity_path} is open to group or others "
                f"(mode {mode:04o}) and is refused; make it private with: "
                f"chmod 600 {self.identity_path}"
            )
        return read_bounded(self.identity_path, MAX_IDENTITY_FILE, "identity key file")

    def load_identity(self, passphrase: str | None = None) -> NodeIdentity:
        """Read and unlock the identity; :class:`HomeError` or :class:`KeyFileError` otherwise."""
        self._require()
        try:
            data = self._read_identity()
        except OSError as exc:
            raise HomeError(f"cannot read {self.identity_path}: {exc.strerror or exc}") from None
        secret = keyfile.decode(data, passphrase, name=str(self.identity_path))
        try:
            return NodeIdentity.from_secret_bytes(secret)
        except InvalidKey as exc:
            raise keyfile.KeyFileError(f"{self.identity_path} is corrupted: {exc}") from None
