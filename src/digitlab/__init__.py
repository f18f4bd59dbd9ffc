"""digitlab: handwritten-digit and small-image recognition with PyTorch."""

from importlib.metadata import version

from digitlab.errors import DigitlabError

# One version string, pyproject.toml's, as the installed package's metadata reports it.
__version__ = version("digitlab")

__all__ = ["DigitlabError", "__version__"]
