"""JSON that a user hands a face (an HTTP API body, a CLI spec file), parsed with a bound on
nesting.

Why: Python's json parser recurses once per level, so a body of ~900 nested brackets raised
RecursionError from the parser (an API 500, a CLI "internal error"), and anything nested deeper
than the code below expects would recurse again in every walk over it. Nothing a face accepts
is nested deeper than :data:`MAX_JSON_DEPTH`; deeper input is one clear error instead.
"""

from __future__ import annotations

import json
from typing import Any

from qiz import QizError

MAX_JSON_DEPTH = 64  # a job spec's params nest at most 16 levels below a few of the spec's own


class JsonInputError(QizError, ValueError):
    """Input is not JSON, or is nested deeper than :data:`MAX_JSON_DEPTH` (400 / exit 2)."""


def depth(value: Any) -> int:
    """How many arrays/objects deep ``value`` is (a scalar: 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            level += 1
            deepest = max(deepest, level)
            stack.extend((child, level) for child in item)
    return deepest


def parse_json(data: str | bytes, what: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``data`` as JSON, or :class:`JsonInputError` naming ``what`` (e.g. "the body")."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise JsonInputError(f"{what} is nested deeper than {max_depth} levels") from None
    except UnicodeDecodeError:
        raise JsonInputError(f"{what} is not UTF-8 text") from None
    except ValueError as exc:
        raise JsonInputError(f"{what} is not JSON: {exc}") from None
    if depth(value) > max_depth:
        raise JsonInputError(f"{what} is nested deeper than {max_depth} levels")
    return value
