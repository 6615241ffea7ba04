"""Identity commands: init, id, record, sign, verify, seal, open."""

from __future__ import annotations

import base64
import getpass
import hashlib
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from qiz import wire
from qiz.cli.common import Session, read_file
from qiz.cli.output import CheckFailed, UserError, console, emit, err_console, guarded
from qiz.crypto.composite import stream_digest
from qiz.crypto.errors import DecryptionFailed, InvalidIdentifier, InvalidSignature
from qiz.crypto.ids import NodeId
from qiz.fsio import write_atomic
from qiz.home import HomeError
from qiz.identity.armor import ArmorError, armor, dearmor
from qiz.identity.detached import SignatureFileError, make_signature_file, verify_signature_file
from qiz.identity.peer_record import MAX_RECORD_SIZE, PeerRecord, PeerRecordError
from qiz.identity.sealed_message import (
    MAX_MESSAGE,
    NotSealedError,
    SealedMessageError,
    open_message,
    seal_message,
)

RECORD_ARMOR = "QIZ PEER RECORD"
# fields every peer record has (qiz.identity.peer_record): a file without them is another kind
# of file (exit 2); one with them that fails a check is a bad record (exit 1 at verify)
RECORD_SHAPE = frozenset({"v", "id", "sk", "xk", "sig"})
PANEL = "Identity and files"  # the heading these commands have in 'qiz --help'
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def _fingerprint(raw: bytes) -> str:
    return hashlib.sha3_256(raw).hexdigest()[:32]


def load_record_file(
    path: Path,
    *,
    now: float,
    check_expiry: bool = True,
    invalid: type[Exception] = CheckFailed,
) -> PeerRecord:
    """A verified peer record from a file written by ``qiz record`` (armored or binary).
    ``invalid`` is what a bad record means to the caller: a failed check (``verify``) or a
    bad input (``seal --to``)."""
    blob = read_file(path, what="record file", max_size=4 * MAX_RECORD_SIZE)
    try:
        raw = dearmor(RECORD_ARMOR, blob, max_size=MAX_RECORD_SIZE)
        fields = wire.decode(raw, max_size=MAX_RECORD_SIZE, what="peer record")
    except (ArmorError, wire.WireError):
        fields = None
    if not isinstance(fields, dict) or not fields.keys() >= RECORD_SHAPE:
        # not a record at all (garbage, cut short, a .sig or another file): the wrong file
        # was given, a user error; the decoder's words (CBOR, major types) would help nobody
        raise UserError(f"{path} is not a QIZ peer record (made by 'qiz record')") from None
    try:
        return PeerRecord.verify(raw, now=now, check_expiry=check_expiry)
    except PeerRecordError as exc:
        raise invalid(f"record file {path} is not a valid peer record: {exc}") from None


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel=PANEL)(guarded(init))
    app.command("id", rich_help_panel=PANEL)(guarded(show_id))
    app.command(rich_help_panel=PANEL)(guarded(record))
    app.command(rich_help_panel=PANEL)(guarded(sign))
    app.command(rich_help_panel=PANEL)(guarded(verify))
    app.command(rich_help_panel=PANEL)(guarded(seal))
    app.command("open", rich_help_panel=PANEL)(guarded(open_cmd))


def init(
    ctx: typer.Context,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing home (old files kept as .bak).")
    ] = False,
    ask_passphrase: Annotated[
        bool, typer.Option("--ask-passphrase", help="Lock the key file with a typed passphrase.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Create the home: config.toml and a new post-quantum identity."""
    session: Session = ctx.obj
    phrase = session.passphrase()
    if ask_passphrase and phrase is None:
        if not sys.stdin.isatty():
            raise UserError(
                "--ask-passphrase needs a terminal; give the passphrase with --passphrase-file "
                "(before the command) or QIZ_PASSPHRASE"
            )
        phrase = getpass.getpass("new passphrase: ")
        if phrase != getpass.getpass("again: "):
            raise UserError("the two passphrases differ; nothing was written")
        if not phrase:
            raise UserError("an empty passphrase locks nothing; nothing was written")
    try:
        identity = session.home.init(passphrase=phrase, force=force)
    except HomeError as exc:
        raise UserError(str(exc)) from None
    session.secure_home()  # a directory that existed before init keeps its mode until now
    data = {
        "home": str(session.home.path),
        "node_id": str(identity.node_id),
        "locked": bool(phrase),
    }
    emit(
        as_json,
        data,
        lambda: console.print(
            f"created QIZ home {session.home.path}\nnode id  {identity.node_id}"
            + ("\nkey file locked with a passphrase" if phrase else "")
        ),
    )


def show_id(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Print this node's id and its key fingerprints."""
    session: Session = ctx.obj
    identity = session.identity()
    data = {
        "node_id": str(identity.node_id),
        "home": str(session.home.path),
        "fingerprints": {
            "ml-dsa-65": _fingerprint(identity.public_key.mldsa_part),
            "ed25519": _fingerprint(identity.public_key.ed25519_part),
            "x-wing": _fingerprint(identity.xwing_public.raw),
        },
    }

    def human() -> None:
        console.print(f"node id    {data['node_id']}")
        for name, fp in data["fingerprints"].items():
            console.print(f"{name:<10} {fp}")

    emit(as_json, data, human)


def record(
    ctx: typer.Context,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the record to this file.")
    ] = None,
    address: Annotated[
        list[str] | None,
        typer.Option("--address", help="Address to publish (ip:port); default: node.listen."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Print this node's signed peer record, for others to pin."""
    session: Session = ctx.obj
    identity = session.identity()
    addresses = address or [session.home.load_config().listen]
    now = time.time()
    try:
        rec = PeerRecord.create(identity, addresses, seq=int(now), now=now)
    except (ValueError, PeerRecordError) as exc:
        raise UserError(f"cannot make a peer record: {exc}") from None
    text = armor(RECORD_ARMOR, rec.raw)
    if output is not None:
        write_atomic(output, text.encode("ascii"), mode=0o644)
    data = {
        "node_id": str(rec.node_id),
        "addresses": list(rec.addresses),
        "seq": rec.seq,
        "expires_at": rec.expires,
        "record": base64.b64encode(rec.raw).decode("ascii"),
        "output": str(output) if output else None,
    }

    def human() -> None:
        if output is None:
            sys.stdout.write(text)
        else:
            console.print(f"wrote the peer record of {rec.node_id} to {output}")

    emit(as_json, data, human)


def sign(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="File to sign.")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Signature path (default FILE.sig).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Write FILE.sig, a detached ML-DSA-65 + Ed25519 signature of FILE."""
    session: Session = ctx.obj
    identity = session.identity()
    digest = _file_digest(file)
    target = output or file.with_name(file.name + ".sig")
    write_atomic(target, make_signature_file(identity, digest), mode=0o644)
    data = {"file": str(file), "signature": str(target), "signer": str(identity.node_id)}
    emit(as_json, data, lambda: console.print(f"signed {file} -> {target}"))


def _file_digest(file: Path) -> bytes:
    try:
        with file.open("rb") as handle:
            return stream_digest(handle)
    except FileNotFoundError:
        raise UserError(f"file {file} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"{file} is a directory") from None
    except PermissionError:
        raise UserError(f"file {file} cannot be read (permission denied)") from None


def verify(
    file: Annotated[Path, typer.Argument(help="The signed file.")],
    signature: Annotated[Path, typer.Argument(help="Its detached signature (FILE.sig).")],
    node_id: Annotated[
        str | None, typer.Option("--id", help="The node id that must have signed.")
    ] = None,
    record_file: Annotated[
        Path | None, typer.Option("--record", help="The signer's peer record (from 'qiz record').")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check a detached signature. Exit 0 if valid, 1 if not."""
    if node_id is None and record_file is None:
        raise UserError("say who must have signed: give --id ID, --record RECORDFILE, or both")
    expected = _parse_node_id(node_id) if node_id is not None else None
    rec = None
    if record_file is not None:
        # Expiry limits how long a record's *addresses* may be used; the id-to-key binding
        # it proves does not expire, and old signatures must stay checkable.
        rec = load_record_file(record_file, now=time.time(), check_expiry=False)
        if expected is not None and rec.node_id != expected:
            raise CheckFailed(f"INVALID: the record is for {rec.node_id}, not for {expected}")
        expected = rec.node_id
    sig_bytes = read_file(signature, what="signature file", max_size=64 * 1024)
    digest = _file_digest(file)
    try:
        signer = verify_signature_file(
            sig_bytes, digest, expected_id=expected, expected_key=rec.signing_key if rec else None
        )
    except SignatureFileError as exc:
        raise UserError(f"{signature}: {exc}") from None
    except InvalidSignature as exc:
        raise CheckFailed(
            f"INVALID: {exc}", {"valid": False, "file": str(file), "reason": str(exc)}
        ) from None
    data = {"valid": True, "file": str(file), "signer": str(signer)}
    emit(as_json, data, lambda: console.print(f"valid: {file} is signed by {signer}"))


def _parse_node_id(text: str) -> NodeId:
    try:
        return NodeId.parse(text)
    except InvalidIdentifier as exc:
        raise UserError(f"--id: {exc}") from None


def seal(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="File to seal.")],
    to: Annotated[Path, typer.Option("--to", help="The recipient's peer record file.")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Output path (default FILE.sealed).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Sign FILE and encrypt it to a recipient (HPKE, ML-KEM-768 + X25519): writes FILE.sealed."""
    session: Session = ctx.obj
    recipient = load_record_file(to, now=time.time(), invalid=UserError)
    identity = session.identity()
    plaintext = read_file(file, max_size=MAX_MESSAGE)
    sealed = seal_message(identity, recipient, plaintext)
    target = output or file.with_name(file.name + ".sealed")
    write_atomic(target, sealed, mode=0o644)
    data = {
        "file": str(file),
        "sealed": str(target),
        "sender": str(identity.node_id),
        "recipient": str(recipient.node_id),
        "sealed_bytes": len(sealed),
    }
    emit(as_json, data, lambda: console.print(f"sealed {file} for {recipient.node_id} -> {target}"))


def open_cmd(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A FILE.sealed made for this node.")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the plaintext here, not stdout.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Decrypt a sealed file and check its sender's signature."""
    session: Session = ctx.obj
    identity = session.identity()
    sealed = read_file(file, what="sealed file", max_size=MAX_MESSAGE + 16 * 1024)
    try:
        opened = open_message(identity, sealed)
    except NotSealedError:
        raise UserError(f"{file} is not a sealed QIZ message (made by 'qiz seal')") from None
    except DecryptionFailed:
        raise CheckFailed(
            f"cannot open {file}: it was sealed for another node, or altered on the way"
        ) from None
    except SealedMessageError as exc:
        raise CheckFailed(f"cannot open {file}: {exc}") from None
    if output is not None:
        write_atomic(output, opened.message, mode=0o600)
    data = {
        "file": str(file),
        "sender": str(opened.sender),
        "plaintext_bytes": len(opened.message),
        "output": str(output) if output else None,
    }
    if as_json and output is None:
        data["plaintext_b64"] = base64.b64encode(opened.message).decode("ascii")

    def human() -> None:
        if output is None:
            sys.stdout.buffer.write(opened.message)
            sys.stdout.flush()
        err_console.print(f"from {opened.sender} (signature verified)")

    emit(as_json, data, human)
