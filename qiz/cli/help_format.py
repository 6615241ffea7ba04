"""How ``qiz --help`` (and each group's ``--help``) lists its commands: grouped, and uncut.

Why not typer's own: its plain formatter lists every command in one block and cuts each help
line to the terminal's width with "..."; its rich formatter draws boxes, which a pipe or a log
file turns into noise. Here each command's whole first paragraph is shown, under the heading
its module gave it (``rich_help_panel=`` where the command is registered, in each
``*_cmds.register``), headings in :data:`PANELS` order. When stdout is not a terminal the help
is not wrapped at all (:func:`context_settings`), so ``qiz --help | grep`` finds whole lines.
"""

from __future__ import annotations

import shutil
import sys
from typing import Any

import typer
from typer.core import TyperGroup

# The headings of 'qiz --help', in this order; a command registered without one is "Other".
PANELS = (
    "Identity and files",
    "Node and mesh",
    "Jobs",
    "Quantum processor",
    "Storage",
    "Deploy",
    "Other",
)
OTHER = "Other"
PIPE_WIDTH = 10_000  # help written to a pipe or file: one line per option or command


def context_settings() -> dict[str, Any]:
    """The help's width: the terminal's own (not typer's 80-column cap), or no wrapping at all
    when stdout is a pipe or a file."""
    if sys.stdout.isatty():
        width = shutil.get_terminal_size().columns
        return {"terminal_width": width, "max_content_width": width}
    return {"terminal_width": PIPE_WIDTH, "max_content_width": PIPE_WIDTH}


def one_line(command: Any) -> str:
    """A command's help for a listing: its whole first paragraph, on one line."""
    text = command.short_help or command.help or ""
    paragraph = text.strip().split("\n\n")[0]
    return " ".join(word for word in paragraph.split() if word != "\b")


class QizGroup(TyperGroup):
    """A command group whose help lists its commands under headings, each help line whole."""

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        listed = [
            (name, command)
            for name in self.list_commands(ctx)
            if (command := self.get_command(ctx, name)) is not None and not command.hidden
        ]
        if not listed:
            return
        panelled = any(getattr(command, "rich_help_panel", None) for _, command in listed)
        default = OTHER if panelled else "Commands"
        sections: dict[str, list[tuple[str, str]]] = {}
        for name, command in listed:
            panel = getattr(command, "rich_help_panel", None) or default
            sections.setdefault(panel, []).append((name, one_line(command)))
        known = [panel for panel in PANELS if panel in sections]
        for panel in known + [panel for panel in sections if panel not in PANELS]:
            with formatter.section(panel):
                formatter.write_dl(sections[panel])


def apply(app: typer.Typer) -> None:
    """Give ``app`` and every group added to it (at any depth) this help format. Called once,
    after every module has registered its commands, so no module needs to know of it."""
    app.info.cls = QizGroup
    for group in app.registered_groups:
        group.cls = QizGroup
        if group.typer_instance is not None:
            apply(group.typer_instance)
