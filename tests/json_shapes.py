"""The documented shape of every command's ``--json`` answer (docs/json/), checked.

Each command path (``job submit``) has a JSON Schema in ``docs/json/<path-with-dashes>.schema.json``
describing its success object; a failure under ``--json`` has one shape for every command
(``docs/json/error.schema.json``). :func:`check_shape` validates one answer; the CLI helpers in
``tests/helpers.py`` call it on every JSON answer a test reads, so each test that runs a command
also checks that the documented shape holds.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import typer
from jsonschema import Draft202012Validator

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "docs" / "json"
ERROR_SCHEMA = "error"
GLOBAL_OPTIONS_WITH_VALUE = ("--home", "--passphrase-file")


@functools.cache
def _root() -> Any:
    """The ``qiz`` command as typer builds it (a group of groups and commands)."""
    from qiz.cli.main import app

    return typer.main.get_command(app)


def _is_group(command: Any) -> bool:
    return isinstance(command, typer.core.TyperGroup)


def commands() -> list[str]:
    """Every command path the ``qiz`` command offers, e.g. ``["init", ..., "job submit"]``."""

    def walk(command: Any, path: list[str]) -> Iterator[str]:
        if _is_group(command):
            for name, sub in command.commands.items():
                yield from walk(sub, [*path, name])
        else:
            yield " ".join(path)

    return list(walk(_root(), []))


def schema_file(command: str) -> Path:
    return SCHEMA_DIR / f"{command.replace(' ', '-')}.schema.json"


@functools.cache
def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def command_path(argv: Sequence[str]) -> str | None:
    """The command path in a ``qiz`` argument list (global options and arguments skipped)."""
    words = list(argv)
    group = _root()
    path: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if not path and word in GLOBAL_OPTIONS_WITH_VALUE:
            i += 2
            continue
        if not path and word.startswith("--") and "=" in word:
            i += 1
            continue
        if not _is_group(group):
            break
        sub = group.commands.get(word)
        if sub is None:
            return None
        path.append(word)
        group = sub
        i += 1
    return " ".join(path) if path and not _is_group(group) else None


def check_shape(command: str, answer: Any) -> None:
    """Fail unless ``answer`` is what ``docs/json`` says ``command --json`` prints."""
    assert isinstance(answer, dict), f"{command} --json printed {type(answer).__name__}"
    assert isinstance(answer.get("ok"), bool), f"{command} --json: no 'ok' in {sorted(answer)}"
    name = command.replace(" ", "-") if answer["ok"] else ERROR_SCHEMA
    assert (SCHEMA_DIR / f"{name}.schema.json").exists(), f"no docs/json/{name}.schema.json"
    errors = sorted(validator(name).iter_errors(answer), key=lambda e: list(e.path))
    found = "; ".join(f"{'/'.join(map(str, e.path)) or '(top)'}: {e.message}" for e in errors[:5])
    assert not errors, f"{command} --json does not match docs/json/{name}.schema.json: {found}"


def check_answer(argv: Sequence[str], stdout: str) -> Any:
    """Parse one command's JSON answer and check its shape when ``argv`` used ``--json``."""
    answer = json.loads(stdout)
    if "--json" in argv:
        command = command_path(argv)
        if command is not None:
            check_shape(command, answer)
    return answer
