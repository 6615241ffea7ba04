"""Key files and the node home: permissions, round trips, every kind of damage, crash safety.

Every failure must raise :class:`KeyFileError` (or :class:`HomeError`) with one clear sentence
and must leave the files on disk exactly as they were.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qiz import wire
from qiz.crypto import keyfile
from qiz.fsio import TEMP_MARKER, write_atomic
from qiz.home import CONFIG_NAME, IDENTITY_NAME, Home, HomeError, default_home
from qiz.identity import NodeIdentity

FAST = keyfile.ScryptParams(log2_n=10)
PASSPHRASE = "correct horse battery staple"

# A fixed identity makes the plain key file's bytes deterministic, so each corruption below
# always takes the same path through the decoder.
FIXED = NodeIdentity.from_secret_bytes(
    wire.encode(
        {
            "v": 1,
            "mldsa65": bytes(range(32)),
            "ed25519": bytes(range(32, 64)),
            "xwing": bytes(range(64, 96)),
        }
    )
)
PLAIN_HEADER = len(keyfile.MAGIC) + 2 + 4  # magic, version, mode, length
LOCKED_HEADER = len(keyfile.MAGIC) + 2 + 16 + 3 + 12 + 4  # ... salt, N/r/p, nonce, length


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file in ``directory`` with its bytes: to prove that a failure changed nothing."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def make_home(tmp_path: Path, passphrase: str | None = None) -> tuple[Home, NodeIdentity]:
    home = Home(tmp_path / "home")
    identity = home.init(passphrase=passphrase, scrypt=FAST)
    return home, identity


def assert_load_fails(home: Home, passphrase: str | None, *words: str) -> keyfile.KeyFileError:
    """Loading raises KeyFileError naming one of ``words`` and leaves the home untouched."""
    before = snapshot(home.path)
    with pytest.raises(keyfile.KeyFileError) as info:
        home.load_identity(passphrase)
    message = str(info.value)
    assert any(word in message for word in words), message
    assert "\n" not in message
    assert snapshot(home.path) == before
    return info.value


# --- the home on disk -------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_init_writes_private_key_file_and_config(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        home, _ = make_home(tmp_path)
    finally:
        os.umask(old)
    assert home.path.is_dir()
    assert stat.S_IMODE(home.path.stat().st_mode) & 0o077 == 0
    assert home.identity_path == home.path / IDENTITY_NAME
    assert stat.S_IMODE(home.identity_path.stat().st_mode) == 0o600
    assert home.config_path == home.path / CONFIG_NAME
    assert home.config_path.is_file()
    config = home.load_config()
    assert config.listen == "127.0.0.1:7450"
    assert config.bootstrap == []


def test_plain_round_trip(tmp_path: Path) -> None:
    home, identity = make_home(tmp_path)
    assert not home.identity_locked()
    loaded = home.load_identity()
    assert loaded.node_id == identity.node_id
    assert loaded.to_secret_bytes() == identity.to_secret_bytes()
    # a passphrase given for a plain file is simply not needed
    assert home.load_identity("unused").node_id == identity.node_id


def test_locked_round_trip(tmp_path: Path) -> None:
    home, identity = make_home(tmp_path, PASSPHRASE)
    assert home.identity_locked()
    assert identity.to_secret_bytes() not in home.identity_path.read_bytes()
    loaded = home.load_identity(PASSPHRASE)
    assert loaded.node_id == identity.node_id
    assert loaded.to_secret_bytes() == identity.to_secret_bytes()


def test_passphrase_is_unicode_normalised(tmp_path: Path) -> None:
    home, identity = make_home(tmp_path, "caf\u00e9")  # composed é
    assert home.load_identity("cafe\u0301").node_id == identity.node_id  # decomposed é


# --- damage -----------------------------------------------------------------------------------


PLAIN_SIZE = len(keyfile.encode(FIXED.to_secret_bytes()))


@pytest.mark.parametrize(
    ("keep", "words"),
    [
        (0, ("empty",)),
        (3, ("truncated",)),
        (len(keyfile.MAGIC) + 1, ("truncated",)),
        (PLAIN_HEADER, ("truncated",)),
        (PLAIN_HEADER + 20, ("truncated",)),
        (PLAIN_SIZE - 32, ("truncated",)),
        (PLAIN_SIZE - 1, ("truncated",)),
    ],
)
def test_truncated_plain_file(tmp_path: Path, keep: int, words: tuple[str, ...]) -> None:
    home = Home(tmp_path / "home")
    home.init(identity=FIXED)
    home.identity_path.write_bytes(home.identity_path.read_bytes()[:keep])
    assert_load_fails(home, None, *words)


@pytest.mark.parametrize("cut", [1, 16, 17, 40])
def test_truncated_locked_file(tmp_path: Path, cut: int) -> None:
    home, _ = make_home(tmp_path, PASSPHRASE)
    data = home.identity_path.read_bytes()
    home.identity_path.write_bytes(data[:-cut])
    assert_load_fails(home, PASSPHRASE, "truncated")
    # without a passphrase the damage is still reported as damage, not as "locked"
    assert_load_fails(home, None, "truncated")


@pytest.mark.parametrize(
    ("pos", "words"),
    [
        (0, ("bad magic",)),  # magic
        (5, ("bad magic",)),  # magic
        (6, ("corrupted or from another QIZ version",)),  # version
        (7, ("corrupted",)),  # mode
        (8, ("corrupted",)),  # length, high byte
        (11, ("corrupted",)),  # length, low byte
        (PLAIN_HEADER, ("corrupted",)),  # first secret byte
        (PLAIN_HEADER + 64, ("corrupted",)),  # middle of the secret
        (PLAIN_SIZE - 32, ("corrupted",)),  # first checksum byte
        (PLAIN_SIZE - 1, ("corrupted",)),  # last checksum byte
    ],
)
@pytest.mark.parametrize("flip", [0x01, 0x80])
def test_flipped_byte_in_plain_file(
    tmp_path: Path, pos: int, words: tuple[str, ...], flip: int
) -> None:
    home = Home(tmp_path / "home")
    home.init(identity=FIXED)
    data = bytearray(home.identity_path.read_bytes())
    assert len(data) == PLAIN_SIZE
    data[pos] ^= flip
    home.identity_path.write_bytes(bytes(data))
    error = assert_load_fails(home, None, *words)
    assert str(home.identity_path) in str(error)


@pytest.mark.parametrize(
    "pos",
    [
        len(keyfile.MAGIC) + 2,  # salt
        len(keyfile.MAGIC) + 2 + 16,  # log2(N)
        len(keyfile.MAGIC) + 2 + 19,  # nonce
        LOCKED_HEADER,  # ciphertext
        -1,  # tag
    ],
)
def test_flipped_byte_in_locked_file(tmp_path: Path, pos: int) -> None:
    home, _ = make_home(tmp_path, PASSPHRASE)
    data = bytearray(home.identity_path.read_bytes())
    data[pos] ^= 0x01
    home.identity_path.write_bytes(bytes(data))
    assert_load_fails(home, PASSPHRASE, "corrupted")


@pytest.mark.parametrize("pos", [len(keyfile.MAGIC) + 2 + 17, len(keyfile.MAGIC) + 2 + 18])
def test_implausible_scrypt_parameters_are_refused_before_deriving(
    tmp_path: Path, pos: int
) -> None:
    home, _ = make_home(tmp_path, PASSPHRASE)
    data = bytearray(home.identity_path.read_bytes())
    data[pos] = 0  # r = 0 or p = 0
    home.identity_path.write_bytes(bytes(data))
    assert_load_fails(home, PASSPHRASE, "implausible scrypt parameters")


def test_wrong_passphrase(tmp_path: Path) -> None:
    home, _ = make_home(tmp_path, PASSPHRASE)
    assert_load_fails(home, "not the passphrase", "wrong passphrase")


@pytest.mark.parametrize("passphrase", [None, ""])
def test_missing_passphrase_for_locked_file(tmp_path: Path, passphrase: str | None) -> None:
    home, _ = make_home(tmp_path, PASSPHRASE)
    error = assert_load_fails(home, passphrase, "locked")
    assert isinstance(error, keyfile.PassphraseRequired)
    assert "passphrase" in str(error)


@pytest.mark.parametrize(
    "content",
    [
        b"NOTKEY" + b"\x01\x00" + b"\x00" * 60,
        b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n",
        b"xyz",
    ],
)
def test_bad_magic(tmp_path: Path, content: bytes) -> None:
    home, _ = make_home(tmp_path)
    home.identity_path.write_bytes(content)
    assert_load_fails(home, None, "bad magic")


def test_valid_file_holding_a_bad_secret_is_corrupted(tmp_path: Path) -> None:
    home, _ = make_home(tmp_path)
    home.identity_path.write_bytes(keyfile.encode(b"\xa0"))  # an empty CBOR map
    assert_load_fails(home, None, "corrupted")


def test_missing_home_is_a_home_error(tmp_path: Path) -> None:
    with pytest.raises(HomeError, match="init"):
        Home(tmp_path / "nowhere").load_identity()
    assert not (tmp_path / "nowhere").exists()


# --- properties -------------------------------------------------------------------------------


@given(
    secret=st.binary(min_size=0, max_size=200),
    passphrase=st.one_of(st.none(), st.text(min_size=1, max_size=20)),
)
def test_encode_decode_round_trip(secret: bytes, passphrase: str | None) -> None:
    data = keyfile.encode(secret, passphrase, FAST)
    assert keyfile.is_locked(data) == (passphrase is not None)
    assert keyfile.decode(data, passphrase) == secret


@given(data=st.data(), secret=st.binary(min_size=0, max_size=200))
def test_any_single_byte_corruption_of_plain_file_is_refused(
    data: st.DataObject, secret: bytes
) -> None:
    encoded = bytearray(keyfile.encode(secret))
    pos = data.draw(st.integers(0, len(encoded) - 1), label="pos")
    encoded[pos] ^= data.draw(st.integers(1, 255), label="xor")
    with pytest.raises(keyfile.KeyFileError):
        keyfile.decode(bytes(encoded))


@given(data=st.data(), secret=st.binary(min_size=0, max_size=200))
def test_any_truncation_of_plain_file_is_refused(data: st.DataObject, secret: bytes) -> None:
    encoded = keyfile.encode(secret)
    keep = data.draw(st.integers(0, len(encoded) - 1), label="keep")
    with pytest.raises(keyfile.KeyFileError):
        keyfile.decode(encoded[:keep])


# --- crash safety of write_atomic --------------------------------------------------------------


def test_write_atomic_creates_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "f"
    write_atomic(target, b"one")
    assert target.read_bytes() == b"one"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    write_atomic(target, b"two", mode=0o644)
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


@pytest.mark.parametrize("failing", ["fsync", "chmod", "replace"])
def test_write_atomic_failure_keeps_old_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    target = tmp_path / "identity.key"
    target.write_bytes(b"old content")
    calls = []

    def boom(*args: object, **kwargs: object) -> None:
        calls.append(args)
        raise OSError(5, "simulated I/O error")

    monkeypatch.setattr(os, failing, boom)
    with pytest.raises(OSError, match="simulated"):
        write_atomic(target, b"new content" * 1000)
    monkeypatch.undo()
    assert calls
    assert target.read_bytes() == b"old content"
    assert [p.name for p in tmp_path.iterdir()] == ["identity.key"]


def test_write_atomic_survives_sigkill_before_rename(tmp_path: Path) -> None:
    home, old = make_home(tmp_path)
    before = home.identity_path.read_bytes()
    script = textwrap.dedent(
        """
        import os, signal, sys
        from pathlib import Path

        from qiz.crypto import keyfile
        from qiz.fsio import write_atomic
        from qiz.identity import NodeIdentity

        new = keyfile.encode(NodeIdentity.generate().to_secret_bytes())
        os.replace = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        write_atomic(Path(sys.argv[1]), new)
        print("not reached")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(home.identity_path)],
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert b"not reached" not in proc.stdout
    assert home.identity_path.read_bytes() == before
    assert home.load_identity().node_id == old.node_id
    # the crash may leave the hidden temp file behind; it must still be private
    for leftover in home.path.iterdir():
        if leftover.name not in (IDENTITY_NAME, CONFIG_NAME):
            assert leftover.name.startswith(f".{IDENTITY_NAME}{TEMP_MARKER}")
            assert stat.S_IMODE(leftover.stat().st_mode) == 0o600


# --- init over an existing home ---------------------------------------------------------------


def test_init_refuses_existing_home(tmp_path: Path) -> None:
    home, identity = make_home(tmp_path)
    before = snapshot(home.path)
    with pytest.raises(HomeError, match="already holds a QIZ home"):
        home.init(scrypt=FAST)
    assert snapshot(home.path) == before
    assert home.load_identity().node_id == identity.node_id


def test_init_refuses_when_only_config_exists(tmp_path: Path) -> None:
    path = tmp_path / "home"
    path.mkdir()
    (path / CONFIG_NAME).write_bytes(b"[node]\n")
    with pytest.raises(HomeError):
        Home(path).init(scrypt=FAST)
    assert snapshot(path) == {CONFIG_NAME: b"[node]\n"}


def test_init_force_keeps_old_files_as_backups(tmp_path: Path) -> None:
    home, old = make_home(tmp_path)
    old_key = home.identity_path.read_bytes()
    old_config = home.config_path.read_bytes()
    new = home.init(force=True, scrypt=FAST)
    assert new.node_id != old.node_id
    assert home.load_identity().node_id == new.node_id
    key_backups = list(home.path.glob(f"{IDENTITY_NAME}.bak-*"))
    config_backups = list(home.path.glob(f"{CONFIG_NAME}.bak-*"))
    assert len(key_backups) == 1
    assert len(config_backups) == 1
    assert key_backups[0].read_bytes() == old_key
    assert config_backups[0].read_bytes() == old_config
    assert stat.S_IMODE(key_backups[0].stat().st_mode) == 0o600
    secret = keyfile.decode(key_backups[0].read_bytes())
    assert NodeIdentity.from_secret_bytes(secret).node_id == old.node_id


def test_init_force_twice_in_one_second_keeps_every_backup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import qiz.home

    monkeypatch.setattr(qiz.home, "time", SimpleNamespace(strftime=lambda *a: "20300101T000000"))
    home, first = make_home(tmp_path)
    home.init(force=True, scrypt=FAST)
    home.init(force=True, scrypt=FAST)
    backups = [keyfile.decode(p.read_bytes()) for p in home.path.glob(f"{IDENTITY_NAME}.bak-*")]
    ids = {NodeIdentity.from_secret_bytes(secret).node_id for secret in backups}
    assert first.node_id in ids


# --- where the home is ------------------------------------------------------------------------


def test_qiz_home_env_sets_default_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "from-env"
    monkeypatch.setenv("QIZ_HOME", str(target))
    assert default_home() == target
    home = Home()
    assert home.path == target
    identity = home.init(scrypt=FAST)
    assert (target / IDENTITY_NAME).is_file()
    assert Home().load_identity().node_id == identity.node_id
    # an explicit path wins over the environment
    assert Home(tmp_path / "explicit").path == tmp_path / "explicit"


def test_empty_qiz_home_env_falls_back_to_user_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QIZ_HOME", "")
    path = Home().path
    assert path.is_absolute()
    assert path.name == "qiz"


def test_scrypt_cost_of_a_crafted_file_is_capped() -> None:
    """A locked file asking for 16 GiB of scrypt memory is refused before any work."""
    data = bytearray(keyfile.encode(b"secret", "pw", keyfile.ScryptParams(log2_n=10)))
    header = len(keyfile.MAGIC) + 2 + 16
    data[header], data[header + 1] = 22, 32  # log2 N = 22, r = 32: 16 GiB
    with pytest.raises(keyfile.KeyFileError, match="implausible"):
        keyfile.decode(bytes(data), "pw")


def test_home_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    target = tmp_path / "plainfile"
    target.write_text("x")
    with pytest.raises(HomeError, match="not a directory"):
        Home(target).init(scrypt=FAST)
    assert target.read_text() == "x"


def test_new_identities_solve_the_configured_id_puzzle(tmp_path: Path) -> None:
    from qiz.home import DEFAULT_PUZZLE_BITS
    from qiz.identity.puzzle import solves

    home = Home(tmp_path / "p")
    identity = home.init(scrypt=FAST)
    assert solves(identity.node_id.digest, DEFAULT_PUZZLE_BITS)
    assert home.load_config().puzzle_bits == DEFAULT_PUZZLE_BITS
    home.config_path.write_text('[dht]\npuzzle_bits = "hard"\n')
    with pytest.raises(HomeError, match="puzzle_bits"):
        home.load_config()
