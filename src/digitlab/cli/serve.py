"""`digitlab serve` (being written)."""

from digitlab.cli.app import app  # noqa: F401
