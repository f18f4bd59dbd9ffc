"""`digitlab bench` (being written)."""

from digitlab.cli.app import app  # noqa: F401
