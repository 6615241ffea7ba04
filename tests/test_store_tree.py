"""Scanning a path to put and unpacking a stream (qiz/store/tree.py): only regular files and
directories are stored, paths follow the rules, and a get writes only inside a fresh temp
beside its target, renamed into place at the end."""

from __future__ import annotations

import itertools
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qiz.store import tree
from qiz.store.tree import (
    BOOT_TAG,
    TEMP_NAME,
    TargetExists,
    TreeEntry,
    TreeError,
    Unpacker,
    UnpackError,
    check_path,
    parse_entries,
    remove_stale_temps,
    safe_target,
    scan,
)

# ----------------------------------------------------------------------------- scan


def test_a_single_file_is_a_file_content_named_by_its_base_name(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_bytes(b"12345")
    path.chmod(0o755)
    found = scan(path)
    assert found.kind == "file"
    assert found.entries == (TreeEntry("f", "results.json", 5, True),)
    assert found.size == 5 and found.name == "results.json"
    assert [(f.path, f.source, f.size) for f in found.files] == [("results.json", path, 5)]


def test_a_directory_lists_files_in_utf8_byte_order_and_keeps_empty_dirs(tmp_path: Path) -> None:
    root = tmp_path / "d"
    names = ["B", "a", "a-b", "a.txt", "é", "z", "sub/x", "sub/y/deep"]
    for rel in names:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(rel.encode())
    (root / "empty").mkdir()
    (root / "outer" / "inner").mkdir(parents=True)
    found = scan(root)
    assert found.kind == "dir" and found.name == "d"
    paths = [e.path for e in found.entries]
    assert paths == sorted(paths, key=str.encode)
    assert ("d", "empty") in {(e.type, e.path) for e in found.entries}
    assert ("d", "outer/inner") in {(e.type, e.path) for e in found.entries}
    assert "outer" not in paths  # a parent of an entry is implied
    assert [f.path for f in found.files] == sorted(names, key=str.encode)
    assert found.size == sum(len(n.encode()) for n in names)


def test_an_empty_directory_is_an_empty_dir_content(tmp_path: Path) -> None:
    (tmp_path / "e").mkdir()
    found = scan(tmp_path / "e")
    assert (found.kind, found.entries, found.size) == ("dir", (), 0)


def test_a_symlink_is_refused_even_when_it_points_inside(tmp_path: Path) -> None:
    root = tmp_path / "d"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "real").write_bytes(b"x")
    (root / "sub" / "link").symlink_to("real")
    with pytest.raises(TreeError, match=r"sub/link: it is a symbolic link"):
        scan(root)


def test_a_symlink_given_as_the_path_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(TreeError, match=r"link: it is a symbolic link"):
        scan(tmp_path / "link")


def test_a_fifo_is_refused(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    os.mkfifo(tmp_path / "d" / "pipe")
    with pytest.raises(TreeError, match=r"d/pipe: it is a named pipe"):
        scan(tmp_path / "d")


def test_a_socket_is_refused(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tmp_path / "d" / "sock"))
        with pytest.raises(TreeError, match=r"d/sock: it is a socket"):
            scan(tmp_path / "d")
    finally:
        sock.close()


def test_a_device_is_refused() -> None:
    devices = [p for p in ("/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
               if os.path.exists(p) and stat.S_ISCHR(os.lstat(p).st_mode)]  # fmt: skip
    if not devices:
        pytest.skip("no character device here")
    with pytest.raises(TreeError, match=rf"{devices[0]}: it is a device"):
        scan(Path(devices[0]))


def test_a_missing_path_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(TreeError, match=r"cannot store .*nothing: No such file"):
        scan(tmp_path / "nothing")


def test_a_path_over_the_limit_is_refused_naming_it(tmp_path: Path) -> None:
    deep = tmp_path / "d"
    for _ in range(6):
        deep = deep / ("p" * 200)
    deep.mkdir(parents=True)
    (deep / "f").write_bytes(b"x")
    with pytest.raises(TreeError, match=r"cannot store .*pppp.*not 1 to 1024 bytes"):
        scan(tmp_path / "d")


@pytest.mark.parametrize(
    ("name", "message"), [("a\\b", "backslash"), (os.fsdecode(b"bad\xff"), "not valid UTF-8")]
)
def test_names_the_format_cannot_carry_are_refused(tmp_path: Path, name: str, message: str) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / name).write_bytes(b"x")
    with pytest.raises(TreeError, match=message):
        scan(tmp_path / "d")


def test_too_many_entries_are_refused_while_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tree, "MAX_TREE_ENTRIES", 5)
    (tmp_path / "d").mkdir()
    for i in range(6):
        (tmp_path / "d" / str(i)).write_bytes(b"")
    with pytest.raises(TreeError, match="over 5 entries"):
        scan(tmp_path / "d")


def test_content_over_the_size_limit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tree, "MAX_CONTENT", 10)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_bytes(b"x" * 6)
    (tmp_path / "d" / "b").write_bytes(b"x" * 6)
    with pytest.raises(TreeError, match="over the 10-byte limit"):
        scan(tmp_path / "d")


# ----------------------------------------------------------------------------- unpack

ENTRIES = (
    TreeEntry("f", "a.txt", 5, False),
    TreeEntry("d", "empty"),
    TreeEntry("f", "run.sh", 0, True),
    TreeEntry("f", "sub/deep/x", 7, True),
    TreeEntry("f", "sub/y", 3, False),
)
STREAM = b"hello" + b"" + b"1234567" + b"abc"


def unpack(target: Path, kind: str, entries: tuple[TreeEntry, ...], stream: bytes, **kw) -> Path:
    with Unpacker(target, kind, entries, **kw) as unpacker:
        for i in range(0, len(stream), 4):  # pieces that span files
            unpacker.write(stream[i : i + 4])
        return unpacker.finish()


def temps(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if TEMP_NAME.match(p.name)]


def test_a_directory_unpacks_with_its_empty_dirs_and_modes(tmp_path: Path) -> None:
    out = unpack(tmp_path / "out", "dir", ENTRIES, STREAM)
    assert out == tmp_path / "out"
    assert (out / "a.txt").read_bytes() == b"hello"
    assert (out / "empty").is_dir() and not list((out / "empty").iterdir())
    assert (out / "run.sh").read_bytes() == b""
    assert (out / "sub" / "deep" / "x").read_bytes() == b"1234567"
    assert (out / "sub" / "y").read_bytes() == b"abc"
    assert os.stat(out / "run.sh").st_mode & stat.S_IXUSR
    assert os.stat(out / "sub" / "deep" / "x").st_mode & stat.S_IXUSR
    assert not os.stat(out / "a.txt").st_mode & stat.S_IXUSR
    assert os.listdir(tmp_path) == ["out"]


def test_a_scanned_tree_round_trips(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "x" / "y").mkdir(parents=True)
    (src / "x" / "f").write_bytes(os.urandom(1000))
    (src / "g").write_bytes(b"")
    (src / "e").mkdir()
    found = scan(src)
    stream = b"".join(f.source.read_bytes() for f in found.files)
    out = unpack(tmp_path / "out", found.kind, found.entries, stream)
    assert scan(out).entries == found.entries
    assert subprocess.run(["diff", "-r", src, out], check=False).returncode == 0


def test_a_file_unpacks_with_its_executable_bit(tmp_path: Path) -> None:
    entry = (TreeEntry("f", "tool", 4, True),)
    out = unpack(tmp_path / "renamed", "file", entry, b"#!sh")
    assert out.read_bytes() == b"#!sh"
    assert os.stat(out).st_mode & stat.S_IXUSR
    assert os.listdir(tmp_path) == ["renamed"]


def test_nothing_is_at_the_target_until_finish(tmp_path: Path) -> None:
    unpacker = Unpacker(tmp_path / "out", "dir", ENTRIES)
    unpacker.write(STREAM)
    assert not (tmp_path / "out").exists()
    [name] = temps(tmp_path)
    assert name.startswith(f".qiz-get-{BOOT_TAG}-{os.getpid()}-") and name.endswith(".part")
    assert unpacker.temp.parent == tmp_path  # beside the target: the same file system
    unpacker.finish()
    assert temps(tmp_path) == []


def test_abort_removes_the_temp_and_touches_nothing(tmp_path: Path) -> None:
    for kind, entries in (("dir", ENTRIES), ("file", (TreeEntry("f", "f", 5, False),))):
        unpacker = Unpacker(tmp_path / kind, kind, entries)
        unpacker.write(b"hel")
        unpacker.abort()
        unpacker.abort()  # idempotent
    assert os.listdir(tmp_path) == []


def test_an_existing_target_is_refused_unless_forced(tmp_path: Path) -> None:
    (tmp_path / "out").write_bytes(b"keep me")
    with pytest.raises(TargetExists, match="exists; refusing to overwrite it"):
        Unpacker(tmp_path / "out", "dir", ENTRIES)
    assert (tmp_path / "out").read_bytes() == b"keep me"
    out = unpack(tmp_path / "out", "file", (TreeEntry("f", "f", 2, False),), b"hi", force=True)
    assert out.read_bytes() == b"hi"
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "old.txt").write_bytes(b"old")
    out = unpack(tmp_path / "tree", "dir", ENTRIES, STREAM, force=True)
    assert (out / "a.txt").read_bytes() == b"hello" and not (out / "old.txt").exists()
    assert sorted(os.listdir(tmp_path)) == ["out", "tree"]


def test_a_target_that_appears_during_the_get_is_not_replaced(tmp_path: Path) -> None:
    for kind, entries, stream in (("file", (TreeEntry("f", "f", 2, False),), b"hi"),
                                  ("dir", ENTRIES, STREAM)):  # fmt: skip
        target = tmp_path / kind
        unpacker = Unpacker(target, kind, entries)
        unpacker.write(stream)
        target.mkdir()
        (target / "theirs").write_bytes(b"x")
        with pytest.raises(TargetExists):
            unpacker.finish()
        unpacker.abort()
        assert os.listdir(target) == ["theirs"]
    assert temps(tmp_path) == []


def test_a_stream_longer_or_shorter_than_its_tree_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnpackError, match="longer than its tree"):
        unpack(tmp_path / "a", "dir", ENTRIES, STREAM + b"!")
    with pytest.raises(UnpackError, match="ended 1 bytes early"):
        unpack(tmp_path / "b", "dir", ENTRIES, STREAM[:-1])
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("path", ["../escape", "/abs", "a/../../b", "a\\..\\b"])
def test_hostile_paths_are_refused_before_anything_is_written(tmp_path: Path, path: str) -> None:
    with pytest.raises(TreeError):
        Unpacker(tmp_path / "out", "dir", (TreeEntry("f", path, 1, False),))
    assert os.listdir(tmp_path) == []


def test_safe_target_refuses_a_symlink_on_the_way(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "root" / "sub").symlink_to(tmp_path / "elsewhere")
    assert safe_target(tmp_path / "root", "a/b") == tmp_path / "root" / "a" / "b"
    with pytest.raises(UnpackError, match="sub is a symbolic link"):
        safe_target(tmp_path / "root", "sub/x")
    with pytest.raises(TreeError, match=r"'\.\.' component"):
        safe_target(tmp_path / "root", "../x")


def test_a_missing_parent_directory_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(UnpackError, match="is not a directory"):
        Unpacker(tmp_path / "no" / "out", "dir", ENTRIES)


CRASH = """
import os, sys
from pathlib import Path
from qiz.store.tree import TreeEntry, Unpacker
u = Unpacker(Path(sys.argv[1]), "file", (TreeEntry("f", "f", 10, False),))
u.write(b"12345")
os._exit(9)
"""


def test_a_killed_get_leaves_only_a_recognisable_temp_that_is_cleaned(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-c", CRASH, str(tmp_path / "out")], check=False)
    [name] = temps(tmp_path)
    assert name.endswith(".part") and not (tmp_path / "out").exists()
    live = Unpacker(tmp_path / "other", "dir", ENTRIES)  # a get still running here
    # a forced get's saved target and another host's temps are never judged by our pids
    old = tmp_path / ".qiz-get-{}-999999-{}.old".format(BOOT_TAG, "0" * 12)
    old.write_bytes(b"the user's previous file")
    elsewhere = tmp_path / ".qiz-get-{}-999999-{}.part".format(
        "f" * 8 if BOOT_TAG != "f" * 8 else "e" * 8, "0" * 12
    )
    elsewhere.write_bytes(b"another host's get, still running")
    assert remove_stale_temps(tmp_path) == [tmp_path / name]
    assert sorted(temps(tmp_path)) == sorted([live.temp.name, old.name, elsewhere.name])
    live.abort()


def test_force_replaces_only_a_target_of_the_same_kind(tmp_path: Path) -> None:
    folder = tmp_path / "Downloads"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    with pytest.raises(TargetExists, match="--force replaces only a target of the same kind"):
        Unpacker(folder, "file", (TreeEntry("f", "f", 3, False),), force=True)
    plain = tmp_path / "plain.txt"
    plain.write_text("a file")
    with pytest.raises(TargetExists, match="the content is a dir"):
        Unpacker(plain, "dir", ENTRIES, force=True)
    assert (folder / "thesis.tex").read_text() == "years of work"
    assert plain.read_text() == "a file"
    assert temps(tmp_path) == []


# ----------------------------------------------------------------------------- properties

path_text = st.lists(
    st.sampled_from(["a", "é", ".", "..", "", "/", "\\", "\x00", "b c", "x" * 300]),
    max_size=8,
).map("".join) | st.text(max_size=40)


@given(path=path_text)
def test_a_path_is_accepted_only_when_every_rule_holds(path: str) -> None:
    try:
        raw = check_path(path)
    except TreeError:
        return
    parts = raw.split(b"/")
    assert 0 < len(raw) <= 1024
    assert all(0 < len(p) <= 255 and p not in (b".", b"..") for p in parts)
    assert b"\x00" not in raw and b"\\" not in raw


cbor_ish = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 2**64) | st.text(max_size=6)
    | st.sampled_from(["f", "d", "a", "a/b", ".."]) | st.binary(max_size=4),
    lambda inner: st.lists(inner, max_size=5),
    max_leaves=16,
)  # fmt: skip


@given(value=cbor_ish, size=st.integers(0, 10))
def test_random_trees_raise_only_tree_error(value: object, size: int) -> None:
    for kind in ("file", "dir"):
        try:
            entries = parse_entries(value, kind, size)
        except TreeError:
            continue
        assert sum(e.size for e in entries if e.type == "f") == size


@given(
    sizes=st.lists(st.integers(0, 300), min_size=1, max_size=6),
    cuts=st.lists(st.integers(0, 2000), max_size=12),
)
def test_write_many_puts_every_byte_in_its_file_whatever_the_split(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], cuts: list[int]
) -> None:
    """What a get's writer thread calls (one writev per file): any batching of the stream,
    pieces spanning files and empty files included, yields the same files."""
    base = tmp_path_factory.mktemp("many")
    entries = tuple(TreeEntry("f", f"f{i}", size, False) for i, size in enumerate(sizes))
    stream = os.urandom(sum(sizes))
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    pieces = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    with Unpacker(base / "out", "dir", entries) as unpacker:
        for at in range(0, len(pieces), 3):
            unpacker.write_many(pieces[at : at + 3])
        out = unpacker.finish()
    at = 0
    for i, size in enumerate(sizes):
        assert (out / f"f{i}").read_bytes() == stream[at : at + size]
        at += size


def test_write_many_refuses_a_stream_longer_than_its_tree(tmp_path: Path) -> None:
    with (
        pytest.raises(UnpackError, match="longer than its tree"),
        Unpacker(tmp_path / "out", "dir", ENTRIES) as unpacker,
    ):
        unpacker.write_many([STREAM, b"!"])
    assert os.listdir(tmp_path) == []
