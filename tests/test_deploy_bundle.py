"""The qiz-bundle.toml parser: strict (unknown keys refused), every bound checked, and any
garbage a publisher's directory holds ends in one BundleError line, never a traceback."""

from __future__ import annotations

import os

import pytest
import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st

from qiz.crypto.ids import ContentId
from qiz.deploy import limits
from qiz.deploy.bundle import (
    MANIFEST_NAME,
    BundleSpec,
    HealthCheck,
    ResourceLimits,
    RestartPolicy,
    load_bundle,
    parse_bundle,
)
from qiz.deploy.errors import BundleError

FULL = """
name = "hello"
version = "1.2.0+build.7"
command = ["python3", "app.py", "--port", "8080"]

[env]
GREETING = "hi there"
EMPTY = ""

[limits]
memory_mb = 256
cpu_seconds = 60
open_files = 64

[health]
command = ["python3", "check.py"]
interval = 2
timeout = 1.5
start_period = 0
retries = 4

[restart]
mode = "always"
backoff = 0.5
backoff_max = 10
max_starts = 5
window = 30
"""


def minimal(**extra: object) -> dict:
    doc: dict = {"name": "app", "version": "1", "command": ["true"]}
    doc.update(extra)
    return doc


def parse(doc: dict) -> BundleSpec:
    return parse_bundle(tomli_w.dumps(doc))


def test_a_full_manifest_parses_into_the_shared_types():
    spec = parse_bundle(FULL)
    assert spec == BundleSpec(
        name="hello",
        version="1.2.0+build.7",
        command=("python3", "app.py", "--port", "8080"),
        env={"GREETING": "hi there", "EMPTY": ""},
        limits=ResourceLimits(memory_mb=256, cpu_seconds=60, open_files=64),
        health=HealthCheck(
            command=("python3", "check.py"), interval=2.0, timeout=1.5, start_period=0.0, retries=4
        ),
        restart=RestartPolicy(
            mode="always", backoff=0.5, backoff_max=10.0, max_starts=5, window=30.0
        ),
    )


def test_defaults_when_tables_are_left_out():
    spec = parse(minimal())
    assert spec.limits == ResourceLimits() and spec.health is None
    assert spec.restart == RestartPolicy() and spec.env == {}


def test_a_quantum_container_names_its_job_spec():
    assert (
        parse({"name": "qaoa", "version": "2", "job": "jobs/maxcut.toml"}).job == "jobs/maxcut.toml"
    )


def test_load_bundle_reads_the_directory(tmp_path):
    (tmp_path / MANIFEST_NAME).write_text(FULL)
    assert load_bundle(tmp_path).name == "hello"


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        (minimal(extra=1), "unknown key 'extra' in the top level"),
        (minimal(limits={"memory": 1}), "unknown key 'memory' in [limits]"),
        (minimal(health={"command": ["x"], "every": 1}), "unknown key 'every' in [health]"),
        (minimal(restart={"policy": "always"}), "unknown key 'policy' in [restart]"),
        ({"version": "1", "command": ["x"]}, "needs a name"),
        ({"name": "a", "command": ["x"]}, "needs a version"),
        ({"name": "a", "version": "1"}, "exactly one of command"),
        (minimal(job="x.toml"), "exactly one of command"),
        (minimal(name="Hello"), "name 'Hello' must match"),
        (minimal(name="../x"), "must match"),
        (minimal(name="a" * (limits.MAX_NAME_BYTES + 1)), "1 to 64 bytes"),
        (minimal(version=".hidden"), "version '.hidden' must match"),
        (minimal(version="current"), "reserved"),
        (minimal(version="1/2"), "must match"),
        (minimal(command=[]), "non-empty array"),
        (minimal(command="python3 app.py"), "non-empty array"),
        (minimal(command=["x"] * (limits.MAX_COMMAND_ARGS + 1)), "entries, over 64"),
        (minimal(command=["a" * (limits.MAX_ARG_BYTES + 1)]), "1 to 4096 bytes"),
        (minimal(command=[1]), "command[0] must be a string"),
        (minimal(env={"PATH": "/evil"}), "may not set PATH"),
        (minimal(env={"1X": "a"}), "must match"),
        (minimal(env={"A": 1}), "env.A must be a string"),
        (minimal(env={f"V{i}": "x" for i in range(limits.MAX_ENV_VARS + 1)}), "over 128"),
        (minimal(limits={"memory_mb": 0}), "between 1 and"),
        (minimal(limits={"memory_mb": limits.MAX_MEMORY_MB + 1}), "between 1 and"),
        (minimal(limits={"cpu_seconds": True}), "must be an integer"),
        (minimal(limits={"open_files": 1.5}), "must be an integer"),
        (minimal(health={"interval": 1}), "[health] needs a command"),
        (minimal(health={"command": ["x"], "interval": 0}), "between 0.1 and"),
        (minimal(health={"command": ["x"], "interval": 0.05}), "between 0.1 and"),
        (minimal(health={"command": ["x"], "timeout": float("inf")}), "between 0.01 and"),
        (minimal(health={"command": ["x"], "retries": 0}), "between 1 and 100"),
        (minimal(restart={"mode": "sometimes"}), "restart.mode must be one of"),
        (minimal(restart={"backoff": 5, "backoff_max": 1}), "must not exceed"),
        (minimal(restart={"window": 10**9}), "between 0.01 and 86400"),
        (minimal(restart={"max_starts": 0}), "between 1 and 1000"),
        ({"name": "a", "version": "1", "job": "../../etc/passwd"}, "relative path inside"),
        ({"name": "a", "version": "1", "job": "/abs.toml"}, "relative path inside"),
        (minimal(limits=3), "[limits] must be a table"),
    ],
)
def test_bad_manifests_are_refused_in_one_line(doc, says):
    with pytest.raises(BundleError) as caught:
        parse(doc)
    message = str(caught.value)
    assert says in message, message
    assert message.startswith(MANIFEST_NAME) and "\n" not in message


def test_too_large_a_manifest_is_refused_before_parsing(tmp_path):
    (tmp_path / MANIFEST_NAME).write_bytes(b"#" * (limits.MAX_MANIFEST_BYTES + 1))
    with pytest.raises(BundleError, match="over the 65536-byte limit"):
        load_bundle(tmp_path)


def test_a_missing_manifest_says_so(tmp_path):
    with pytest.raises(BundleError, match=r"has no qiz-bundle\.toml"):
        load_bundle(tmp_path)


def test_a_symlinked_manifest_is_refused(tmp_path):
    (tmp_path / "real.toml").write_text(FULL)
    os.symlink(tmp_path / "real.toml", tmp_path / MANIFEST_NAME)
    with pytest.raises(BundleError, match="symbolic link"):
        load_bundle(tmp_path)


def test_bytes_that_are_not_utf8_are_refused():
    with pytest.raises(BundleError, match="not UTF-8"):
        parse_bundle(b'name = "\xff"')


def _is_one_line_error_or_spec(data: bytes | str) -> None:
    try:
        spec = parse_bundle(data)
    except BundleError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(MANIFEST_NAME)
        return
    assert isinstance(spec, BundleSpec)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_garbage_bytes_give_a_clear_error_never_a_traceback(data):
    _is_one_line_error_or_spec(data)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_garbage_text_gives_a_clear_error_never_a_traceback(text):
    _is_one_line_error_or_spec(text)


toml_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
keys = st.sampled_from(
    ["name", "version", "command", "job", "env", "limits", "health", "restart", "other"]
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, toml_values, max_size=8))
def test_well_formed_toml_of_any_shape_gives_a_clear_error_or_a_spec(doc):
    try:
        text = tomli_w.dumps(doc)
    except (TypeError, ValueError):
        return  # not representable as TOML (e.g. a top-level array of tables mix)
    _is_one_line_error_or_spec(text)


@settings(max_examples=200, deadline=None)
@given(
    memory=st.integers(min_value=-5, max_value=limits.MAX_MEMORY_MB + 5),
    retries=st.integers(min_value=-5, max_value=limits.MAX_RETRIES + 5),
    interval=st.floats(min_value=-1, max_value=limits.MAX_SECONDS * 2, allow_nan=False),
)
def test_numbers_inside_bounds_parse_and_outside_are_refused(memory, retries, interval):
    doc = minimal(
        limits={"memory_mb": memory},
        health={"command": ["x"], "retries": retries, "interval": interval},
    )
    inside = (
        1 <= memory <= limits.MAX_MEMORY_MB
        and 1 <= retries <= limits.MAX_RETRIES
        and limits.MIN_HEALTH_INTERVAL <= interval <= limits.MAX_SECONDS
    )
    if inside:
        spec = parse(doc)
        assert spec.limits.memory_mb == memory and spec.health.retries == retries
    else:
        with pytest.raises(BundleError):
            parse(doc)


# --- the descriptor (the TUF target of a version) ---------------------------------------------

CID = str(ContentId.of(b"the bundle's files"))


def bundle_dir(tmp_path):
    root = tmp_path / "bundle"
    (root / "lib").mkdir(parents=True)
    (root / MANIFEST_NAME).write_text(FULL)
    (root / "app.py").write_text("print('hi')\n")
    (root / "lib" / "util.py").write_text("X = 1\n")
    return root


def test_a_directory_is_described_file_by_file(tmp_path):
    import hashlib

    from qiz.deploy.descriptor import decode_target, describe_directory

    desc = describe_directory(bundle_dir(tmp_path), CID)
    assert [f.path for f in desc.files] == ["app.py", "lib/util.py", MANIFEST_NAME]
    assert desc.files[0].sha256 == hashlib.sha256(b"print('hi')\n").digest()
    assert (desc.name, desc.version) == ("hello", "1.2.0+build.7")
    assert decode_target(desc.to_bytes()) == desc
    assert desc.spec() == parse_bundle(FULL)
    assert not any(f.executable for f in desc.files)


def test_the_executable_bit_is_described_and_carried(tmp_path):
    """A file with the owner's execute bit is described executable (the installer makes it
    0555), so a bundle's command may be ./run.sh; the bit survives the encoding."""
    from qiz.deploy.descriptor import decode_target, describe_directory

    root = bundle_dir(tmp_path)
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    desc = describe_directory(root, CID)
    flags = {f.path: f.executable for f in desc.files}
    assert flags["run.sh"] is True and flags["app.py"] is False
    assert decode_target(desc.to_bytes()) == desc


def test_a_symlink_in_a_bundle_is_refused(tmp_path):
    from qiz.deploy.descriptor import describe_directory

    root = bundle_dir(tmp_path)
    os.symlink("/etc/passwd", root / "passwd")
    with pytest.raises(BundleError, match="not a regular file"):
        describe_directory(root, CID)


def test_a_sealed_pointer_round_trips_and_reveals_no_file(tmp_path):
    from qiz.deploy.descriptor import SealedPointer, decode_target, describe_directory, seal_pointer

    desc = describe_directory(bundle_dir(tmp_path), CID)
    pointer = seal_pointer(CID, desc)
    data = pointer.to_bytes()
    assert decode_target(data) == pointer and isinstance(pointer, SealedPointer)
    assert b"app.py" not in data and b"hello" not in data


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda d: d | {"v": 2}, "unknown format"),
        (lambda d: d | {"kind": "other"}, "unknown kind"),
        (lambda d: d | {"extra": 1}, "unexpected or missing fields"),
        (lambda d: d | {"content": "qizc1bad"}, "content id is invalid"),
        (lambda d: d | {"files": [["../x", 1, b"\0" * 32, False]]}, "not a plain relative path"),
        (lambda d: d | {"files": [["a", -1, b"\0" * 32, False]]}, "bad size"),
        (lambda d: d | {"files": [["a", 1, b"\0", False]]}, "bad sha256"),
        (lambda d: d | {"files": [["a", 1, b"\0" * 32, 1]]}, "no executable flag"),
        (lambda d: d | {"files": [["a", 1, b"\0" * 32]]}, "not [path, size, sha256, executable]"),
        (
            lambda d: d | {"files": [["b", 1, b"\0" * 32, False], ["a", 1, b"\0" * 32, False]]},
            "not sorted",
        ),
        (lambda d: d | {"files": [["a", 1, b"\0" * 32, False]]}, "lists no qiz-bundle.toml"),
        (lambda d: d | {"version": "9"}, "not hello 9"),
    ],
)
def test_a_malformed_descriptor_is_refused_in_one_line(tmp_path, change, says):
    from qiz import wire
    from qiz.deploy.descriptor import decode_target, describe_directory
    from qiz.deploy.errors import MalformedMetadata

    doc = wire.decode(describe_directory(bundle_dir(tmp_path), CID).to_bytes(), max_size=1 << 20)
    with pytest.raises(MalformedMetadata) as caught:
        decode_target(wire.encode(change(doc)))
    assert says in str(caught.value) and "\n" not in str(caught.value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_garbage_descriptor_bytes_give_a_clear_error(data):
    from qiz.deploy.descriptor import decode_target
    from qiz.deploy.errors import MalformedMetadata

    with pytest.raises(MalformedMetadata):
        decode_target(data)
