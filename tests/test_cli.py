"""The real ``qiz`` command line, run as a subprocess: exit codes, JSON, and one-line errors.

Exit codes: 0 ok, 1 a check ran and said no, 2 the command could not run as asked.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

from qiz.cli.identity_cmds import RECORD_ARMOR
from qiz.home import Home
from qiz.identity.armor import dearmor
from qiz.identity.peer_record import MAX_RECORD_SIZE

from .helpers import assert_one_line_error, qiz_raw
from .json_shapes import check_answer, check_shape

PASSPHRASE = "tr0ub4dor & 3"


def qiz(cwd: Path, *args: str | Path, env: dict[str, str] | None = None) -> tuple[int, bytes, str]:
    """``qiz ARGS`` (see helpers.qiz_raw); a successful ``--json`` answer is checked against
    its schema in docs/json/ on the way."""
    code, out, err = qiz_raw(cwd, *args, env=env)
    if code == 0 and "--json" in args:
        check_answer([str(a) for a in args], out.decode())
    return code, out, err


def ok_json(result: tuple[int, bytes, str]) -> dict:
    """The JSON answer of a command that succeeded, without its ``"ok": true``."""
    code, out, err = result
    assert code == 0, err
    assert "Traceback" not in err
    data = json.loads(out)
    assert data.pop("ok") is True
    return data


@dataclass(frozen=True)
class Mesh:
    """Two homes, A and B, made with the CLI, and their armored peer records."""

    dir: Path
    a_id: str
    b_id: str

    def run(self, *args: str | Path, env: dict[str, str] | None = None) -> tuple[int, bytes, str]:
        return qiz(self.dir, *args, env=env)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Mesh:
    work = tmp_path_factory.mktemp("cli")
    a = ok_json(qiz(work, "--home", "A", "init", "--json"))
    b = ok_json(qiz(work, "--home", "B", "init", "--json"))
    for name in ("A", "B"):
        rec = ok_json(qiz(work, "--home", name, "record", "-o", f"{name.lower()}.rec", "--json"))
        assert rec["output"] == f"{name.lower()}.rec"
    assert (work / "a.rec").read_text().startswith("-----BEGIN QIZ PEER RECORD-----")
    return Mesh(work, a["node_id"], b["node_id"])


# --- init and id ------------------------------------------------------------------------------


def test_init_then_second_init_refused(tmp_path: Path) -> None:
    data = ok_json(qiz(tmp_path, "--home", "A", "init", "--json"))
    assert data["node_id"].startswith("qizn1")
    assert data["locked"] is False
    key = tmp_path / "A" / "identity.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    before = key.read_bytes()

    code, out, err = qiz(tmp_path, "--home", "A", "init", "--json")
    assert code == 2
    assert json.loads(out)["ok"] is False  # with --json, the failure is JSON too
    assert_one_line_error(err, "already holds a QIZ home", "--force")
    assert key.read_bytes() == before


def test_id_json(mesh: Mesh) -> None:
    data = ok_json(mesh.run("--home", "A", "id", "--json"))
    assert data["node_id"] == mesh.a_id
    fingerprints = data["fingerprints"]
    assert set(fingerprints) == {"ml-dsa-65", "ed25519", "x-wing"}
    for value in fingerprints.values():
        assert len(value) == 32
        int(value, 16)
    other = ok_json(mesh.run("--home", "B", "id", "--json"))
    assert other["node_id"] == mesh.b_id != mesh.a_id
    assert set(other["fingerprints"].values()).isdisjoint(fingerprints.values())


def test_id_without_home(tmp_path: Path) -> None:
    code, _, err = qiz(tmp_path, "--home", "nowhere", "id")
    assert code == 2
    assert_one_line_error(err, "init")
    assert not (tmp_path / "nowhere").exists()


def test_qiz_home_env_is_the_default_home(tmp_path: Path) -> None:
    env = {"QIZ_HOME": str(tmp_path / "envhome")}
    data = ok_json(qiz(tmp_path, "init", "--json", env=env))
    assert (tmp_path / "envhome" / "identity.key").is_file()
    assert ok_json(qiz(tmp_path, "id", "--json", env=env))["node_id"] == data["node_id"]


# --- sign and verify --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signed(mesh: Mesh) -> tuple[Path, Path]:
    doc = mesh.dir / "doc.txt"
    doc.write_bytes(b"measure all qubits\n" * 100)
    data = ok_json(mesh.run("--home", "A", "sign", "doc.txt", "--json"))
    assert data == {"file": "doc.txt", "signature": "doc.txt.sig", "signer": mesh.a_id}
    return doc, mesh.dir / "doc.txt.sig"


def test_verify_with_id_and_with_record(mesh: Mesh, signed: tuple[Path, Path]) -> None:
    code, out, err = mesh.run("verify", "doc.txt", "doc.txt.sig", "--id", mesh.a_id)
    assert code == 0, err
    assert mesh.a_id in out.decode()
    data = ok_json(mesh.run("verify", "doc.txt", "doc.txt.sig", "--record", "a.rec", "--json"))
    assert data == {"valid": True, "file": "doc.txt", "signer": mesh.a_id}
    data = ok_json(
        mesh.run(
            "verify", "doc.txt", "doc.txt.sig", "--id", mesh.a_id, "--record", "a.rec", "--json"
        )
    )
    assert data["valid"] is True


@pytest.mark.parametrize("who", ["--id", "--record"])
def test_verify_against_another_signer_fails(
    mesh: Mesh, signed: tuple[Path, Path], who: str
) -> None:
    expected = mesh.b_id if who == "--id" else "b.rec"
    code, out, err = mesh.run("verify", "doc.txt", "doc.txt.sig", who, expected, "--json")
    assert code == 1
    assert json.loads(out)["valid"] is False
    assert_one_line_error(err, "INVALID", mesh.b_id)


def test_verify_with_mismatched_id_and_record_fails(mesh: Mesh, signed: tuple[Path, Path]) -> None:
    code, _, err = mesh.run(
        "verify", "doc.txt", "doc.txt.sig", "--id", mesh.a_id, "--record", "b.rec"
    )
    assert code == 1
    assert_one_line_error(err, "the record is for")


def test_verify_changed_file_fails(mesh: Mesh, signed: tuple[Path, Path]) -> None:
    doc, sig = signed
    data = bytearray(doc.read_bytes())
    data[len(data) // 2] ^= 0x01
    (mesh.dir / "changed.txt").write_bytes(bytes(data))
    code, out, err = mesh.run("verify", "changed.txt", sig.name, "--id", mesh.a_id, "--json")
    assert code == 1
    assert json.loads(out)["valid"] is False
    assert_one_line_error(err, "INVALID")


def test_verify_tampered_signature_fails(mesh: Mesh, signed: tuple[Path, Path]) -> None:
    _, sig = signed
    data = bytearray(sig.read_bytes())
    data[-100] ^= 0x01
    (mesh.dir / "tampered.sig").write_bytes(bytes(data))
    code, _, err = mesh.run("verify", "doc.txt", "tampered.sig", "--record", "a.rec")
    assert code == 1
    assert_one_line_error(err, "INVALID")


@pytest.mark.parametrize("garbage", [b"", b"not a signature\x00\xff" * 10])
def test_verify_garbage_signature_is_a_usage_error(
    mesh: Mesh, signed: tuple[Path, Path], garbage: bytes
) -> None:
    """A file that is not a signature at all is the wrong file (2), not a failed check (1)."""
    (mesh.dir / "garbage.sig").write_bytes(garbage)
    code, _, err = mesh.run("verify", "doc.txt", "garbage.sig", "--id", mesh.a_id)
    assert code == 2
    assert_one_line_error(err, "garbage.sig", "not a QIZ signature file")


@pytest.mark.parametrize("bad_id", ["qizn1notanid", "hello", "qizn2" + "a" * 56, ""])
def test_verify_malformed_id_is_a_usage_error(
    mesh: Mesh, signed: tuple[Path, Path], bad_id: str
) -> None:
    code, _, err = mesh.run("verify", "doc.txt", "doc.txt.sig", "--id", bad_id)
    assert code == 2
    assert_one_line_error(err, "--id")


@pytest.mark.parametrize(
    ("args", "word"),
    [
        (("missing.txt", "doc.txt.sig"), "missing.txt"),
        (("doc.txt", "missing.sig"), "missing.sig"),
    ],
)
def test_verify_missing_file_is_a_usage_error(
    mesh: Mesh, signed: tuple[Path, Path], args: tuple[str, str], word: str
) -> None:
    code, _, err = mesh.run("verify", *args, "--id", mesh.a_id)
    assert code == 2
    assert_one_line_error(err, word, "does not exist")


def test_verify_missing_record_file_is_a_usage_error(mesh: Mesh, signed: tuple[Path, Path]) -> None:
    code, _, err = mesh.run("verify", "doc.txt", "doc.txt.sig", "--record", "nope.rec")
    assert code == 2
    assert_one_line_error(err, "nope.rec", "does not exist")


def test_verify_needs_a_signer(mesh: Mesh, signed: tuple[Path, Path]) -> None:
    code, _, err = mesh.run("verify", "doc.txt", "doc.txt.sig")
    assert code == 2
    assert_one_line_error(err, "--id")


def test_verify_with_a_forged_record_fails(mesh: Mesh, signed: tuple[Path, Path]) -> None:
    armored = (mesh.dir / "a.rec").read_bytes()
    raw = bytearray(dearmor(RECORD_ARMOR, armored, max_size=MAX_RECORD_SIZE))
    raw[-10] ^= 0x01
    (mesh.dir / "forged.rec").write_bytes(bytes(raw))
    code, _, err = mesh.run("verify", "doc.txt", "doc.txt.sig", "--record", "forged.rec")
    assert code == 1
    assert_one_line_error(err, "not a valid peer record")


# --- seal and open ----------------------------------------------------------------------------


def test_seal_and_open_text(mesh: Mesh) -> None:
    (mesh.dir / "note.txt").write_bytes(b"hello B, from A\n")
    data = ok_json(mesh.run("--home", "A", "seal", "note.txt", "--to", "b.rec", "--json"))
    assert data["sealed"] == "note.txt.sealed"
    assert data["sender"] == mesh.a_id
    assert data["recipient"] == mesh.b_id
    code, out, err = mesh.run("--home", "B", "open", "note.txt.sealed")
    assert code == 0, err
    assert out == b"hello B, from A\n"
    assert mesh.a_id in err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def sealed_blob(mesh: Mesh) -> bytes:
    """Random binary (every byte value, CR, LF, NUL) sealed from A to B."""
    payload = os.urandom(3000) + bytes(range(256)) + b"\r\n\x00\n"
    (mesh.dir / "blob.bin").write_bytes(payload)
    code, _, err = mesh.run("--home", "A", "seal", "blob.bin", "--to", "b.rec", "-o", "X.sealed")
    assert code == 0, err
    return payload


def test_open_binary_to_stdout_and_to_file(mesh: Mesh, sealed_blob: bytes) -> None:
    code, out, err = mesh.run("--home", "B", "open", "X.sealed")
    assert code == 0, err
    assert out == sealed_blob

    data = ok_json(mesh.run("--home", "B", "open", "X.sealed", "-o", "OUT", "--json"))
    assert data["sender"] == mesh.a_id
    assert data["plaintext_bytes"] == len(sealed_blob)
    assert (mesh.dir / "OUT").read_bytes() == sealed_blob
    assert stat.S_IMODE((mesh.dir / "OUT").stat().st_mode) == 0o600

    data = ok_json(mesh.run("--home", "B", "open", "X.sealed", "--json"))
    assert base64.b64decode(data["plaintext_b64"]) == sealed_blob


def test_open_by_the_wrong_node_fails(mesh: Mesh, sealed_blob: bytes) -> None:
    code, out, err = mesh.run("--home", "A", "open", "X.sealed", "-o", "wrong.out")
    assert code == 1
    assert out == b""
    assert_one_line_error(err, "cannot open")
    assert not (mesh.dir / "wrong.out").exists()


@pytest.mark.parametrize("where", [100, -1])
def test_open_tampered_sealed_file_fails(mesh: Mesh, sealed_blob: bytes, where: int) -> None:
    data = bytearray((mesh.dir / "X.sealed").read_bytes())
    data[where] ^= 0x01
    name = f"tampered{where}.sealed"
    (mesh.dir / name).write_bytes(bytes(data))
    code, out, err = mesh.run("--home", "B", "open", name)
    assert code == 1
    assert out == b""
    assert_one_line_error(err, "cannot open")


def test_open_a_file_without_the_sealed_header_is_a_usage_error(
    mesh: Mesh, sealed_blob: bytes
) -> None:
    """A flipped bit in the header leaves a file that is not a sealed message: exit 2."""
    data = bytearray((mesh.dir / "X.sealed").read_bytes())
    data[0] ^= 0x01
    (mesh.dir / "header.sealed").write_bytes(bytes(data))
    code, out, err = mesh.run("--home", "B", "open", "header.sealed")
    assert code == 2
    assert out == b""
    assert_one_line_error(err, "header.sealed is not a sealed QIZ message")


def test_seal_to_a_missing_record_is_a_usage_error(mesh: Mesh) -> None:
    (mesh.dir / "m.txt").write_bytes(b"x")
    code, _, err = mesh.run("--home", "A", "seal", "m.txt", "--to", "nobody.rec")
    assert code == 2
    assert_one_line_error(err, "does not exist")
    assert not (mesh.dir / "m.txt.sealed").exists()


# --- a locked identity ------------------------------------------------------------------------


def test_locked_identity(tmp_path: Path) -> None:
    data = ok_json(
        qiz(tmp_path, "--home", "L", "init", "--json", env={"QIZ_PASSPHRASE": PASSPHRASE})
    )
    assert data["locked"] is True
    key = tmp_path / "L" / "identity.key"
    before = key.read_bytes()
    (tmp_path / "pass.txt").write_text(PASSPHRASE + "\n")
    (tmp_path / "wrong.txt").write_text("not it\n")

    code, out, err = qiz(tmp_path, "--home", "L", "id", "--json")
    assert code == 2
    assert json.loads(out)["ok"] is False  # with --json, the failure is JSON too
    assert_one_line_error(err, "locked", "passphrase")

    got = ok_json(qiz(tmp_path, "--home", "L", "--passphrase-file", "pass.txt", "id", "--json"))
    assert got["node_id"] == data["node_id"]

    code, _, err = qiz(tmp_path, "--home", "L", "--passphrase-file", "wrong.txt", "id")
    assert code == 2
    assert_one_line_error(err, "wrong passphrase")

    code, _, err = qiz(tmp_path, "--home", "L", "--passphrase-file", "none.txt", "id")
    assert code == 2
    assert_one_line_error(err, "none.txt", "does not exist")

    assert key.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "L").iterdir()) == ["config.toml", "identity.key"]


# --- a damaged identity -----------------------------------------------------------------------


@pytest.mark.parametrize("keep", [0, 5, 50, -1])
def test_corrupted_identity_key(tmp_path: Path, keep: int) -> None:
    home = Home(tmp_path / "C")
    home.init()
    data = home.identity_path.read_bytes()
    home.identity_path.write_bytes(data[:keep])
    before = home.identity_path.read_bytes()
    code, out, err = qiz(tmp_path, "--home", "C", "id", "--json")
    assert code == 2
    assert json.loads(out)["ok"] is False  # with --json, the failure is JSON too
    line = assert_one_line_error(err)
    assert any(word in line for word in ("truncated", "corrupted", "empty")), line
    assert home.identity_path.read_bytes() == before


def test_flipped_byte_in_identity_key(tmp_path: Path) -> None:
    home = Home(tmp_path / "C")
    home.init()
    data = bytearray(home.identity_path.read_bytes())
    data[40] ^= 0x01
    home.identity_path.write_bytes(bytes(data))
    code, _, err = qiz(tmp_path, "--home", "C", "sign", "whatever.txt")
    assert code == 2
    assert_one_line_error(err, "corrupted")
    assert home.identity_path.read_bytes() == bytes(data)


# --- usage ---------------------------------------------------------------------------


def test_unknown_command_is_a_usage_error_without_traceback(tmp_path: Path) -> None:
    code, _, err = qiz(tmp_path, "frobnicate")
    assert code == 2
    assert "Traceback" not in err
    assert err.strip()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("verify", "x"), "Missing argument"),
        (("idd",), "No such command"),
        (("ping", "--count", "0", "127.0.0.1:1"), "--count"),
        (("--home", "H", "init", "--ask-passphrase"), "needs a terminal"),
    ],
)
def test_usage_errors_are_one_line_with_exit_2(tmp_path: Path, args, words: str) -> None:
    code, _out, err = qiz(tmp_path, *args)
    assert code == 2
    assert_one_line_error(err, words)
    assert not (tmp_path / "H").exists()  # nothing was created by a refused init


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--home", "H", "job", "status", "--json"), "Missing argument"),
        (("job", "status", "7623", "--bogus", "--json"), "--bogus"),
        (("nosuchcmd", "--json"), "No such command"),
        (("ping", "--count", "0", "127.0.0.1:1", "--json"), "--count"),
    ],
)
def test_usage_errors_under_json_print_the_failure_object(tmp_path: Path, args, words) -> None:
    """Typer's own usage errors keep the --json promise: one failure object on stdout."""
    code, out, err = qiz(tmp_path, *args)
    assert code == 2
    assert_one_line_error(err, words)
    failure = json.loads(out)
    check_shape("(failed)", failure)
    assert failure["ok"] is False and failure["exit_code"] == 2 and words in failure["error"]


def test_version_flag_takes_json_too(tmp_path: Path) -> None:
    assert (
        ok_json(qiz(tmp_path, "--version", "--json"))["version"]
        == ok_json(qiz(tmp_path, "version", "--json"))["version"]
    )


INTERRUPT_DURING_IMPORTS = """
import sys

class Interrupt:  # Ctrl-C arriving while the CLI's heavy modules load
    def find_spec(self, name, path=None, target=None):
        if name == "rich.console":
            raise KeyboardInterrupt

sys.meta_path.insert(0, Interrupt())
sys.argv = ["qiz", *sys.argv[1:]]
from qiz.cli.main import entry

entry()
"""


@pytest.mark.parametrize("as_json", [False, True])
def test_ctrl_c_during_start_up_is_one_line_and_exit_130(tmp_path: Path, as_json: bool) -> None:
    import subprocess
    import sys

    from .helpers import CLEAN_ENV

    args = ["version", *(["--json"] if as_json else [])]
    proc = subprocess.run(
        [sys.executable, "-c", INTERRUPT_DURING_IMPORTS, *args],
        cwd=tmp_path,
        env=CLEAN_ENV,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr == "qiz: interrupted\n"
    if as_json:
        assert json.loads(proc.stdout) == {"ok": False, "error": "interrupted", "exit_code": 130}
    else:
        assert proc.stdout == ""


def _ping_a_silent_peer(tmp_path: Path, silent, *flags: str):
    """``qiz ping`` in a process of its own, aimed at ``silent``: a listener that accepts and
    never speaks QMP, so the command waits inside its dial until it is interrupted."""
    import subprocess
    import sys

    from .helpers import CLEAN_ENV

    silent.bind(("127.0.0.1", 0))
    silent.listen()
    address = f"127.0.0.1:{silent.getsockname()[1]}"
    return subprocess.Popen(
        [sys.executable, "-m", "qiz", "--home", "H", "ping", address, *flags],
        cwd=tmp_path,
        env=CLEAN_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_ctrl_c_at_any_moment_of_a_real_run_is_one_line(tmp_path: Path) -> None:
    """SIGINT 0.3 s after the start (imports, or the wait for a peer that never answers):
    the same one line and exit 130, never a traceback."""
    import signal
    import socket
    import time

    ok_json(qiz(tmp_path, "--home", "H", "init", "--json"))
    with socket.socket() as silent:
        proc = _ping_a_silent_peer(tmp_path, silent)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert (proc.returncode, err, out) == (130, "qiz: interrupted\n", "")


def test_ctrl_c_inside_a_command_is_one_line_and_the_failure_object(tmp_path: Path) -> None:
    """SIGINT once the command is surely running (its dial reached our silent listener): not
    typer's silent exit 130, but the same line and, under --json, the failure object."""
    import signal
    import socket

    ok_json(qiz(tmp_path, "--home", "H", "init", "--json"))
    with socket.socket() as silent:
        proc = _ping_a_silent_peer(tmp_path, silent, "--json")
        silent.settimeout(60)
        conn, _ = silent.accept()  # the command is in its dial: inside the command
        with conn:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (130, "qiz: interrupted\n")
    assert json.loads(out) == {"ok": False, "error": "interrupted", "exit_code": 130}
