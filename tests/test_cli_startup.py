"""The ``qiz`` command starts quickly: loading it does not load what only some commands use.

The test suite and scripts spawn ``qiz`` hundreds of times; each start used to import the
node, the deploy channel code (tuf), numpy and the mesh transport whatever the command, about
0.4 s of work a plain ``qiz id`` or ``qiz node status`` never needed. The command modules now
import those inside the commands that use them: this keeps it so (a module-level import added
back fails here, naming the module), and checks the two constants the CLI names again to
avoid loading their home modules.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import CLEAN_ENV

# loaded by some commands only: the node and its services, numpy (the simulator), the deploy
# channel code (tuf, securesystemslib), aiohttp (the API client), the mesh transport, asyncio
# (the control socket), rich's tables and progress bars
HEAVY = (
    "qiz.node",
    "qiz.compute.service",
    "qiz.deploy.service",
    "qiz.qmp.transport",
    "qiz.quantum",
    "numpy",
    "tuf",
    "securesystemslib",
    "aiohttp",
    "asyncio",
    "rich.table",
    "rich.progress",
)


def _loaded_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nimport json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    loaded = set(json.loads(out.splitlines()[-1]))
    return sorted(m for m in HEAVY if m in loaded)


def test_loading_the_command_loads_nothing_heavy() -> None:
    assert _loaded_after("import qiz.cli.app") == []


def test_version_loads_not_even_the_command() -> None:
    """``qiz --version`` answers before typer, rich or the commands load; same line as before."""
    from qiz import __version__

    for args, line in (
        (["--version"], f"qiz {__version__}"),
        (["--version", "--json"], json.dumps({"ok": True, "version": __version__})),
    ):
        code = (
            f"import sys; sys.argv = ['qiz', *{args!r}]\n"
            "from qiz.cli.main import run; code = run()\n"
            "print(code, sorted(m for m in ('typer', 'rich', 'qiz.cli.app') if m in sys.modules))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
        ).stdout.splitlines()
        assert out == [line, "0 []"]


def test_constants_named_again_agree() -> None:
    from qiz.cli import deploy_cmds, detach
    from qiz.deploy.signing import NODE_KEY
    from qiz.node import LOCK_FILE

    assert detach.LOCK_FILE == LOCK_FILE
    assert deploy_cmds.NODE_KEY == NODE_KEY


INTERRUPT_WHILE_PARSING = """
import sys

class Interrupt:  # Ctrl-C while typer reads the command line (it loads pydantic to do so)
    def find_spec(self, name, path=None, target=None):
        if name == "typer._adapters":
            raise KeyboardInterrupt

sys.meta_path.insert(0, Interrupt())
sys.argv = ["qiz", *sys.argv[1:]]
from qiz.cli.main import entry

entry()
"""


@pytest.mark.parametrize("as_json", [False, True])
def test_ctrl_c_while_the_command_line_is_read_is_one_line(tmp_path: Path, as_json: bool) -> None:
    """Typer makes a Ctrl-C that lands while it parses (now sooner after the start than it
    was, the command being lighter) a silent exit 130: the CLI says it, as anywhere else."""
    args = ["--home", "H", "ping", "127.0.0.1:1", *(["--json"] if as_json else [])]
    proc = subprocess.run(
        [sys.executable, "-c", INTERRUPT_WHILE_PARSING, *args],
        cwd=tmp_path,
        env=CLEAN_ENV,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (proc.returncode, proc.stderr) == (130, "qiz: interrupted\n")
    if as_json:
        assert json.loads(proc.stdout) == {"ok": False, "error": "interrupted", "exit_code": 130}
    else:
        assert proc.stdout == ""
