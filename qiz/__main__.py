"""``python -m qiz`` runs the CLI."""

from qiz.cli.main import entry

entry()
