"""Shared fixtures. Tests make their own small data; only `mnist_dir` points at real files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MNIST_FILE = "train-images-idx3-ubyte.gz"


def _mnist_candidates() -> list[Path]:
    found = []
    env = os.environ.get("DIGITLAB_DATA")
    if env:
        found += [Path(env), Path(env) / "mnist"]
    found.append(REPO.parent / "shared" / "data" / "mnist")
    return found


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The folder holding the four real MNIST .gz files ($DIGITLAB_DATA or <repo>/../shared/data/mnist)."""
    for d in _mnist_candidates():
        if (d / MNIST_FILE).is_file():
            return d.resolve()
    where = ", ".join(str(d) for d in _mnist_candidates())
    pytest.skip(f"real MNIST not found (looked for {MNIST_FILE} in {where}); set DIGITLAB_DATA to its folder")


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
