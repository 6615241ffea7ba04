"""Jobs and the storage pool (issue 16, "Jobs use it"): inputs named by content id, fetched
and checked before a spec is checked or run; results stored in the pool and verified by id."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from qiz.compute import execute
from qiz.compute import spec as specs
from qiz.compute.attest import verify_file
from qiz.compute.checker import SpecChecker
from qiz.compute.errors import CheckerBusy, JobError, SpecError
from qiz.compute.inputs import InputFetcher
from qiz.compute.service import ComputeConfig
from qiz.crypto.ids import ContentId
from qiz.home import Home
from qiz.identity import NodeIdentity
from qiz.node import Node
from qiz.resolve.dht import DhtConfig
from qiz.store.config import StoreConfig
from tests.helpers import async_eventually, manager, ok_json, qiz, run, running_mesh

BELL = "OPENQASM 3.0; qubit[2] q; bit[2] c; h q[0]; cx q[0], q[1]; c = measure q;"
TWO = "OPENQASM 3.0; qubit[3] q; bit[3] c; x q[2]; c = measure q;"
LIMITS = specs.Limits()


@pytest.fixture(scope="module")
def me() -> NodeIdentity:
    return NodeIdentity.generate()


def cid_of(text: str) -> ContentId:
    """A content id for tests that need no pool (the pool names a manifest, not the text)."""
    return ContentId(hashlib.sha3_256(text.encode()).digest())


def sampler_spec(me: NodeIdentity, qasm: object, **extra: object) -> bytes:
    document = {"kind": "sampler", "params": {"qasm": qasm, "shots": 64}, "seed": 1, **extra}
    return specs.sign(specs.make_body(document, me), me)


# ----------------------------------------------------------------------------- the spec


def test_a_spec_names_its_circuit_by_content_id(me: NodeIdentity) -> None:
    cid = cid_of(BELL)
    raw = sampler_spec(me, {"cid": str(cid)})
    assert specs.input_refs(raw) == [("params.qasm", cid)]
    spec = specs.parse(raw, LIMITS, inputs={str(cid): BELL})
    assert spec.tasks[0].params["qasm"] == BELL  # what runs is the text
    assert spec.body["params"]["qasm"] == {"cid": str(cid)}  # what is signed is the id
    assert spec.tasks[0].shape.num_qubits == 2
    # the job id covers the content id: another content, another job
    other = sampler_spec(me, {"cid": str(cid_of(TWO))})
    assert specs.parse(other, LIMITS, inputs={str(cid_of(TWO)): TWO}).job_id != spec.job_id
    assert specs.parse(other, LIMITS, inputs={str(cid_of(TWO)): TWO}).num_qubits == 3
    # inline specs name nothing and cost no decode
    assert specs.input_refs(sampler_spec(me, BELL)) == []


def test_an_unfetched_input_is_refused_and_an_attestation_check_leaves_it(
    me: NodeIdentity,
) -> None:
    cid = cid_of(BELL)
    raw = sampler_spec(me, {"cid": str(cid)})
    with pytest.raises(SpecError, match=rf"params.qasm: input {cid} was not fetched"):
        specs.parse(raw, LIMITS)
    spec = specs.parse(raw, LIMITS, unresolved=True)
    assert spec.tasks[0].params["qasm"] == {"cid": str(cid)}


def test_a_sweep_base_may_name_its_graph_by_content_id(me: NodeIdentity) -> None:
    graph = "0 1\n1 2\n2 0\n2 3\n"
    cid = cid_of(graph)
    document = {
        "kind": "sweep",
        "params": {
            "over": "qaoa",
            "base": {"graph": {"cid": str(cid)}, "p": 1, "gammas": [0.1], "betas": [0.2]},
            "axes": {"gammas.0": [0.1, 0.2, 0.3]},
            "shard": 2,
        },
    }
    raw = specs.sign(specs.make_body(document, me), me)
    assert specs.input_refs(raw) == [("params.base.graph", cid)]
    spec = specs.parse(raw, LIMITS, inputs={str(cid): graph})
    assert len(spec.tasks) == 2
    assert all(t.params["graph"] == graph for t in spec.tasks)
    result = execute.run_points("qaoa", spec.tasks[0].params, spec.tasks[0].points, 0)
    assert len(result) == 2 and all(isinstance(r["expectation"], float) for r in result)


@pytest.mark.parametrize(
    ("ref", "words"),
    [
        ({"cid": "qizc1nope"}, "wrong length"),
        ({"cid": str(cid_of(BELL)), "size": 3}, 'text, or {"cid"'),
        ({"id": str(cid_of(BELL))}, 'text, or {"cid"'),
        ({"cid": " " + str(cid_of(BELL))}, "without spaces"),
        ({"cid": str(cid_of(BELL)).replace("qizc1", "qizn1")}, "not a content id"),
    ],
)
def test_a_malformed_reference_is_named(me: NodeIdentity, ref: dict, words: str) -> None:
    raw = sampler_spec(me, ref)
    for check in (specs.input_refs, specs.parse):
        with pytest.raises(SpecError, match=r"params\.qasm: ") as caught:
            refs = check(raw)
            if refs == []:  # no "cid" key at all: nothing to fetch; the full check refuses
                specs.parse(raw)
        assert words in str(caught.value)


# ----------------------------------------------------------------------------- fetching


class FakePool:
    """``fetch_bytes`` of a pool holding ``content``; counts the fetches."""

    def __init__(self, content: dict[ContentId, bytes], asked: int = 5) -> None:
        self.content = content
        self.asked = asked
        self.calls: list[tuple[ContentId, int]] = []

    async def fetch_bytes(self, cid: ContentId, *, max_size: int) -> bytes:
        self.calls.append((cid, max_size))
        if cid not in self.content:
            raise LookupError(f"content {cid} not found after {self.asked} holders asked")
        return self.content[cid]


def test_inputs_are_fetched_once_bounded_and_decoded(me: NodeIdentity) -> None:
    cid = cid_of(BELL)
    pool = FakePool({cid: BELL.encode()})
    fetcher = InputFetcher(pool.fetch_bytes)
    raw = sampler_spec(me, {"cid": str(cid)})
    assert run(fetcher.texts(raw, LIMITS)) == {str(cid): BELL}
    assert run(fetcher.texts(raw, LIMITS)) == {str(cid): BELL}
    assert pool.calls == [(cid, execute.MAX_TEXT)]  # the size bound is the inline text's
    assert run(fetcher.texts(sampler_spec(me, BELL), LIMITS)) == {}


def test_a_missing_input_fails_with_how_many_holders_were_asked(me: NodeIdentity) -> None:
    cid = cid_of("nobody stored this")
    fetcher = InputFetcher(FakePool({}, asked=4).fetch_bytes)
    with pytest.raises(SpecError) as caught:
        run(fetcher.texts(sampler_spec(me, {"cid": str(cid)}), LIMITS))
    assert str(caught.value) == f"params.qasm: input {cid} not found after 4 holders asked"


def test_bad_bytes_and_no_pool_are_refused_clearly(me: NodeIdentity) -> None:
    cid = cid_of("binary")
    fetcher = InputFetcher(FakePool({cid: b"OPENQASM \xff\xfe"}).fetch_bytes)
    with pytest.raises(SpecError, match=r"input qizc1\w+ is not UTF-8 text \(byte 9 is not\)"):
        run(fetcher.texts(sampler_spec(me, {"cid": str(cid)}), LIMITS))
    big = cid_of("big")
    fetcher = InputFetcher(FakePool({big: b"x" * (execute.MAX_TEXT + 1)}).fetch_bytes)
    with pytest.raises(SpecError, match=rf"over {execute.MAX_TEXT} bytes"):
        run(fetcher.texts(sampler_spec(me, {"cid": str(big)}), LIMITS))
    with pytest.raises(SpecError, match="this node has no pool"):
        run(InputFetcher(None).texts(sampler_spec(me, {"cid": str(cid)}), LIMITS))


def test_peers_cannot_hold_every_fetch_slot_but_the_owner_is_never_refused(
    me: NodeIdentity,
) -> None:
    a, b, c = cid_of("a"), cid_of("b"), cid_of("c")
    release = asyncio.Event()

    async def slow(cid: ContentId, *, max_size: int) -> bytes:
        await release.wait()
        return b"OPENQASM 3.0; qubit[1] q;"

    async def main() -> list[object]:
        fetcher = InputFetcher(slow, max_fetching=1)
        first = asyncio.ensure_future(
            fetcher.texts(sampler_spec(me, {"cid": str(a)}), LIMITS, peer=True)
        )
        await asyncio.sleep(0.01)
        with pytest.raises(CheckerBusy, match="1 job inputs are being fetched here"):
            await fetcher.texts(sampler_spec(me, {"cid": str(b)}), LIMITS, peer=True)
        same = asyncio.ensure_future(
            fetcher.texts(sampler_spec(me, {"cid": str(a)}), LIMITS, peer=True)
        )
        owner = asyncio.ensure_future(fetcher.texts(sampler_spec(me, {"cid": str(c)}), LIMITS))
        await asyncio.sleep(0.01)
        release.set()
        return [await first, await same, await owner, fetcher.counters["busy"]]

    first, same, owner, busy = run(main())
    assert first == same == {str(a): "OPENQASM 3.0; qubit[1] q;"}
    assert owner == {str(c): "OPENQASM 3.0; qubit[1] q;"} and busy == 1


def test_the_checker_process_checks_the_fetched_text(me: NodeIdentity) -> None:
    """The limited checker measures the input's text, not the reference: a reference to a
    circuit too large for the node is refused there, as the same text inline would be."""
    cid = cid_of(BELL)
    raw = sampler_spec(me, {"cid": str(cid)})
    small = specs.Limits(max_qubits=2)
    big = cid_of(TWO)
    raw_big = sampler_spec(me, {"cid": str(big)})

    async def main() -> tuple[specs.JobSpec, str]:
        checker = SpecChecker()
        try:
            spec = await checker.parse(raw, small, inputs={str(cid): BELL})
            try:
                await checker.parse(raw_big, small, inputs={str(big): TWO})
            except SpecError as exc:
                return spec, str(exc)
            return spec, ""
        finally:
            await checker.close()

    spec, refusal = run(main(), timeout=60)
    assert spec.tasks[0].params["qasm"] == BELL and spec.num_qubits == 2
    assert "3 qubits" in refusal


# ----------------------------------------------------------------------------- on a mesh


def _mesh_node(peers: list[str] | None, index: int, tmp: Path) -> Node:
    """Four nodes with homes (the CLI talks to them), every one holding content; only the
    last runs tasks (one process)."""
    home = tmp / f"n{index}"
    return Node(
        Home(home).init(),
        listen="127.0.0.1:0",
        peers=peers,
        config=manager(),
        dht_config=DhtConfig(request_timeout=1.0),
        control_dir=home,
        compute=ComputeConfig(worker=index == 3, slots=1, poll_after=1.0, warm_up=False),
        store=StoreConfig(k=2, n=3),  # 3 holders: the 3 other nodes
    )


def test_a_job_reads_its_circuit_from_the_pool_and_its_result_is_verified_by_id(
    tmp_path: Path,
) -> None:
    """A circuit put by one node runs, by content id, on a worker that fetched it; ``job
    submit --wait --store`` stores the result; another node's home verifies it by content id
    (``qiz verify-result qizc1...``); a missing content fails the submit with how many holders
    were asked; a content that is not a stored result is named so."""

    async def scenario() -> dict[str, Any]:
        async with running_mesh(4, lambda peers, i: _mesh_node(peers, i, tmp_path)) as nodes:
            for node in nodes:
                await node.compute.publish_capacity()
            submitter, publisher, worker = nodes[0], nodes[1], nodes[3]
            put = await publisher.store.put_files(
                {"bell.qasm": BELL.encode()}, name="bell.qasm", k=2, n=3
            )
            doc = {
                "kind": "sampler",
                "params": {"qasm": {"cid": str(put.cid)}, "shots": 256},
                "replicas": 1,
                "seed": 1,
            }
            (tmp_path / "bell.json").write_text(json.dumps(doc))
            submitted = await asyncio.to_thread(
                qiz,
                tmp_path,
                "--home",
                "n0",
                "job",
                "submit",
                "bell.json",
                "--wait",
                "--store",
                "--json",
                timeout=90,
            )
            answer = ok_json(submitted)
            job = bytes.fromhex(answer["job_id"])
            verified = verify_file(submitter.compute.coordinator.result(job))
            by_id = await asyncio.to_thread(
                qiz, tmp_path, "--home", "n2", "verify-result", answer["result_cid"], "--json"
            )
            not_a_result = await asyncio.to_thread(
                qiz, tmp_path, "--home", "n2", "verify-result", str(put.cid)
            )
            missing = ContentId(hashlib.sha3_256(b"never stored").digest())
            doc["params"]["qasm"] = {"cid": str(missing)}
            raw = specs.sign(specs.make_body(doc, submitter.identity), submitter.identity)
            with pytest.raises(JobError) as refused:
                await submitter.compute.coordinator.submit(raw)
            return {
                "answer": answer,
                "results": verified.results,
                "fetched": (
                    worker.compute.inputs.counters["fetched"],
                    submitter.compute.inputs.counters["fetched"],
                ),
                "by_id": by_id,
                "not_a_result": not_a_result,
                "refused": str(refused.value),
            }

    out = run(scenario(), timeout=150)
    # what ran is the stored circuit: the worker and the coordinator each fetched it once
    assert out["results"] == [execute.run("sampler", {"qasm": BELL, "shots": 256}, 1)]
    assert out["fetched"] == (1, 1)
    cid = out["answer"]["result_cid"]
    checked = ok_json(out["by_id"])
    assert checked["verified"] is True and checked["cid"] == cid
    assert checked["job_id"] == out["answer"]["job_id"] and checked["kind"] == "sampler"
    assert out["not_a_result"].returncode == 2
    assert "not a stored job result" in out["not_a_result"].stderr
    assert re.search(
        r"params\.qasm: input qizc1\w+ not found after \d+ holders asked", out["refused"]
    )


def test_a_restarted_coordinator_fetches_stored_inputs_before_resuming(me: NodeIdentity) -> None:
    """Jobs running at a restart are resumed at once, except those whose spec names an
    input: those after it is fetched again; one whose input is gone fails with the reason."""
    from qiz.compute.coordinator import Coordinator
    from qiz.compute.jobdb import FAILED, CoordinatorTables, open_db
    from qiz.events import EventBus
    from qiz.trust.scores import PeerScores

    present, gone = cid_of(BELL), cid_of("gone")
    raws = {
        "inline": sampler_spec(me, BELL),
        "stored": sampler_spec(me, {"cid": str(present)}),
        "gone": sampler_spec(me, {"cid": str(gone)}),
    }
    jobs = {name: specs.parse(raw, unresolved=True).job_id for name, raw in raws.items()}

    async def scenario() -> None:
        db = open_db(None)
        tables = CoordinatorTables(db)
        for name, raw in raws.items():
            tables.add_job(jobs[name], raw, 100.0)
        coordinator = Coordinator(
            me,
            tables,
            PeerScores(db),
            directory=None,  # type: ignore[arg-type] - resuming asks no worker
            send=None,  # type: ignore[arg-type]
            events=EventBus(),
            clock=lambda: 101.0,
        )
        coordinator.inputs = InputFetcher(FakePool({present: BELL.encode()}, asked=3).fetch_bytes)
        try:
            coordinator.resume()
            assert set(coordinator.core.jobs) == {jobs["inline"]}
            await async_eventually(
                lambda: jobs["stored"] in coordinator.core.jobs, what="the stored input's job"
            )
            resumed = coordinator.core.jobs[jobs["stored"]].spec
            assert resumed.tasks[0].params["qasm"] == BELL
            row = tables.job(jobs["gone"])
            assert row is not None and row.state == FAILED
            assert f"input {gone} not found after 3 holders asked" in (row.error or "")
            assert jobs["gone"] not in coordinator.core.jobs
        finally:
            await coordinator.close()
            db.close()

    run(scenario())
