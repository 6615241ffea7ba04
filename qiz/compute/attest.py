"""Signed result claims (one per worker run) and the attestation that seals a job's result.

A worker signs a **claim** under ``"qiz/job-result/v1"``::

    {"v": 1, "job": job id, "task": index, "seed": int | null, "engine": text, "result": digest}

The coordinator (the submitter's node), once every task reached its quorum, signs the
**attestation** body under ``"qiz/attestation/v1"``::

    {"v": 1, "job": job id, "spec": signed spec bytes, "engine": text, "seed": spec seed,
     "quorum": q, "result": digest of the list of task results, "issued": unix seconds,
     "coordinator": composite public key, "workers": [composite public keys],
     "tasks": [{"task": i, "result": digest, "test": "exact" | "chi2", "p": float | null,
                "claims": [{"worker": index into workers, "seed", "engine", "result", "sig"}]}]}

An **attestation file** is ``{"attestation": {"body": bytes, "sig": bytes}, "results": [task
results]}`` in canonical CBOR. :func:`verify_file` checks it with no network: the submitter's
signature on the spec, the job id, every worker's claim, each task's quorum, every result's
digest, and the coordinator's signature. For chi2 tasks the file carries the accepted counts
only; the other replicas' counts stay with the coordinator, so the p-value is attested, not
recomputed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from qiz import wire
from qiz.compute import devices
from qiz.compute import spec as specs
from qiz.compute.errors import AttestationError, NotAnAttestation, SpecError
from qiz.compute.quorum import ALPHA, CHI2, EXACT, Decision, result_digest
from qiz.crypto.composite import CompositePublicKey
from qiz.crypto.errors import InvalidKey, InvalidSignature
from qiz.crypto.ids import NodeId
from qiz.identity import NodeIdentity
from qiz.quantum.core.memory import MAX_QUBITS

CLAIM_CONTEXT = "qiz/job-result/v1"
ATTESTATION_CONTEXT = "qiz/attestation/v1"
MAX_FILE = 64 * 1024 * 1024
# verification checks what was signed, not what this machine could run
VERIFY_LIMITS = specs.Limits(
    max_qubits=MAX_QUBITS, max_shots=10_000_000, max_replicas=64, max_work=math.inf
)


@dataclass(frozen=True)
class Claim:
    """What a worker signs about one run: the job, the task, how it ran, the result digest."""

    job: bytes
    task: int
    seed: int | None
    engine: str
    result: bytes

    def encode(self) -> bytes:
        return wire.encode(
            {
                "v": 1,
                "job": self.job,
                "task": self.task,
                "seed": self.seed,
                "engine": self.engine,
                "result": self.result,
            }
        )

    def sign(self, identity: NodeIdentity) -> bytes:
        return identity.sign(self.encode(), CLAIM_CONTEXT)

    def valid(self, key: bytes, sig: bytes) -> bool:
        try:
            CompositePublicKey(key).verify(sig, self.encode(), CLAIM_CONTEXT)
        except (InvalidKey, InvalidSignature, TypeError, ValueError):
            return False
        return True


def check_claim(
    report: Mapping[str, Any], *, job: bytes, task: int, seed: int | None, worker: bytes
) -> str | None:
    """Why a worker's finished report cannot count as a replica of (job, task), or None if its
    claim holds: the key is the worker's own, it ran with the seed it was given, the result
    matches its digest, and the signature over the claim verifies.

    Pure and total: any report a peer sends gets an answer, never an exception. This is the
    coordinator's only defence against a forged or mangled report; a *wrong* result behind a
    valid claim is the quorum's to catch.
    """
    key, digest, sig, engine = (report.get(k) for k in ("key", "digest", "sig", "engine"))
    if not all(isinstance(v, bytes) for v in (key, digest, sig)) or not isinstance(engine, str):
        return "missing fields"
    if NodeId.from_public_key(key).digest != worker:
        return "the claim's key is not the worker's"
    if report.get("seed") != seed:
        return "ran with another seed"
    try:
        if result_digest(report.get("result")) != digest:
            return "the result does not match its digest"
    except (TypeError, ValueError):
        return "the result cannot be encoded"
    if not Claim(job, task, seed, engine, digest).valid(key, sig):
        return "the signature does not verify"
    return None


def make_attestation(
    coordinator: NodeIdentity,
    spec: specs.JobSpec,
    decisions: Sequence[Decision],
    engine: str,
    now: float,
) -> bytes:
    """The attestation file bytes for a job whose every task was decided."""
    workers: list[bytes] = []
    tasks = []
    for index, decision in enumerate(decisions):
        claims = []
        for replica in decision.agreeing:
            if replica.key not in workers:
                workers.append(replica.key)
            claims.append(
                {
                    "worker": workers.index(replica.key),
                    "seed": replica.seed,
                    "engine": replica.engine,
                    "result": replica.digest,
                    "sig": replica.sig,
                }
            )
        tasks.append(
            {
                "task": index,
                "result": decision.accepted.digest,
                "test": decision.test,
                "p": decision.p_value,
                "claims": claims,
            }
        )
    results = [d.accepted.result for d in decisions]
    body = {
        "v": 1,
        "job": spec.job_id,
        "spec": spec.raw,
        "engine": engine,
        "seed": spec.seed,
        "quorum": spec.quorum,
        "result": result_digest(results),
        "issued": int(now),
        "coordinator": coordinator.public_key.raw,
        "workers": workers,
        "tasks": tasks,
    }
    body_bytes = wire.encode(body)
    signed = {"body": body_bytes, "sig": coordinator.sign(body_bytes, ATTESTATION_CONTEXT)}
    return wire.encode({"attestation": signed, "results": results})


@dataclass(frozen=True)
class VerifiedAttestation:
    job_id: bytes
    spec: specs.JobSpec
    coordinator: NodeId
    workers: tuple[NodeId, ...]
    results: list
    tests: tuple[str, ...]
    issued: int


def _field(mapping: Any, key: str, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(mapping, dict) or key not in mapping:
        raise AttestationError(f"{what} has no {key}")
    value = mapping[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise AttestationError(f"{what}.{key} has the wrong type")
    return value


def verify_file(data: bytes) -> VerifiedAttestation:
    """Check an attestation file completely, offline; AttestationError names what failed."""
    try:
        outer = wire.decode(data, max_size=MAX_FILE, what="attestation file")
        signed = _field(outer, "attestation", dict, "the file")
        body_bytes = _field(signed, "body", bytes, "the attestation")
        sig = _field(signed, "sig", bytes, "the attestation")
        results = _field(outer, "results", list, "the file")
    except (wire.WireError, AttestationError):
        # the container is not there at all: a wrong file, told in words, not the codec's
        raise NotAnAttestation("this is not a QIZ attestation file") from None
    try:
        body = wire.decode(body_bytes, max_size=MAX_FILE, what="attestation body")
    except wire.WireError:
        raise AttestationError("the attestation body is not in its canonical form") from None
    if not isinstance(body, dict) or body.get("v") != 1:
        raise AttestationError("the attestation body is not format 1")
    coordinator_key = _field(body, "coordinator", bytes, "the attestation")
    try:
        CompositePublicKey(coordinator_key).verify(sig, body_bytes, ATTESTATION_CONTEXT)
    except (InvalidKey, InvalidSignature):
        raise AttestationError("the coordinator's signature does not verify") from None
    try:
        # content-id inputs stay unfetched: the signature covers their ids, and the ids their bytes
        spec = specs.parse(
            _field(body, "spec", bytes, "the attestation"), VERIFY_LIMITS, unresolved=True
        )
    except SpecError as exc:
        raise AttestationError(f"the attested spec is not valid: {exc}") from None
    job_id = _field(body, "job", bytes, "the attestation")
    if job_id != spec.job_id:
        raise AttestationError("the job id is not the digest of the attested spec")
    if body.get("seed") != spec.seed or body.get("quorum") != spec.quorum:
        raise AttestationError("the attested seed or quorum differs from the spec's")
    workers = _field(body, "workers", list, "the attestation")
    try:
        worker_ids = tuple(NodeId.from_public_key(CompositePublicKey(k).raw) for k in workers)
    except (InvalidKey, TypeError):
        raise AttestationError("a worker key is malformed") from None
    if len(set(worker_ids)) != len(worker_ids):  # a quorum counts distinct workers
        raise AttestationError("a worker is listed twice")
    tasks = _field(body, "tasks", list, "the attestation")
    if len(tasks) != len(spec.tasks) or len(results) != len(spec.tasks):
        raise AttestationError(
            f"the spec has {len(spec.tasks)} tasks; the attestation covers {len(tasks)} "
            f"with {len(results)} results"
        )
    if _field(body, "result", bytes, "the attestation") != result_digest(results):
        raise AttestationError("the results do not match the attested result digest")
    tests = []
    for index, (entry, result) in enumerate(zip(tasks, results, strict=True)):
        tests.append(_verify_task(index, entry, result, spec, workers))
    return VerifiedAttestation(
        job_id,
        spec,
        NodeId.from_public_key(coordinator_key),
        worker_ids,
        results,
        tuple(tests),
        int(_field(body, "issued", int, "the attestation")),
    )


def _verify_task(index: int, entry: Any, result: Any, spec: specs.JobSpec, workers: list) -> str:
    what = f"task {index}"
    if _field(entry, "task", int, what) != index:
        raise AttestationError(f"{what} is out of order")
    digest = _field(entry, "result", bytes, what)
    if digest != result_digest(result):
        raise AttestationError(f"{what}: the result does not match its attested digest")
    test = _field(entry, "test", str, what)
    if test not in (EXACT, CHI2) or (test == CHI2) != devices.statistical(spec):
        raise AttestationError(f"{what}: test {test!r} does not fit the spec's seed and target")
    signers: set[int] = set()
    for claim in _field(entry, "claims", list, what):
        worker = _field(claim, "worker", int, f"{what} claim")
        if not 0 <= worker < len(workers) or not isinstance(workers[worker], bytes):
            raise AttestationError(f"{what}: a claim names no listed worker")
        claimed = _field(claim, "result", bytes, f"{what} claim")
        seed = claim.get("seed")
        if spec.seed is not None and seed != spec.seed:
            raise AttestationError(f"{what}: a claim ran with a seed other than the spec's")
        if test == EXACT and claimed != digest:
            raise AttestationError(f"{what}: a counted claim is for a different result")
        engine = _field(claim, "engine", str, f"{what} claim")
        signed = Claim(spec.job_id, index, seed, engine, claimed)
        if not signed.valid(workers[worker], _field(claim, "sig", bytes, f"{what} claim")):
            raise AttestationError(f"{what}: worker {worker}'s claim signature does not verify")
        signers.add(worker)
    if not any(c.get("result") == digest for c in entry["claims"]):
        raise AttestationError(f"{what}: no worker claimed the accepted result")
    if len(signers) < spec.quorum:
        raise AttestationError(
            f"{what}: {len(signers)} distinct worker(s) signed; the quorum is {spec.quorum}"
        )
    if test == CHI2:
        p = entry.get("p")
        if len(signers) > 1 and (not isinstance(p, float) or p < ALPHA):
            raise AttestationError(f"{what}: the attested p-value is below {ALPHA}")
    return test
