"""The storage pool's faces without a mesh: the CLI's argument errors (one line, exit 2, before
anything is sent), the NodeAPI store operations over a stand-in service (ids parsed, paths
absolute, the service's answers renamed and in the shapes docs/json/store-*.schema.json
documents), the progress events the bar reads, and the renderers.

The end-to-end run on real node processes is tests/test_store_web.py."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from qiz.cli import store_view
from qiz.cli.main import run as qiz_run
from qiz.cli.store_transfer import progress_of
from qiz.crypto.ids import ContentId
from qiz.node_api import MAX_DOWNLOAD, Download, NodeAPI, StoreDisabled, error_answer, invoke
from qiz.store.service import GetResult, NodeId, PutResult
from qiz.web.metrics import store_metrics
from tests.json_shapes import check_shape

CID = ContentId.of(b"a manifest")
HOLDERS = [NodeId(bytes([i]) * 32) for i in range(5)]
# a content id with one character changed: the checksum catches it
TYPO = str(CID)[:-1] + ("a" if str(CID)[-1] != "a" else "b")


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = qiz_run([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line(err: str, *words: str) -> None:
    line = err.strip()
    assert "\n" not in line and line.startswith("qiz: error: "), err
    assert "Traceback" not in err and "internal error" not in err, err
    for word in words:
        assert word in line, line


# ---------------------------------------------------------------- the command line


@pytest.mark.parametrize("command", ["get", "status", "pin", "unpin", "rm"])
def test_a_mistyped_content_id_is_one_line_and_exit_2(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # no node runs in this home: the id is refused before anything is asked of one
    code, out, err = cli(capsys, "--home", tmp_path, "store", command, TYPO)
    assert code == 2
    one_line(err, "bad checksum", "content id")
    code, out, err = cli(capsys, "--home", tmp_path, "store", command, str(HOLDERS[0]), "--json")
    assert code == 2
    answer = json.loads(out)
    check_shape("(failed)", answer)
    assert "is a node id, not a content id" in answer["error"]


def test_put_refuses_bad_arguments_before_asking_the_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    code, _, err = cli(capsys, "--home", home, "store", "put", tmp_path / "missing")
    assert code == 2
    one_line(err, "missing does not exist")
    data = tmp_path / "data.bin"
    data.write_bytes(b"x")
    code, _, err = cli(capsys, "--home", home, "store", "put", data, "--k", "3", "--n", "2")
    assert code == 2
    one_line(err, "--k 3 is more than --n 2")
    code, _, err = cli(capsys, "--home", home, "store", "put", data, "--n", "17")
    assert code == 2
    assert "--n" in err and "less than or equal to 16" in err and "Traceback" not in err
    code, _, err = cli(capsys, "--home", home, "store", "put", data, "--to", "nobody.rec")
    assert code == 2
    one_line(err, "--to nobody.rec", "not a node id")
    code, _, err = cli(capsys, "--home", home, "store", "put", data, "--to", "qizn1" + "a" * 56)
    assert code == 2
    one_line(err, "node id")
    # all well formed: the node is asked, and there is none
    code, out, err = cli(capsys, "--home", home, "store", "put", data, "--json")
    assert code == 2
    one_line(err, "no QIZ home")
    check_shape("(failed)", json.loads(out))


def test_get_refuses_to_overwrite_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "kept.txt"
    target.write_bytes(b"mine")
    code, out, err = cli(
        capsys, "--home", tmp_path / "home", "store", "get", str(CID), "-o", target, "--json"
    )
    assert code == 2
    one_line(err, "kept.txt exists", "--force")
    assert json.loads(out)["ok"] is False
    assert target.read_bytes() == b"mine"
    # with --force the command goes on to the node (none runs here)
    code, _, err = cli(
        capsys, "--home", tmp_path / "home", "store", "get", str(CID), "-o", target, "--force"
    )
    assert code == 2
    one_line(err, "no QIZ home")
    assert target.read_bytes() == b"mine"


# ---------------------------------------------------------------- NodeAPI over a stand-in


class FakeStore:
    """What tests/test_store_web.py's real StoreService answers, by the interface, recording
    what it was asked."""

    async def put(self, path: Path, **kw: Any) -> PutResult:
        self.calls.append(("put", (path, kw)))
        holders = [str(h) for h in HOLDERS]
        k, n = kw["k"] or 3, kw["n"] or 5
        return PutResult(CID, "file", 300_000, 3, k, n, holders, [], 0.25, 5)

    async def get(self, cid: ContentId, target: Path, **kw: Any) -> GetResult:
        self.calls.append(("get", (cid, target, kw)))
        return GetResult(cid, "file", str(target), 300_000, 0.5, 3, 1)

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.described = SimpleNamespace(name="data.bin", kind="file", size=300_000)

    async def manifest(self, cid: ContentId) -> SimpleNamespace:
        return self.described

    async def fetch_bytes(self, cid: ContentId, *, max_size: int) -> bytes:
        self.calls.append(("fetch_bytes", max_size))
        return b"the file"

    def listing(self) -> list[dict[str, Any]]:
        return [
            {
                "cid": CID,
                "kind": "file",
                "name": "data.bin",
                "size": 300_000,
                "k": 3,
                "n": 5,
                "pinned": False,
                "published": True,
                "created": 1_760_000_000,
                "sealed": False,
                "health": "degraded",
                "live": 4,
            }
        ]

    async def status(self, cid: ContentId) -> dict[str, Any]:
        states = ["ok", "ok", "ok", "missing", "unreachable"]
        return {
            "cid": cid,
            "kind": "file",
            "size": 300_000,
            "chunks": 3,
            "k": 3,
            "n": 5,
            "sealed_to": [],
            "pinned": False,
            "shares": [
                {"index": j, "holder": HOLDERS[j], "state": s, "expires": 1_760_600_000}
                for j, s in enumerate(states)
            ],
            "live": 3,
            "health": "degraded",
        }

    async def pin(self, cid: ContentId) -> dict[str, Any]:
        return {"cid": str(cid), "pinned": True, "live": 5}

    async def unpin(self, cid: ContentId) -> dict[str, Any]:
        return {"cid": str(cid), "pinned": False}

    async def rm(self, cid: ContentId) -> dict[str, Any]:
        return {"cid": str(cid), "removed": True, "released": 5}

    async def gc(self) -> dict[str, Any]:
        return {"freed_bytes": 4096, "columns": 2}

    def stats(self) -> dict[str, int]:
        return {
            "bytes_stored": 123,
            "columns_held": 2,
            "quota_bytes": 1 << 30,
            "repairs": 1,
            "bad_shares": 0,
        }


def fake_api(store: FakeStore | None) -> NodeAPI:
    joined = asyncio.Event()
    joined.set()
    node = SimpleNamespace(store=store, joined=joined, clock=time.time)
    return NodeAPI(node)  # type: ignore[arg-type]


def call(api: NodeAPI, name: str, **args: Any) -> Any:
    return asyncio.run(invoke(api, name, args))


def refused(api: NodeAPI, name: str, **args: Any) -> tuple[int, str]:
    with pytest.raises(Exception) as caught:
        call(api, name, **args)
    return error_answer(caught.value)


def test_store_operations_answer_in_the_documented_shapes(tmp_path: Path) -> None:
    store = FakeStore()
    api = fake_api(store)
    put = call(api, "store_put", path=str(tmp_path / "data.bin"), k=2, n=4)
    check_shape("store put", {"ok": True, **put})
    assert put["cid"] == str(CID) and put["duration_s"] == 0.25 and "seconds" not in put
    assert store.calls[-1] == (
        "put",
        (tmp_path / "data.bin", {"k": 2, "n": 4, "to": [], "transfer": None}),
    )
    got = call(api, "store_get", cid=str(CID), output=str(tmp_path / "out"), transfer="t-1")
    check_shape("store get", {"ok": True, **got})
    assert store.calls[-1] == ("get", (CID, tmp_path / "out", {"force": False, "transfer": "t-1"}))
    # no output name: the content's own name (its manifest's) in the directory given
    call(api, "store_get", cid=str(CID), output=str(tmp_path), into=True, force=True)
    assert store.calls[-1][1][1] == tmp_path / "data.bin"
    listing = call(api, "store_ls")
    check_shape("store ls", {"ok": True, **listing})
    assert listing["content"][0]["created_at"] == 1_760_000_000
    status = call(api, "store_status", cid=str(CID))
    check_shape("store status", {"ok": True, **status})
    assert [s["holder"] for s in status["shares"]] == [str(h) for h in HOLDERS]
    assert status["shares"][0]["expires_at"] == 1_760_600_000
    for verb in ("pin", "unpin", "rm"):
        answer = call(api, f"store_{verb}", cid=str(CID))
        check_shape(f"store {verb}", {"ok": True, **answer})
        assert answer["cid"] == str(CID)
    check_shape("store gc", {"ok": True, **call(api, "store_gc")})
    assert api._store_stats() == store.stats()


def test_store_operations_refuse_bad_arguments(tmp_path: Path) -> None:
    api = fake_api(FakeStore())
    status, message = refused(api, "store_status", cid=TYPO)
    assert status == 400 and "bad checksum" in message
    status, message = refused(api, "store_put", path="data.bin")
    assert status == 400 and "absolute path" in message
    status, message = refused(api, "store_get", cid=str(CID), output="out")
    assert status == 400 and "absolute path" in message
    status, message = refused(api, "store_put", path=str(tmp_path), k="three")
    assert status == 400 and "k must be an integer" in message
    status, message = refused(api, "store_get", cid=str(CID), output=str(tmp_path), transfer="a b")
    assert status == 400 and "transfer" in message
    status, message = refused(api, "store_put", path=str(tmp_path), to="qizn1...")
    assert status == 400 and "list" in message
    status, message = refused(api, "store_put", path=str(tmp_path), to=[str(tmp_path / "no.rec")])
    assert status == 400 and "no.rec" in message
    status, message = refused(api, "store_put", path=str(tmp_path), to=["/x"] * 17)
    assert status == 400 and "at most 16" in message


def test_content_over_http_is_a_bounded_download() -> None:
    store = FakeStore()
    api = fake_api(store)
    download = call(api, "store_content", cid=str(CID))
    assert isinstance(download, Download)
    assert (download.filename, download.data) == ("data.bin", b"the file")
    assert store.calls[-1] == ("fetch_bytes", MAX_DOWNLOAD)
    # a manifest's name reaches a header: quotes, line breaks and slashes do not
    store.described = SimpleNamespace(name='a"b\r\nSet-Cookie: x=1;.txt', kind="file", size=5)
    assert call(api, "store_content", cid=str(CID)).filename == "a_b__Set-Cookie__x_1_.txt"
    store.described = SimpleNamespace(name=None, kind="file", size=5)
    assert call(api, "store_content", cid=str(CID)).filename == CID.short()
    store.described = SimpleNamespace(name=None, kind="dir", size=5)
    status, message = refused(api, "store_content", cid=str(CID))
    assert status == 400 and "is a directory" in message and "qiz store get" in message
    store.described = SimpleNamespace(name="big", kind="file", size=MAX_DOWNLOAD + 1)
    status, message = refused(api, "store_content", cid=str(CID))
    assert status == 400 and "over the 16 MiB" in message
    assert store.calls[-1] == ("fetch_bytes", MAX_DOWNLOAD)  # nothing fetched for the refusals


def test_a_node_without_the_pool_says_so() -> None:
    api = fake_api(None)
    for name, args in (("store_ls", {}), ("store_status", {"cid": str(CID)}), ("store_gc", {})):
        status, message = refused(api, name, **args)
        assert status == 503 and "without the storage pool" in message, name
    with pytest.raises(StoreDisabled):
        api.store_ls()
    assert api._store_stats() is None
    assert list(store_metrics(None)) == []


def test_store_metrics_from_stats() -> None:
    families = {m.name: m.samples[0].value for m in store_metrics(FakeStore().stats())}
    assert families == {
        "qiz_store_bytes_stored": 123,
        "qiz_store_columns_held": 2,
        "qiz_store_quota_bytes": 1 << 30,
        "qiz_store_repairs": 1,
        "qiz_store_bad_shares": 0,
    }


# ---------------------------------------------------------------- progress and rendering


def test_progress_reads_only_its_own_transfer() -> None:
    event = {
        "id": 9,
        "kind": "store.progress",
        "transfer": "t1",
        "op": "get",
        "done": 5,
        "total": 10,
    }
    assert progress_of(event, "t1") == (5, 10)
    assert progress_of(event, "t2") is None
    assert progress_of({**event, "kind": "store.put"}, "t1") is None
    assert progress_of({**event, "done": "5"}, "t1") is None
    assert progress_of({**event, "done": 12}, "t1") == (10, 10)


def test_status_renders_each_share(capsys: pytest.CaptureFixture[str]) -> None:
    api = fake_api(FakeStore())
    store_view.show_status(call(api, "store_status", cid=str(CID)))
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()[2:7]]
    assert [r[0] for r in rows] == ["0", "1", "2", "3", "4"]
    assert [r[2] for r in rows] == ["ok", "ok", "ok", "missing", "unreachable"]
    assert rows[0][1] == str(HOLDERS[0])[:16]
    assert "health: degraded, 3 of 5 shares live (3 needed to read)" in out
    store_view.show_listing(call(api, "store_ls")["content"])
    out = capsys.readouterr().out
    assert "data.bin" in out and "4/5" in out and "degraded" in out and "publisher, unpinned" in out
    put = call(api, "store_put", path="/data.bin")
    assert store_view.put_text(put).startswith(
        "stored file (293.0 KiB, 3 chunks) as 3-of-5 shares on 5 holders"
    )
