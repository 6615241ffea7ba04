"""The TUF target of one bundle version: a small descriptor, not the bundle's files.

A channel's targets metadata pins, for each version, the SHA-256 and length of one small file,
``<VERSION>.qizd``. That file is canonical CBOR (:mod:`qiz.wire`) of one of two kinds:

``bundle`` (a plain descriptor)
    ``{"v": 1, "kind": "bundle", "name", "version", "manifest": <qiz-bundle.toml text>,
    "content": "qizc1...", "files": [[path, size, sha256], ...]}``: the storage-pool content
    that holds the files, and each file's path, size and SHA-256, sorted by path. The installer
    checks every file against this table, so the TUF chain covers every byte installed.

``sealed`` (a pointer to a sealed descriptor)
    ``{"v": 1, "kind": "sealed", "content": "qizc1...", "sha256": <32 bytes>}``: the descriptor
    itself is stored as content sealed to the recipients, and the pointer names its content id
    and the SHA-256 of the descriptor's bytes. The metadata (and the pointer, which anyone
    fetching the channel can read) then reveal no file name, size, hash or manifest: only the
    channel name, the version strings and that a version exists. A recipient opens the content,
    checks the hash, and reads the descriptor; any other node gets :class:`SealedToOthers`.

Why a descriptor rather than one TUF target per file: the files already live in the storage
pool, content-addressed and Merkle-checked; one pinned descriptor per version keeps targets
metadata small (one entry per version) and lets the same bytes be sealed as a unit.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qiz import wire
from qiz.crypto.errors import InvalidIdentifier
from qiz.crypto.ids import ContentId
from qiz.deploy import limits
from qiz.deploy.bundle import MANIFEST_NAME, BundleSpec, check_name, check_version, parse_bundle
from qiz.deploy.errors import BundleError, MalformedMetadata, SealedToOthers, TamperedTarget
from qiz.fsio import FileTooLarge, read_bounded

FORMAT = 1
TARGET_SUFFIX = ".qizd"
SHA256_SIZE = 32


def target_path(version: str) -> str:
    """The TUF target path of a version's descriptor."""
    return f"{check_version(version)}{TARGET_SUFFIX}"


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    sha256: bytes
    executable: bool = False  # installed 0555 (else 0444): a command may be ./run.sh


@dataclass(frozen=True)
class Descriptor:
    """What a follower learns about a version once the TUF chain verified it."""

    name: str
    version: str
    manifest: str  # the qiz-bundle.toml text
    content: str  # the storage-pool content id (qizc1...) holding the files
    files: tuple[FileEntry, ...]

    def spec(self) -> BundleSpec:
        """The parsed manifest (its name and version agree with the descriptor's)."""
        return parse_bundle(self.manifest)

    def to_bytes(self) -> bytes:
        return wire.encode(
            {
                "v": FORMAT,
                "kind": "bundle",
                "name": self.name,
                "version": self.version,
                "manifest": self.manifest,
                "content": self.content,
                "files": [[f.path, f.size, f.sha256, f.executable] for f in self.files],
            }
        )


@dataclass(frozen=True)
class SealedPointer:
    """The target of a sealed version: where its sealed descriptor is, and what it hashes to."""

    content: str
    sha256: bytes

    def to_bytes(self) -> bytes:
        return wire.encode(
            {"v": FORMAT, "kind": "sealed", "content": self.content, "sha256": self.sha256}
        )


def seal_pointer(content: str, descriptor: Descriptor) -> SealedPointer:
    """The pointer for ``descriptor`` stored as sealed content ``content``."""
    _cid(content)
    return SealedPointer(content, hashlib.sha256(descriptor.to_bytes()).digest())


def _bad(message: str) -> MalformedMetadata:
    return MalformedMetadata(f"refused a malformed bundle descriptor: {message}")


def _cid(text: object) -> str:
    if not isinstance(text, str):
        raise _bad("its content id is not text")
    try:
        ContentId.parse(text)
    except InvalidIdentifier as exc:
        raise _bad(f"its content id is invalid ({exc})") from None
    return text


def check_file_path(path: object) -> str:
    """A file path inside a bundle: relative, '/'-separated, no '.', '..' or empty parts."""
    if not isinstance(path, str) or not path:
        raise ValueError("a file path is non-empty text")
    if len(path.encode("utf-8", "surrogatepass")) > limits.MAX_FILE_PATH_BYTES:
        raise ValueError(f"a file path is at most {limits.MAX_FILE_PATH_BYTES} bytes")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts) or "\\" in path or "\x00" in path:
        raise ValueError(f"file path {path[:80]!r} is not a plain relative path")
    return path


def _files(value: object) -> tuple[FileEntry, ...]:
    if not isinstance(value, list) or len(value) > limits.MAX_BUNDLE_FILES:
        raise _bad(f"its file list is not a list of at most {limits.MAX_BUNDLE_FILES}")
    files = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 4):
            raise _bad("a file entry is not [path, size, sha256, executable]")
        path, size, digest, executable = item
        try:
            check_file_path(path)
        except ValueError as exc:
            raise _bad(str(exc)) from None
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < 2**63:
            raise _bad(f"file {path!r} has a bad size")
        if not isinstance(digest, bytes) or len(digest) != SHA256_SIZE:
            raise _bad(f"file {path!r} has a bad sha256")
        if not isinstance(executable, bool):
            raise _bad(f"file {path!r} has no executable flag (true or false)")
        files.append(FileEntry(path, size, digest, executable))
    paths = [f.path for f in files]
    if paths != sorted(set(paths)):
        raise _bad("its files are not sorted by path without duplicates")
    if MANIFEST_NAME not in paths:
        raise _bad(f"it lists no {MANIFEST_NAME}")
    return tuple(files)


def decode_target(data: bytes) -> Descriptor | SealedPointer:
    """Parse a version's target bytes (already pinned by TUF: a malformed one is the
    publisher's bug or a compromised targets key, refused all the same)."""
    try:
        doc = wire.decode(data, max_size=limits.MAX_DESCRIPTOR_BYTES, what="bundle descriptor")
    except wire.WireError as exc:
        raise _bad(str(exc)) from None
    if not isinstance(doc, dict) or doc.get("v") != FORMAT:
        raise _bad("unknown format")
    kind = doc.get("kind")
    if kind == "sealed":
        if set(doc) != {"v", "kind", "content", "sha256"}:
            raise _bad("unexpected fields in a sealed pointer")
        digest = doc["sha256"]
        if not isinstance(digest, bytes) or len(digest) != SHA256_SIZE:
            raise _bad("a sealed pointer's sha256 is not 32 bytes")
        return SealedPointer(_cid(doc["content"]), digest)
    if kind != "bundle":
        raise _bad(f"unknown kind {kind!r}")
    if set(doc) != {"v", "kind", "name", "version", "manifest", "content", "files"}:
        raise _bad("unexpected or missing fields")
    manifest = doc["manifest"]
    if not isinstance(manifest, str):
        raise _bad("its manifest is not text")
    try:
        name, version = check_name(doc["name"]), check_version(doc["version"])
        spec = parse_bundle(manifest)
    except BundleError as exc:
        raise _bad(str(exc)) from None
    if (spec.name, spec.version) != (name, version):
        raise _bad(f"its manifest is {spec.name} {spec.version}, not {name} {version}")
    return Descriptor(name, version, manifest, _cid(doc["content"]), _files(doc["files"]))


def open_target(
    data: bytes, open_sealed: Callable[[str], bytes] | None, *, version: str
) -> Descriptor:
    """The descriptor ``data`` is or points to. ``open_sealed(cid)`` returns the plaintext of
    sealed content this node is a recipient of and raises :class:`SealedToOthers` otherwise."""
    target = decode_target(data)
    if isinstance(target, SealedPointer):
        if open_sealed is None:
            raise SealedToOthers(
                f"refused version {version}: it is sealed to its recipients and this node "
                "cannot open sealed content here"
            )
        plain = open_sealed(target.content)
        if hashlib.sha256(plain).digest() != target.sha256:
            raise TamperedTarget(
                f"refused version {version}: its sealed descriptor does not hash to what the "
                "signed pointer pins"
            )
        inner = decode_target(plain)
        if not isinstance(inner, Descriptor):
            raise _bad("a sealed pointer points to another pointer")
        target = inner
    if target.version != version:
        raise TamperedTarget(
            f"refused version {version}: its descriptor describes version {target.version}"
        )
    return target


def describe_directory(directory: Path, content: str) -> Descriptor:
    """The descriptor of a bundle directory whose files are stored as ``content``: every regular
    file (symlinks, devices and FIFOs refused), hashed, sorted by path."""
    root = Path(directory)
    spec_path = root / MANIFEST_NAME
    files: list[FileEntry] = []
    manifest = None
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = Path(dirpath) / name
            info = full.lstat()
            if stat.S_ISDIR(info.st_mode):
                continue
            rel = full.relative_to(root).as_posix()
            if not stat.S_ISREG(info.st_mode):
                raise BundleError(f"{rel} in the bundle is not a regular file (symlink or device)")
            try:
                check_file_path(rel)
            except ValueError as exc:
                raise BundleError(str(exc)) from None
            if len(files) >= limits.MAX_BUNDLE_FILES:
                raise BundleError(f"a bundle holds at most {limits.MAX_BUNDLE_FILES} files")
            digest = hashlib.sha256()
            with open(full, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
            executable = bool(info.st_mode & stat.S_IXUSR)
            files.append(FileEntry(rel, info.st_size, digest.digest(), executable))
            if full == spec_path:
                try:
                    manifest = read_bounded(full, limits.MAX_MANIFEST_BYTES, MANIFEST_NAME)
                except FileTooLarge:
                    raise BundleError(
                        f"{MANIFEST_NAME} is over the {limits.MAX_MANIFEST_BYTES}-byte limit"
                    ) from None
    if manifest is None:
        raise BundleError(f"{directory} has no {MANIFEST_NAME}")
    spec = parse_bundle(manifest)  # bytes: size-checked and decoded as UTF-8 there
    files.sort(key=lambda f: f.path)
    return Descriptor(
        spec.name, spec.version, manifest.decode("utf-8"), _cid(content), tuple(files)
    )


def to_json(descriptor: Descriptor) -> dict[str, Any]:
    """A JSON-friendly view (for --json faces)."""
    return {
        "name": descriptor.name,
        "version": descriptor.version,
        "content": descriptor.content,
        "files": [
            {"path": f.path, "size": f.size, "sha256": f.sha256.hex()} for f in descriptor.files
        ],
    }
