"""``--resume``: which ``last.pt`` can be continued, and which flags may change when it is.

A resumed run keeps its recipe: flags that would change what it learns (model, data, optimizer,
learning rate, seed, precision, ...) are refused by name; flags that only say how long and where it
runs (``MAY_CHANGE``) are applied.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from digitlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from digitlab.data.locate import stored_data_dir
from digitlab.engine.checkpoint import load_checkpoint
from digitlab.errors import DigitlabError

# How long, where and how fast it runs, and how it reports: none of these changes the weights it learns.
MAY_CHANGE: dict[str, tuple[str, ...]] = {
    "train": ("epochs", "device", "threads", "compile", "compile_step", "eval_every", "log_every", "tensorboard"),
    "data": ("data_dir", "download"),
    "run": ("name", "runs_dir"),  # taken from the resumed path; given ones are ignored
}
RESUME_KEYS = ("optimizer", "rng", "history", "epoch", "config")
_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


def run_dir_of_resume(path: str | Path) -> Path:
    """The run directory of ``--resume PATH`` (a run directory, or a file inside one)."""
    p = Path(path)
    return p if p.is_dir() else p.parent


def load_resume_state(path: str | Path) -> dict:
    """``last.pt`` of a run, checked to hold everything a resume needs; a clear error otherwise."""
    state = load_checkpoint(path, default_name="last.pt")
    if "optimizer" not in state:
        raise DigitlabError(f"{path} has no training state (only last.pt does); pass the run directory or its last.pt")
    missing = [k for k in RESUME_KEYS if k not in state]
    if missing:
        raise DigitlabError(f"{path} lacks {', '.join(missing)}: it is not a last.pt that digitlab can resume")
    epoch = state["epoch"]
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1 or epoch != len(state["history"]):
        raise DigitlabError(
            f"{path} says epoch {epoch!r} with {len(state['history'])} epochs of history; "
            "it was not written by digitlab train and cannot be resumed"
        )
    config_from_state(state, str(path))  # unknown keys are refused here, before any work
    return state


def config_from_state(state: dict, where: str) -> RunConfig:
    """The run's config from its checkpoint; a key this digitlab does not know is a clear error."""
    cfg = state.get("config")
    if not isinstance(cfg, dict):
        raise DigitlabError(f"{where} has no config dict; it cannot be resumed")
    unknown = []
    for section, cls in _SECTIONS.items():
        names = {f.name for f in fields(cls)}
        unknown += [f"{section}.{k}" for k in cfg.get(section, {}) if k not in names]
    top = {f.name for f in fields(RunConfig)} | {"provenance"}
    unknown += [k for k in cfg if k not in top]
    if unknown:
        raise DigitlabError(
            f"{where} has config keys this digitlab does not know: {', '.join(unknown)} "
            "(written by another version?); it cannot be resumed"
        )
    return RunConfig.from_dict(cfg)


def resume_config(state: dict, path: str | Path, given: dict[str, dict]) -> RunConfig:
    """The config to continue ``state`` with: its own, plus the flags in ``given`` that may change.

    Args:
        state: the run's ``last.pt`` (see ``load_resume_state``).
        path: what ``--resume`` was given (the run directory or its last.pt).
        given: the flags the user gave, ``{section: {field: value}}`` (None: not given); sections are
            data, model, train and run.

    Raises DigitlabError naming every given flag that would change the run.
    """
    cfg = config_from_state(state, str(path))
    cfg.data.data_dir = stored_data_dir(cfg.data.data_dir)  # gone (another machine): search as usual
    refused = []
    for section, values in given.items():
        target = cfg if section == "run" else getattr(cfg, section)
        for name, value in values.items():
            if value is None or name in MAY_CHANGE.get("run", ()) and section == "run":
                continue
            if name in MAY_CHANGE.get(section, ()):
                setattr(target, name, value)
            elif value != getattr(target, name, None):
                refused.append(f"--{name.replace('_', '-')}")
    if refused:
        allowed = sorted(f"--{n.replace('_', '-')}" for s in ("train", "data") for n in MAY_CHANGE[s])
        raise DigitlabError(
            f"--resume continues a run with its own recipe; {', '.join(refused)} would change it "
            f"(start a new run instead). A resume may change: {', '.join(allowed)}"
        )
    run_dir = run_dir_of_resume(path)
    cfg.runs_dir, cfg.name = str(run_dir.parent), run_dir.name
    return cfg
