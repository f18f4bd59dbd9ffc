"""digitlab: handwritten-digit and small-image recognition with PyTorch."""

from digitlab.errors import DigitlabError

__all__ = ["DigitlabError", "__version__"]


def __getattr__(name: str) -> str:
    """``digitlab.__version__``: pyproject.toml's version, as the installed package's metadata reports it
    (the one version string). Looked up on use: importing importlib.metadata costs start-up time."""
    if name == "__version__":
        from importlib.metadata import version

        return version("digitlab")
    raise AttributeError(f"module 'digitlab' has no attribute {name!r}")
