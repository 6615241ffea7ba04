"""What a newcomer reads: the help grouped and uncut, summaries aligned, the optimizer's verdict,
no library warnings, hints with the --home they typed, and the wrong file named as such.

Every command here runs as a real ``python -m qiz`` subprocess writing to a pipe (as in
``qiz ... | cat``), so the no-wrapping rules are checked where they matter.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import cbor2
import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qiz.cli.help_format import PANELS, one_line
from qiz.cli.identity_cmds import RECORD_ARMOR, load_record_file
from qiz.cli.main import app
from qiz.cli.output import CheckFailed, UserError
from qiz.cli.quantum_cmds import LABEL_WIDTH
from qiz.crypto.composite import message_digest, stream_digest
from qiz.crypto.errors import DecryptionFailed, InvalidSignature
from qiz.crypto.seal import MAGIC, OVERHEAD
from qiz.home import Home
from qiz.identity.armor import armor
from qiz.identity.detached import (
    SignatureFileError,
    make_signature_file,
    verify_signature_file,
)
from qiz.identity.peer_record import PeerRecord
from qiz.identity.sealed_message import (
    NotSealedError,
    SealedMessageError,
    open_message,
    seal_message,
)

from .helpers import assert_one_line_error, ok_json, one_line_error, qiz, qiz_raw

# what a decoder's own error text looks like: none of it may reach a user
DECODER_WORDS = re.compile(r"cbor|major type|premature|canonical|\btag\b|stream", re.IGNORECASE)


def _root() -> typer.core.TyperGroup:
    return typer.main.get_command(app)


# --- help -------------------------------------------------------------------------------------


def _listing(text: str) -> dict[str, str]:
    """``name -> help`` of every command row in a help text (two-space indented rows)."""
    rows = {}
    for line in text.splitlines():
        match = re.match(r"^  (\S+)\s{2,}(.+)$", line)
        if match and not match.group(1).startswith("-"):
            rows[match.group(1)] = match.group(2)
    return rows


def test_plain_qiz_shows_every_command_grouped_with_its_whole_help(tmp_path: Path) -> None:
    bare = qiz(tmp_path)
    assert bare.returncode == 2 and bare.stderr == ""  # no command ran; the help is the answer
    helped = qiz(tmp_path, "--help")
    assert helped.returncode == 0
    assert bare.stdout == helped.stdout
    headings = [line[:-1] for line in helped.stdout.splitlines() if re.match(r"^\S.*:$", line)]
    panels = [h for h in headings if h not in ("Usage", "Options")]
    assert panels[:2] == ["Identity and files", "Node and mesh"]
    assert [p for p in panels if p in PANELS] == [p for p in PANELS if p in panels]
    rows = _listing(helped.stdout)
    for name, command in _root().commands.items():
        assert rows[name] == one_line(command), name  # whole, on one line, never "..."
    assert "Node home directory (default: $QIZ_HOME or the user data dir)." in helped.stdout


def test_group_help_is_uncut_too(tmp_path: Path) -> None:
    result = qiz(tmp_path, "qaoa", "--help")
    assert result.returncode == 0
    rows = _listing(result.stdout)
    assert rows["maxcut"] == one_line(_root().commands["qaoa"].commands["maxcut"])


def test_piped_help_and_errors_are_not_wrapped(tmp_path: Path) -> None:
    result = qiz(tmp_path, "vqe", "--help")
    lines = result.stdout.splitlines()
    assert any("A Pauli-sum file, or tfim:N[:ring] / heisenberg:N[:ring]." in x for x in lines)
    home = "a-home-with-a-name-long-enough-that-any-80-column-wrapping-would-cut-the-hint-" * 2
    error = one_line_error(qiz(tmp_path, "--home", home, "dashboard"))
    assert len(error) > 200 and f"create it with: qiz --home {home} init" in error


# --- the quantum summaries ----------------------------------------------------------------------


def _rows(text: str) -> dict[str, str]:
    """The ``label  value`` rows of a summary, checking that every value starts in one column
    (a row without a label continues the one above)."""
    column = 2 + LABEL_WIDTH
    body = text.splitlines()[1:]
    for line in body:
        assert line.startswith("  ") and line[column - 1] == " " and line[column] != " ", text
    return {line[:column].strip(): line[column:] for line in body if line[:column].strip()}


def test_grover_summary_reads_like_qaoa(tmp_path: Path) -> None:
    args = ("grover", "--qubits", "6", "--marked", "5,0b1001", "--iterations", "1", "--seed", "3")
    human = qiz(tmp_path, *args)
    data = ok_json(qiz(tmp_path, *args, "--json"))
    lines = human.stdout.splitlines()
    assert lines[0] == "Grover search: 6 qubits, 64 items, 2 marked"
    rows = _rows(human.stdout)
    assert rows["iterations"] == f"1 (optimal {data['optimal_iterations']})"
    assert rows["success probability"] == (
        f"{data['success_probability']:.6f}  (analytic {data['analytic_probability']:.6f})"
    )
    assert rows["marked in samples"] == f"{data['hits']} of 1024 shots"
    bits, count = rows["top outcomes"].split()[:2]  # the most frequent outcome, a marked one
    assert data["counts"][bits] == int(count) == max(data["counts"].values())
    assert rows["top outcomes"].endswith("marked") and int(bits, 2) in (5, 9)
    assert set(rows) == {
        "iterations",
        "success probability",
        "marked in samples",
        "top outcomes",
        "time",
    }
    assert data["num_items"] == 64 and data["iterations"] == 1
    assert human.stderr == ""


def test_vqe_says_whether_the_optimizer_converged(tmp_path: Path) -> None:
    args = ("vqe", "--hamiltonian", "tfim:4", "--maxiter", "2")
    data = ok_json(qiz(tmp_path, *args, "--json"))
    assert data["converged"] is False and data["optimizer_message"]
    assert data["iterations"] <= 2 and data["evaluations"] >= data["iterations"]
    assert data["energy_error"] == pytest.approx(data["energy"] - data["exact"])
    human = qiz(tmp_path, *args)
    rows = _rows(human.stdout)
    assert rows["converged"] == f"no ({data['optimizer_message'].rstrip('.')}); raise --maxiter"
    assert rows["energy error"] == f"{data['energy_error']:.3e}"


@pytest.mark.parametrize(
    "args",
    [
        ("vqe", "--hamiltonian", "tfim:4", "--optimizer", "COBYLA", "--maxiter", "1"),
        ("qaoa", "maxcut", "--graph", "random:6,3", "--p", "3", "--maxiter", "1"),
        ("run", "BELL"),
    ],
)
def test_no_library_warnings_and_no_error_key_in_a_success(tmp_path: Path, args) -> None:
    """COBYLA given fewer evaluations than it needs once printed scipy's UserWarning; and an
    'error' key means failure in our JSON, so no success may carry one, at any depth."""
    (tmp_path / "BELL").write_text(
        'OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c; h q[0]; cx q[0], q[1];'
        " c = measure q;"
    )
    result = qiz(tmp_path, *args, "--json")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    answer = ok_json(result)

    def keys(value: object) -> set[str]:
        if isinstance(value, dict):
            return set(value) | {k for v in value.values() for k in keys(v)}
        return set()

    assert "error" not in keys(answer)


# --- hints --------------------------------------------------------------------------------------


def test_hints_repeat_the_home_as_typed(tmp_path: Path) -> None:
    """A home that does not exist is named (create it); one without a node running too."""
    error = one_line_error(qiz(tmp_path, "--home", "alice", "dashboard"))
    assert error.endswith("no QIZ home at alice; create it with: qiz --home alice init")
    code, _, err = qiz_raw(tmp_path, "dashboard", env={"QIZ_HOME": "alice"})
    assert code == 2
    assert assert_one_line_error(err).endswith("create it with: qiz init")
    assert qiz(tmp_path, "--home", "alice", "init").returncode == 0
    error = one_line_error(qiz(tmp_path, "--home", "alice", "dashboard"))
    assert error.endswith("start it with: qiz --home alice node start")


# --- the wrong file ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A home H with its record, a signed file and a file sealed to it (made in-process: only
    the commands under test run as processes), and files of the wrong kinds; and H's id."""
    work = tmp_path_factory.mktemp("files")
    home = Home(work / "H")
    home.init()
    me = home.load_identity()
    record = PeerRecord.create(me, ["127.0.0.1:7450"], seq=1, now=time.time())
    (work / "me.rec").write_text(armor(RECORD_ARMOR, record.raw))
    (work / "doc").write_text("the measured landscape\n")
    with (work / "doc").open("rb") as doc:
        (work / "doc.sig").write_bytes(make_signature_file(me, stream_digest(doc)))
    (work / "doc.sealed").write_bytes(seal_message(me, record, b"for H only"))
    (work / "garbage").write_bytes(bytes(range(256)) * 3)
    (work / "empty").write_bytes(b"")
    for name in ("doc.sig", "doc.sealed", "me.rec"):
        (work / f"cut-{name}").write_bytes((work / name).read_bytes()[:40])
    return work, str(me.node_id)


@pytest.mark.parametrize(
    ("command", "wrong", "says"),
    [
        (("open", "{}"), ["garbage", "cut-doc.sealed", "me.rec"], "is not a sealed QIZ message"),
        (("verify", "doc", "{}", "--id", "ID"), ["empty", "cut-doc.sig"], "not a QIZ signature"),
        (("seal", "doc", "--to", "{}", "-o", "x"), ["cut-me.rec", "doc.sig"], "not a QIZ peer"),
        (("verify", "doc", "doc.sig", "--record", "{}"), ["garbage"], "not a QIZ peer record"),
    ],
)
def test_a_wrong_file_is_a_user_error_in_plain_words(
    files: tuple[Path, str], command: tuple[str, ...], wrong: list[str], says: str
) -> None:
    work, node_id = files
    for name in wrong:
        argv = [a.replace("{}", name).replace("ID", node_id) for a in command]
        error = one_line_error(qiz(work, "--home", "H", *argv))
        assert name in error and says in error, error
        assert not DECODER_WORDS.search(error), error


# --- the same, in-process, for any bytes ---------------------------------------------------

cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.binary(max_size=40) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=6)
    ),
    max_leaves=12,
)
any_bytes = (
    st.binary(max_size=300)
    | cbor_values.map(cbor2.dumps)
    | st.binary(max_size=8).map(
        lambda b: b"\xd8\x1e" + b  # a CBOR tag in front
    )
)


@settings(max_examples=60, deadline=None)
@given(blob=any_bytes)
def test_any_bytes_as_a_signature_file(blob: bytes) -> None:
    try:
        verify_signature_file(blob, message_digest(b"doc"), expected_id=None)
    except SignatureFileError as exc:
        assert exc.exit_code == 2 and not DECODER_WORDS.search(str(exc)), str(exc)
    except InvalidSignature:
        pass  # well formed, and the check said no


@settings(max_examples=60, deadline=None)
@given(blob=any_bytes)
def test_any_bytes_as_a_sealed_message(alice, blob: bytes) -> None:
    for sealed in (blob, MAGIC + blob * 8):
        looks_sealed = sealed.startswith(MAGIC) and len(sealed) >= OVERHEAD
        with pytest.raises((DecryptionFailed, SealedMessageError)) as caught:
            open_message(alice, sealed)
        assert isinstance(caught.value, NotSealedError) == (not looks_sealed)
        assert not DECODER_WORDS.search(str(caught.value)), str(caught.value)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(blob=any_bytes)
def test_any_bytes_as_a_record_file(blob: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.rec"
        path.write_bytes(blob)
        with pytest.raises((UserError, CheckFailed)) as caught:
            load_record_file(path, now=time.time())
    assert not DECODER_WORDS.search(str(caught.value)), str(caught.value)


# --- dashboard --json -----------------------------------------------------------------------------


def test_dashboard_json_gives_the_port_and_token_a_script_needs(tmp_path: Path, start_node) -> None:
    assert qiz(tmp_path, "--home", "N", "init").returncode == 0
    start_node("N")
    answer = ok_json(qiz(tmp_path, "--home", "N", "dashboard", "--json"))
    assert answer["port"] == urlsplit(answer["url"]).port
    assert answer["token"] == (tmp_path / "N" / "api.token").read_text().strip()
    request = urllib.request.Request(
        f"http://127.0.0.1:{answer['port']}/api/node",
        headers={"Authorization": f"Bearer {answer['token']}"},
    )
    with urllib.request.urlopen(request, timeout=15) as response:
        assert json.load(response)["node_id"] == answer["node_id"]
