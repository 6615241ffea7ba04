"""A job's result as content for the storage pool: what ``job submit --store`` puts.

The content is a directory of two files:

* ``attestation.att``: the attestation file exactly as ``qiz job result --attestation`` writes
  it (``qiz verify-result`` checks it offline; it carries the spec, every result and every
  signature, so it alone is the evidence);
* ``result.json``: the same results for people and scripts (job id, kind, summary, results),
  read from the attestation, never trusted on its own.

Pure functions (no store import): the node's API hands the files to the pool and back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from qiz.compute.attest import MAX_FILE, verify_file
from qiz.compute.errors import NotAStoredResult
from qiz.compute.execute import summarise

ATTESTATION_NAME = "attestation.att"
RESULT_NAME = "result.json"
# the most a stored result may be: the attestation (which holds the results) and their JSON
MAX_STORED = 3 * MAX_FILE


def result_files(attestation: bytes) -> dict[str, bytes]:
    """The files of a stored result, from a verified attestation file (AttestationError when
    it does not verify: nothing unverified is published)."""
    verified = verify_file(attestation)
    document: dict[str, Any] = {
        "job_id": verified.job_id.hex(),
        "kind": verified.spec.kind,
        "summary": summarise(verified.spec.kind, verified.results),
        "results": verified.results,
    }
    text = json.dumps(document, sort_keys=True, indent=1) + "\n"
    return {ATTESTATION_NAME: attestation, RESULT_NAME: text.encode("utf-8")}


def attestation_of(files: Mapping[str, bytes]) -> bytes:
    """The attestation file of a stored result's files (NotAStoredResult when it has none)."""
    data = files.get(ATTESTATION_NAME)
    if data is None:
        names = ", ".join(sorted(files)[:5]) or "no files"
        raise NotAStoredResult(
            f"this content is not a stored job result (it has {names}; "
            f"a stored result has {ATTESTATION_NAME})"
        )
    return data
