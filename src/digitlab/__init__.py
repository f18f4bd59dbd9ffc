"""digitlab: handwritten-digit and small-image recognition with PyTorch."""

__version__ = "0.1.0"

from digitlab.errors import DigitlabError

__all__ = ["DigitlabError", "__version__"]
