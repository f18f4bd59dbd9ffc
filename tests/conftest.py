"""Shared fixtures. Tests make their own small data; only `mnist_dir` points at real files.

Real MNIST is looked for where a user has it: ``$DIGITLAB_DATA``, the user cache that
``digitlab data download mnist`` fills, and ``<repo>/../shared/data``. Locally, a test that
needs it is skipped with a message saying what to put where; in CI (``CI=true``) it fails, so
a CI run without the data is red instead of green with dozens of skips.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from digitlab.data.locate import IDX_FILES, cache_dir

REPO = Path(__file__).resolve().parent.parent
MNIST_FILES = [stem + ".gz" for stem in IDX_FILES.values()]
USER_CACHE = cache_dir()  # read before any test changes $XDG_CACHE_HOME


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def mnist_candidates(env: str | None, cache: Path, repo: Path) -> list[Path]:
    """Folders that may hold the four MNIST .gz files, in the order digitlab itself searches."""
    found = []
    if env:
        root = Path(os.path.abspath(Path(env).expanduser()))
        found += [root, root / "mnist", root / "MNIST" / "raw"]
    found += [cache / "mnist", cache, repo.parent / "shared" / "data" / "mnist"]
    return found


def find_mnist(candidates: list[Path]) -> Path | None:
    return next((d.resolve() for d in candidates if all((d / f).is_file() for f in MNIST_FILES)), None)


def missing_data(message: str) -> None:
    """Skip (locally) or fail (in CI) a test whose real data is not there."""
    if in_ci():
        pytest.fail(f"{message}\n(CI=true: missing data fails the run instead of skipping)", pytrace=False)
    pytest.skip(message)


def mnist_missing_message(candidates: list[Path]) -> str:
    return (
        f"real MNIST not found: put {', '.join(MNIST_FILES)} in one of "
        + ", ".join(str(d) for d in candidates)
        + "; `digitlab data download mnist` fetches them into the user cache, or set DIGITLAB_DATA"
        + " to the folder that holds them"
    )


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The folder holding the four real MNIST .gz files."""
    candidates = mnist_candidates(os.environ.get("DIGITLAB_DATA"), USER_CACHE, REPO)
    found = find_mnist(candidates)
    if found is None:
        missing_data(mnist_missing_message(candidates))
    return found  # type: ignore[return-value]


@pytest.fixture
def isolated_data_env(tmp_path, monkeypatch) -> Path:
    """No $DIGITLAB_DATA or $DIGITLAB_MIRRORS, and a fresh cache dir: tests never see real user data."""
    monkeypatch.delenv("DIGITLAB_DATA", raising=False)
    monkeypatch.delenv("DIGITLAB_MIRRORS", raising=False)
    cache = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache / "digitlab"


@pytest.fixture
def cpp_compiler() -> None:
    """Skip where torch.compile cannot build its CPU kernels (no C++ compiler)."""
    if not (shutil.which("g++") or shutil.which("c++")):
        pytest.skip("torch.compile on CPU needs a C++ compiler (g++)")


def _tiny_image_data(n_train: int = 256, n_test: int = 64, seed: int = 0):
    """Ten classes of 28x28 images: a bright square whose position encodes the class, plus noise."""
    import torch

    from digitlab.data.base import ImageData

    g = torch.Generator().manual_seed(seed)

    def make(n: int):
        y = torch.randint(0, 10, (n,), generator=g)
        x = torch.randint(0, 60, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
        for i, c in enumerate(y.tolist()):
            r, col = 2 + (c // 5) * 12, 2 + (c % 5) * 5
            x[i, 0, r : r + 8, col : col + 4] = 255
        return x, y

    trx, try_ = make(n_train)
    tex, tey = make(n_test)
    return ImageData("tiny", trx, try_, tex, tey, [str(i) for i in range(10)], (0.2,), (0.3,))


@pytest.fixture
def tiny_data():
    """A factory of small learnable datasets: ``tiny_data(n_train=256, n_test=64, seed=0)``."""
    return _tiny_image_data
