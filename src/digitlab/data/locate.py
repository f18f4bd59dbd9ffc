"""Finding dataset files on disk.

Roots are searched in order: the ``data_dir`` argument, ``$DIGITLAB_DATA``, then the user
cache directory. A ``data_dir`` or ``$DIGITLAB_DATA`` must be an existing folder: it is never
created (a typo would otherwise fill an empty folder beside the data with downloads), and a
relative one is made absolute once, from the directory it was given in. The user cache is
created when a download needs it. Inside a root we accept the files themselves, a folder per dataset
(``mnist/``, ``fashion-mnist/``, ``cifar10/``) and torchvision's layout (``MNIST/raw/``,
``FashionMNIST/raw/``, ``cifar-10-batches-py/``), so both ``--data-dir data`` and
``--data-dir data/mnist`` work.
"""

from __future__ import annotations

import os
from pathlib import Path

from digitlab.errors import DigitlabError

ENV_DATA = "DIGITLAB_DATA"

# IDX file stems; each may be stored gzip-compressed (.gz) or not.
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# Sub-folders of a root where each dataset may live; "" is the root itself.
SUBDIRS = {
    "mnist": ["", "mnist", "MNIST/raw", "MNIST", "mnist/MNIST/raw"],
    "fashion-mnist": [
        "",
        "fashion-mnist",
        "FashionMNIST/raw",
        "fashion_mnist",
        "FashionMNIST",
        "fashion-mnist/FashionMNIST/raw",
    ],
    "cifar10": ["", "cifar-10-batches-py", "cifar10", "cifar10/cifar-10-batches-py", "cifar-10", "CIFAR10"],
    "usps": ["", "usps"],
    "optdigits": ["", "optdigits"],
}

CIFAR_TARBALL = "cifar-10-python.tar.gz"
CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def cache_dir() -> Path:
    """The per-user cache directory: ``$XDG_CACHE_HOME/digitlab`` or ``~/.cache/digitlab``."""
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "digitlab"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "digitlab"


def existing_folder(path: str | os.PathLike, what: str) -> Path:
    """``path`` made absolute (``~`` expanded, relative to the current directory), if it is a folder.

    Raises DigitlabError naming ``what`` (``--data-dir``, ``$DIGITLAB_DATA``) otherwise.
    """
    given = Path(path).expanduser()
    folder = Path(os.path.abspath(given))
    if folder.is_dir():
        return folder
    where = "" if given.is_absolute() else f" (relative to {os.getcwd()})"
    state = "is not a folder" if folder.exists() else "does not exist"
    raise DigitlabError(
        f"{what} {folder} {state}{where}; pass the folder that holds the data files "
        "(digitlab does not create it; make it first to download into it)"
    )


def resolve_data_dir(data_dir: str | os.PathLike | None) -> str | None:
    """A ``--data-dir`` as the absolute path of an existing folder (None stays None).

    Configs store this, so a resumed or evaluated run finds the same folder from anywhere.
    """
    return None if data_dir is None else str(existing_folder(data_dir, "--data-dir"))


def stored_data_dir(data_dir: str | None) -> str | None:
    """A ``data_dir`` recorded in a checkpoint's config: kept if that folder still exists, else None.

    Why: it is where the training found its data, not a folder the user named now; on another
    machine (the shipped model's ``../shared/data``) the usual search ($DIGITLAB_DATA, the cache) applies.
    """
    if data_dir and Path(data_dir).expanduser().is_dir():
        return data_dir
    return None


def search_roots(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The directories searched, in order, without duplicates; DigitlabError for a missing one."""
    roots: list[Path] = []
    if data_dir is not None:
        roots.append(existing_folder(data_dir, "--data-dir"))
    if os.environ.get(ENV_DATA):
        roots.append(existing_folder(os.environ[ENV_DATA], f"${ENV_DATA}"))
    roots.append(cache_dir())
    seen, unique = set(), []
    for r in roots:
        key = os.path.abspath(r)
        if key not in seen:
            seen.add(key)
            unique.append(r)
    return unique


def _belongs_to_other(dataset: str, folder: Path) -> bool:
    """MNIST and Fashion-MNIST share file names: don't take one's folder for the other's."""
    name = folder.name.lower().replace("_", "-")
    if folder.name == "raw":
        name = folder.parent.name.lower()
    if dataset == "mnist":
        return "fashion" in name
    if dataset == "fashion-mnist":
        return name in ("mnist", "mnist-raw")
    return False


def _candidate_dirs(dataset: str, roots: list[Path]) -> list[Path]:
    dirs = []
    for root in roots:
        for sub in SUBDIRS[dataset]:
            d = root / sub if sub else root
            if sub == "" and _belongs_to_other(dataset, d):
                continue
            dirs.append(d)
    return dirs


def _idx_file(folder: Path, stem: str) -> Path | None:
    # Uncompressed first (faster to read); the dotted spelling is what some mirrors ship.
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        p = folder / name
        if p.is_file():
            return p
    return None


def find_idx_files(dataset: str, data_dir: str | os.PathLike | None = None) -> dict[str, Path] | None:
    """The four IDX files of ``mnist`` or ``fashion-mnist`` from the first folder that has all four."""
    for folder in _candidate_dirs(dataset, search_roots(data_dir)):
        if not folder.is_dir():
            continue
        found = {key: _idx_file(folder, stem) for key, stem in IDX_FILES.items()}
        if all(found.values()):
            return found  # type: ignore[return-value]
    return None


# The text datasets' required files, each plain, gzip (.gz) or Unix compress (.Z, as UCI serves optdigits).
TEXT_FILES = {"usps": ["zip.train"], "optdigits": ["optdigits-orig.tra", "optdigits-orig.cv"]}
TEXT_SUFFIXES = ("", ".gz", ".Z")


def find_text_files(
    dataset: str, required: list[str], optional: list[str], data_dir: str | os.PathLike | None = None
) -> dict[str, Path] | None:
    """The first folder holding every ``required`` file (each plain, .gz or .Z): name -> path, with the
    ``optional`` ones found beside them."""
    for folder in _candidate_dirs(dataset, search_roots(data_dir)):
        if not folder.is_dir():
            continue
        found = {}
        for name in required + optional:
            path = next((folder / (name + s) for s in TEXT_SUFFIXES if (folder / (name + s)).is_file()), None)
            if path is not None:
                found[name] = path
        if all(name in found for name in required):
            return found
    return None


def find_cifar10(data_dir: str | os.PathLike | None = None) -> Path | None:
    """An extracted ``cifar-10-batches-py`` folder or the ``cifar-10-python.tar.gz`` archive."""
    for folder in _candidate_dirs("cifar10", search_roots(data_dir)):
        if not folder.is_dir():
            continue
        if all((folder / b).is_file() for b in CIFAR_BATCHES):
            return folder
        if (folder / CIFAR_TARBALL).is_file():
            return folder / CIFAR_TARBALL
    return None


def download_dir(dataset: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Where downloads go: the first search root, in a folder named after the dataset.

    A root that already is that folder (``--data-dir data/mnist``) is used as it is.
    """
    root = search_roots(data_dir)[0]
    if root.name.lower() in (dataset, dataset.replace("-", "_"), dataset.replace("-", "")):
        return root
    return root / dataset


def expected_files(dataset: str) -> list[str]:
    """File names a user can put in place by hand."""
    if dataset == "cifar10":
        return [
            CIFAR_TARBALL + "  (or the extracted cifar-10-batches-py/ folder)",
            "or a JPEG copy: cifar10-jpeg.tar.gz  (or its unpacked cifar10-jpeg/ folder with train/ and test/)",
        ]
    if dataset in TEXT_FILES:
        return [name + ".gz" for name in TEXT_FILES[dataset]]
    return [stem + ".gz" for stem in IDX_FILES.values()]


def missing_message(dataset: str, data_dir: str | os.PathLike | None = None) -> str:
    """A user-facing explanation of which files to put where."""
    roots = search_roots(data_dir)
    subs = ", ".join(s + "/" for s in SUBDIRS[dataset] if s)
    lines = [
        f"{dataset} files not found. Put these files:",
        *(f"    {f}" for f in expected_files(dataset)),
        "  (gzip-compressed or not)" if dataset != "cifar10" else "",
        f"  directly in, or in a sub-folder ({subs}) of, one of the directories searched:",
        *(f"    {r}" for r in roots),
        f"  (--data-dir, then ${ENV_DATA}, then the user cache directory)",
    ]
    return "\n".join(line for line in lines if line)


def find_or_download_text_files(
    name: str, required: list[str], optional: list[str], data_dir, *, download: bool, progress: bool, mirrors
) -> dict[str, Path]:
    """The text set's files (``find_text_files``), downloaded into the usual place when missing."""
    files = find_text_files(name, required, optional, data_dir)
    if files is not None:
        return files
    if not download:
        raise DigitlabError(missing_message(name, data_dir) + "\n  (downloading is switched off)")
    from digitlab.data.download import download_dataset  # download imports this module

    dest = download_dir(name, data_dir)
    try:
        download_dataset(name, dest, mirrors=mirrors, progress=progress)
    except DigitlabError as exc:
        raise DigitlabError(f"{exc}\n{missing_message(name, data_dir)}") from exc
    files = find_text_files(name, required, optional, dest)
    if files is None:
        raise DigitlabError(missing_message(name, dest))
    return files
