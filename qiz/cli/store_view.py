"""How the store commands render for people: a put's and a get's summary, the listing and one
content's shares. Pure functions over the JSON shapes the node answers
(docs/json/store-*.schema.json), so what a person reads and what ``--json`` prints come from
the same data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from qiz.cli.human import duration, moment, plural, size
from qiz.cli.job_view import columns
from qiz.cli.output import console

SHORT_ID = 16  # characters of a content or node id shown in tables


def short(text: str | None) -> str:
    return "-" if not text else text[:SHORT_ID]


def put_text(answer: Mapping[str, Any]) -> str:
    """``stored file (1.0 MiB, 8 chunks) as 3-of-5 shares on 5 holders in 1.2 s``."""
    sealed = answer.get("sealed_to") or []
    to = f", sealed to {plural(len(sealed), 'recipient')}" if sealed else ""
    return (
        f"stored {answer['kind']} ({size(answer['size'])}, {plural(answer['chunks'], 'chunk')}) "
        f"as {answer['k']}-of-{answer['n']} shares on {plural(len(answer['holders']), 'holder')}"
        f"{to} in {duration(answer['duration_s'])}"
    )


def get_text(answer: Mapping[str, Any]) -> str:
    bad = answer.get("bad_shares") or 0
    skipped = f"; {plural(bad, 'bad share')} detected and routed around" if bad else ""
    return (
        f"wrote {answer['path']} ({answer['kind']}, {size(answer['size'])}, checked) in "
        f"{duration(answer['duration_s'])} from {plural(answer['holders_asked'], 'holder')}"
        f"{skipped}"
    )


def gc_text(answer: Mapping[str, Any]) -> str:
    return (
        f"freed {size(answer['freed_bytes'])}: {plural(answer['columns'], 'column')} "
        "without a live lease deleted"
    )


def role(row: Mapping[str, Any]) -> str:
    """This node's part in a content: it put it (publisher) or pinned it; either way it keeps
    it alive (renews, repairs) only while pinned."""
    if row.get("published"):
        return "publisher" if row.get("pinned") else "publisher, unpinned"
    return "pinned" if row.get("pinned") else "unpinned"


def show_listing(rows: Sequence[Mapping[str, Any]]) -> None:
    if not rows:
        console.print("no content published or pinned here (store some: qiz store put PATH)")
        return
    header = ("CONTENT", "NAME", "KIND", "SIZE", "K/N", "LIVE", "HEALTH", "ROLE", "SEALED")
    columns(
        header,
        [
            (
                short(row["cid"]),
                row.get("name") or "-",
                row["kind"],
                size(row["size"]),
                f"{row['k']}/{row['n']}",
                f"{row['live']}/{row['n']}",
                row["health"],
                role(row),
                "yes" if row.get("sealed") else "no",
            )
            for row in rows
        ],
    )


def show_status(answer: Mapping[str, Any]) -> None:
    """The content's line, one row per share (index, holder, state, lease expiry), health."""
    sealed = answer.get("sealed_to") or []
    console.print(
        f"content {answer['cid']}  {answer['kind']}  {size(answer['size'])}  "
        f"{plural(answer['chunks'], 'chunk')}  {answer['k']}-of-{answer['n']}"
        + (f"  sealed to {plural(len(sealed), 'recipient')}" if sealed else "")
        + ("  pinned" if answer.get("pinned") else ""),
        markup=False,
    )
    columns(
        ("SHARE", "HOLDER", "STATE", "LEASE UNTIL"),
        [
            (str(s["index"]), short(s.get("holder")), s["state"], moment(s.get("expires_at")))
            for s in answer["shares"]
        ],
    )
    console.print(
        f"health: {answer['health']}, {answer['live']} of {answer['n']} shares live "
        f"({answer['k']} needed to read)",
        markup=False,
    )
