"""Every command documents the shape of its ``--json`` answer, and the documents are sound.

The answers themselves are checked wherever a test runs a command with ``--json`` (the CLI
helpers validate each answer against docs/json/); this module checks that no command is left
without a schema and that every schema is a valid JSON Schema that requires ``"ok": true``."""

from __future__ import annotations

import json

import pytest

from tests.json_shapes import SCHEMA_DIR, command_path, commands, schema_file, validator


def test_every_command_has_a_schema() -> None:
    missing = [c for c in commands() if not schema_file(c).exists()]
    assert not missing, f"commands without docs/json/<command>.schema.json: {missing}"


def test_no_schema_for_a_command_that_does_not_exist() -> None:
    known = {schema_file(c).name for c in commands()} | {"error.schema.json"}
    stray = sorted(p.name for p in SCHEMA_DIR.glob("*.schema.json") if p.name not in known)
    assert not stray, stray


@pytest.mark.parametrize("path", sorted(SCHEMA_DIR.glob("*.schema.json")), ids=lambda p: p.name)
def test_schema_is_valid_and_states_ok(path) -> None:
    schema = json.loads(path.read_text())
    name = path.name.removesuffix(".schema.json")
    validator(name)  # raises on an invalid schema
    assert schema.get("type") == "object", name
    assert "ok" in schema.get("required", []), name
    want = name != "error"
    assert schema["properties"]["ok"] == {"const": want}, name
    assert schema.get("title") and schema.get("description"), f"{name}: say what it answers"


@pytest.mark.parametrize(
    ("argv", "path"),
    [
        (["--home", "h", "job", "submit", "x.json", "--json"], "job submit"),
        (["--home=h", "qaoa", "maxcut", "--json"], "qaoa maxcut"),
        (["--passphrase-file", "p", "id", "--json"], "id"),
        (["job"], None),
        (["nonsense", "--json"], None),
    ],
)
def test_command_path_from_argv(argv, path) -> None:
    assert command_path(argv) == path
