"""Device targets in jobs: the sampler's ``target`` fields, what a node can run, and what a
target job needs from the workers it is placed on.

Why a module of its own: a target job touches four places that must agree (the spec check,
the run, placement and the quorum), and each asks one question of this module.

**Fields** (sampler params, so also each ``circuits`` entry and a sampler sweep's ``base``):

* ``target``: a shipped target's name (``qiz targets``; ``qiz.quantum.targets.catalog``). Never
  a path: a worker's files are its own, and a name means the same calibration on every node of
  one qiz version.
* ``transpile``: ``"qiskit"`` (the default: Qiskit's preset pass manager, as ``qiz run
  --target`` does with qiskit installed) or ``"none"`` (the circuit must already fit the
  target: basis gates, coupled pairs, circuit qubit i on device qubit i; checked on arrival).
* ``transpile_seed``: the transpiler's seed (default 0). It is part of the params, not the
  job's seed, because replicas of a ``seed: null`` job sample with different seeds and must
  still run the same transpiled circuit; so the transpiled circuit is a function of the spec
  alone, the same on every worker with the same Qiskit version.

* ``adapter``: a provider's SDK runs the circuit instead of our engine, offline: ``"braket"``
  (Amazon Braket's ``LocalSimulator``, noiseless, on our OpenQASM 3 export; no target) or
  ``"ibm"`` (qiskit-ibm-runtime's ``SamplerV2`` on the fake backend of ``target``, a snapshot
  of that device with its noise; IBM's transpiler, seeded with the job's seed). Online
  submission never goes through the mesh: a user's credentials stay on their machine
  (docs/targets.md, "Providers"). Adapter runs are compared by the chi-square test: the SDKs'
  samplers are not ours, and their streams are not promised across versions.

**What a job needs** (:func:`needs`): ``target:NAME`` for each target named, and ``qiskit``
when any of them is transpiled. **What a node offers** (:func:`advertised`, in its capacity
record): the shipped targets, its Qiskit version (or null) and the provider adapters whose SDK
is installed; :func:`features` turns a (checked) record into the same words, and placement
gives a task only to workers whose features include its needs.

**The quorum** (:func:`statistical`): a seeded target job transpiled by Qiskit is compared by
the chi-square test, not by digest. Its trajectories are deterministic given the seed, so two
workers with the same Qiskit agree exactly (the test's p is then 1); but placement cannot
promise one Qiskit version, and another version may lay out or route the circuit differently,
giving different bytes for the same experiment. With ``transpile: "none"`` nothing is
transpiled and a seeded job keeps the exact quorum. A ``seed: null`` job is statistical anyway.

**The cost** (:func:`shape`): a noisy run follows up to one trajectory per shot (shots share a
state until a noise channel sends them apart), over a transpiled circuit a few times longer
than the original, each gate followed by its channel: ``Shape.evaluations`` is the shots times
``NOISY_PASSES``, so the work limit and placement's estimate see the noisy cost.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from qiz.compute.errors import SpecError

if TYPE_CHECKING:
    from qiz.compute.spec import JobSpec, Task
    from qiz.quantum.core.circuit import Circuit

FIELDS = ("target", "transpile", "transpile_seed", "adapter")
ADAPTERS = ("braket", "ibm")
TRANSPILERS = ("qiskit", "none")
DEFAULT_TRANSPILER = "qiskit"
DEFAULT_TRANSPILE_SEED = 0
SEED_MAX = 2**63 - 1
# State passes per shot of a noisy run, at worst: a transpiled circuit has 2-4 times the gates
# (basis decomposition, routing swaps), and every noisy gate is followed by its channel (a
# reduced density matrix and a Kraus operator on each row); measured in docs/targets.md.
NOISY_PASSES = 8
# What a node's capacity record may list (it is a DHT name value of at most 1 KiB, and every
# coordinator keeps one per worker): names are short lowercase words.
MAX_ADVERTISED_TARGETS = 16
MAX_ADVERTISED_ADAPTERS = 4
MAX_FEATURE_NAME = 24  # characters of one advertised target or adapter name, or a version
NAME = re.compile(rf"[a-z0-9_]{{1,{MAX_FEATURE_NAME}}}")
VERSION = re.compile(rf"[0-9A-Za-z.+_-]{{1,{MAX_FEATURE_NAME}}}")
# provider adapters (qiz.quantum.providers) and the SDK each needs
ADAPTER_SDKS = {"ibm": "qiskit_ibm_runtime", "braket": "braket"}
QISKIT = "qiskit"


# ----------------------------------------------------------------------------- spec fields


def check(params: Mapping[str, Any], circuit: Any, path: str) -> Any:
    """The target ``params`` name (a ``Target``), or None without one; every target field
    checked against the circuit: a known name, a transpiler, a seed, no wider than the device,
    and with ``transpile: "none"`` a circuit that fits as written."""
    from qiz.quantum.core.circuit import Circuit
    from qiz.quantum.targets import catalog
    from qiz.quantum.targets.transpile import misfit

    if "adapter" in params:
        _check_adapter(params, circuit, path)
        return None
    if "target" not in params:
        extra = [k for k in FIELDS if k in params]
        if extra:
            raise SpecError(f"{path}.{extra[0]}: only with a target (give params.target)")
        return None
    known = ", ".join(catalog.names())
    name = params["target"]
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise SpecError(f"{path}.target: must be the name of a shipped target ({known})")
    if name not in catalog.names():
        raise SpecError(f"{path}.target: unknown target {name!r} (known: {known})")
    transpiler = params.get("transpile", DEFAULT_TRANSPILER)
    if transpiler not in TRANSPILERS:
        raise SpecError(f"{path}.transpile: must be qiskit or none")
    seed = params.get("transpile_seed", DEFAULT_TRANSPILE_SEED)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= SEED_MAX:
        raise SpecError(f"{path}.transpile_seed: must be a whole number from 0 to 2^63 - 1")
    if not isinstance(circuit, Circuit):
        raise SpecError(
            f"{path}.qasm: a program with classical control on measured bits cannot run on "
            "a target yet (it needs a circuit without if/while)"
        )
    target = catalog.load(name)
    if circuit.num_qubits > target.num_qubits:
        raise SpecError(
            f"{path}.qasm: the circuit has {circuit.num_qubits} qubits; "
            f"{name} has {target.num_qubits}"
        )
    if transpiler == "none":
        problem = misfit(circuit, target)
        if problem is not None:
            raise SpecError(
                f"{path}.qasm: {problem} on {name}; with transpile none the circuit must fit "
                "as written (leave transpile at qiskit to transpile it)"
            )
    return target


def _check_adapter(params: Mapping[str, Any], circuit: Any, path: str) -> None:
    """An adapter run's fields: a known adapter, a target only for ibm (and always there), no
    transpiler fields (the SDK transpiles), a circuit the device can hold."""
    from qiz.quantum.core.circuit import Circuit
    from qiz.quantum.targets import catalog

    adapter = params["adapter"]
    if adapter not in ADAPTERS:
        raise SpecError(f"{path}.adapter: must be one of {', '.join(ADAPTERS)}")
    extra = [k for k in ("transpile", "transpile_seed") if k in params]
    if extra:
        raise SpecError(f"{path}.{extra[0]}: an adapter's SDK transpiles (leave it out)")
    if not isinstance(circuit, Circuit):
        raise SpecError(
            f"{path}.qasm: a program with classical control on measured bits cannot go to a "
            "provider's SDK yet (it needs a circuit without if/while)"
        )
    if adapter == "braket":
        if "target" in params:
            raise SpecError(f"{path}.target: braket's local simulator is noiseless; no target")
        return
    known = ", ".join(catalog.names())
    name = params.get("target")
    if not isinstance(name, str) or name not in catalog.names():
        raise SpecError(f"{path}.target: the ibm adapter runs a fake backend by name ({known})")
    device = catalog.load(name)
    if circuit.num_qubits > device.num_qubits:
        raise SpecError(
            f"{path}.qasm: the circuit has {circuit.num_qubits} qubits; "
            f"{name} has {device.num_qubits}"
        )


def is_adapter_run(params: Mapping[str, Any]) -> bool:
    return "adapter" in params


def run_adapter(params: Mapping[str, Any], circuit: Circuit, seed: int | None) -> dict[str, Any]:
    """A checked adapter run through the provider's SDK (qiz.quantum.providers), as the
    sampler kind's result."""
    shots = int(params.get("shots", 1024))
    if params["adapter"] == "braket":
        from qiz.quantum.providers import braket

        counts = braket.run(circuit, shots=shots)
    else:
        from qiz.quantum.providers import ibm

        counts = ibm.run(circuit, ibm.fake_backend(params["target"]), shots, seed)
    return {"counts": dict(sorted(counts.items())), "shots": shots}


def shape(circuit: Circuit, size: int, shots: int) -> Any:
    """The size of a noisy run of ``circuit`` (``size`` instructions): see the module's
    docstring (the cost)."""
    from qiz.compute.execute import Shape

    return Shape(circuit.num_qubits, size, shots, shots * NOISY_PASSES)


def run(params: Mapping[str, Any], circuit: Circuit, seed: int | None) -> dict[str, Any]:
    """A checked target sampler run: ``qiz.quantum.targets.run`` with the job's fields (the
    same call ``qiz run --target`` makes), as the sampler kind's result."""
    from qiz.quantum.targets import catalog
    from qiz.quantum.targets.errors import TargetError
    from qiz.quantum.targets.run import run as run_on_target

    shots = int(params.get("shots", 1024))
    use_qiskit = params.get("transpile", DEFAULT_TRANSPILER) == QISKIT
    if use_qiskit and qiskit_version() is None:  # placement sends none here; said plainly
        raise TargetError("this worker has no qiskit to transpile for a target")
    outcome = run_on_target(
        circuit,
        catalog.load(params["target"]),
        shots,
        seed,
        use_qiskit=use_qiskit,
        transpile_seed=int(params.get("transpile_seed", DEFAULT_TRANSPILE_SEED)),
    )
    return {"counts": dict(sorted(outcome.result.counts.items())), "shots": shots}


# ----------------------------------------------------------------------------- jobs


def _runs(kind: str, tasks: Sequence[Task]) -> Iterable[Mapping[str, Any]]:
    """The sampler params of a job's runs (a sweep's shards share one base: read once)."""
    if not tasks:
        return
    if kind == "circuits":
        for task in tasks:
            yield from task.params["circuits"]
    elif tasks[0].kind == "sampler":
        yield tasks[0].params


def needs(spec: JobSpec) -> frozenset[str]:
    """What a worker must offer to run ``spec``: ``target:NAME`` per target, and ``qiskit``
    if any of them is transpiled."""
    out: set[str] = set()
    for params in _runs(spec.kind, spec.tasks):
        if "adapter" in params:
            out.add(f"adapter:{params['adapter']}")
            continue
        if "target" in params:
            out.add(f"target:{params['target']}")
            if params.get("transpile", DEFAULT_TRANSPILER) == QISKIT:
                out.add(QISKIT)
    return frozenset(out)


def statistical(spec: JobSpec) -> bool:
    """Whether ``spec``'s replicas are compared by the chi-square test (``seed: null``, or a
    target transpiled by Qiskit) rather than by result digest."""
    wanted = needs(spec)
    return spec.seed is None or QISKIT in wanted or any(w.startswith("adapter:") for w in wanted)


def describe(wanted: Iterable[str]) -> str:
    """Needs as words for an error line: ``target fake_manila and qiskit (to transpile)``."""
    words = [
        f"target {w.partition(':')[2]}"
        if w.startswith("target:")
        else f"the {w.partition(':')[2]} adapter's SDK"
        if w.startswith("adapter:")
        else "qiskit (to transpile)"
        if w == QISKIT
        else w
        for w in sorted(wanted)
    ]
    return " and ".join(words)


# ----------------------------------------------------------------------------- nodes


def installed(module: str) -> bool:
    """Whether a top-level module can be imported (looked up, not imported). A finder that
    refuses it (raises) counts as absent, as the import would fail."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def qiskit_version() -> str | None:
    """The installed Qiskit's version, or None (found without importing it)."""
    import importlib.metadata  # here: it loads email.utils, which loads socket (sans-IO cores)

    if not installed(QISKIT):
        return None
    try:
        version = importlib.metadata.version(QISKIT)
    except importlib.metadata.PackageNotFoundError:
        return None
    return version if VERSION.fullmatch(version) else "unknown"


@functools.cache
def advertised() -> dict[str, Any]:
    """What this node can run, for its capacity record: the shipped targets, its Qiskit
    version (or None) and the provider adapters whose SDK is installed (looked up once)."""
    from qiz.quantum.targets import catalog

    targets = [n for n in catalog.names() if NAME.fullmatch(n)][:MAX_ADVERTISED_TARGETS]
    qiskit = qiskit_version()
    adapters = [
        name
        for name, sdk in sorted(ADAPTER_SDKS.items())
        if installed(sdk) and (name != "ibm" or qiskit is not None)
    ][:MAX_ADVERTISED_ADAPTERS]
    return {"targets": targets, "qiskit": qiskit, "adapters": adapters}


def checked_features(value: Mapping[str, Any]) -> dict[str, Any] | None:
    """The device fields of a peer's capacity record (each optional: a node of an older qiz
    advertises none) if they are plausible, else None: lists of at most
    ``MAX_ADVERTISED_TARGETS`` / ``MAX_ADVERTISED_ADAPTERS`` distinct short names, a version
    text or null. Lengths are checked before any element."""
    out: dict[str, Any] = {}
    for key, most in (("targets", MAX_ADVERTISED_TARGETS), ("adapters", MAX_ADVERTISED_ADAPTERS)):
        if key not in value:
            continue
        names = value[key]
        if not isinstance(names, list) or len(names) > most:
            return None
        if not all(isinstance(n, str) and NAME.fullmatch(n) for n in names):
            return None
        if len(set(names)) != len(names):
            return None
        out[key] = list(names)
    if "qiskit" in value:
        version = value["qiskit"]
        if version is not None and not (isinstance(version, str) and VERSION.fullmatch(version)):
            return None
        out["qiskit"] = version
    return out


def features(capacity: Mapping[str, Any]) -> frozenset[str]:
    """A checked capacity record's device fields as the words :func:`needs` uses."""
    out = {f"target:{n}" for n in capacity.get("targets", ())}
    out |= {f"adapter:{n}" for n in capacity.get("adapters", ())}
    if capacity.get("qiskit"):
        out.add(QISKIT)
    return frozenset(out)
