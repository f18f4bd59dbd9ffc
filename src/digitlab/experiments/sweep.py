"""`digitlab sweep`: train over a grid or an Optuna search of flags, several seeds each, and compare.

Every run is an ordinary ``digitlab train`` in its own process (``python -m digitlab train``), in
its own run directory under the sweep's folder, so a crash loses one run, its log stays beside
it (``<run>.log``), and `digitlab runs`/`compare`/`eval` read the results like any other run. Optuna keeps
the study (which configurations were tried, their scores, which failed) in ``study.db``, a SQLite
file in the same folder; running the same sweep again continues it: finished runs are kept, runs
stopped half-way continue with ``train --resume``, failed configurations are not retried.

A trial is one configuration; its score is the mean final accuracy over the seeds. Grid search
enqueues every grid point; ``random`` and ``tpe`` let Optuna's samplers propose configurations.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from digitlab.config import DataConfig, ModelConfig, TrainConfig
from digitlab.errors import DigitlabError, unknown_name
from digitlab.experiments.compare import Comparison, compare_runs
from digitlab.experiments.runs import find_runs, read_run

SEARCHES = ("grid", "random", "tpe")
# Flags a sweep sets on every run itself.
RESERVED = ("name", "runs_dir", "seed", "resume")


def _field_types() -> dict[str, str]:
    """Every `digitlab train` option the config knows, with its annotation ("int", "float | None", ...)."""
    types = {f.name: str(f.type) for cls in (DataConfig, ModelConfig, TrainConfig) for f in fields(cls)}
    types["preset"] = "str | None"
    return types


def parse_value(key: str, text: str, kind: str) -> object:
    """One swept value, converted the way the flag would convert it (``none`` leaves the flag out)."""
    text = text.strip()
    if text.lower() == "none" and "None" in kind:
        return None
    base = kind.replace("| None", "").strip()
    try:
        if base == "bool":
            if text.lower() not in ("true", "false", "yes", "no", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "yes", "1")
        if base == "int":
            return int(text)
        if base == "float":
            return float(text)
    except ValueError:
        raise DigitlabError(f"sweep: {key}={text!r} is not a valid {base}") from None
    return text


def _key(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise DigitlabError(f"sweep: expected KEY=VALUES, got {text!r}")
    key, values = text.split("=", 1)
    key = key.strip().lstrip("-").replace("-", "_")
    types = _field_types()
    if key in RESERVED:
        raise DigitlabError(f"sweep: {key} is set by the sweep itself (use --seeds for seeds)")
    if key not in types:
        raise unknown_name("train option", key, sorted(types))
    return key, values


@dataclass(frozen=True)
class Range:
    """A numeric search range for random/TPE search: ``lr=0.01:0.5:log``, ``batch_size=32:256``."""

    low: float
    high: float
    log: bool = False
    integer: bool = False


@dataclass
class SweepSpec:
    """What a sweep trains: grid values and ranges of `digitlab train` options, seeds, the search."""

    grid: dict[str, list] = field(default_factory=dict)  # option -> values (a categorical choice for random/tpe)
    ranges: dict[str, Range] = field(default_factory=dict)  # option -> numeric range (random/tpe only)
    seeds: list[int] = field(default_factory=lambda: [0])
    search: str = "grid"  # grid, random or tpe
    trials: int | None = None  # random/tpe: configurations to try in all (grid: every grid point)
    train_args: list[str] = field(default_factory=list)  # passed to every run, e.g. ["--dataset", "digits"]
    sampler_seed: int = 0  # random/tpe: the sampler's own seed, so a sweep proposes the same points again

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SweepSpec:
        ranges = {k: Range(**v) for k, v in d.get("ranges", {}).items()}
        return cls(**{**d, "ranges": ranges})

    def n_trials(self) -> int:
        if self.search == "grid":
            n = 1
            for values in self.grid.values():
                n *= len(values)
            return n
        return self.trials or 10


def parse_spec(
    grid: list[str],
    ranges: list[str],
    seeds: str,
    search: str | None,
    trials: int | None,
    train_args: list[str],
    sampler_seed: int = 0,
) -> SweepSpec:
    """A SweepSpec from the command line's ``--grid KEY=A,B``, ``--range KEY=LO:HI[:log]``, ``--seeds 0,1``."""
    types = _field_types()
    spec = SweepSpec(train_args=list(train_args), sampler_seed=sampler_seed)
    for text in grid:
        key, values = _key(text)
        spec.grid[key] = list(dict.fromkeys(parse_value(key, v, types[key]) for v in values.split(",")))
    for text in ranges:
        key, bounds = _key(text)
        parts = bounds.split(":")
        kind = types[key].replace("| None", "").strip()
        if kind not in ("int", "float") or len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "log"):
            raise DigitlabError(
                f"sweep: --range {text!r}: expected a numeric option as KEY=LOW:HIGH or KEY=LOW:HIGH:log"
            )
        low, high = (parse_value(key, p, kind) for p in parts[:2])
        if not low < high:  # type: ignore[operator]
            raise DigitlabError(f"sweep: --range {text!r}: LOW must be below HIGH")
        spec.ranges[key] = Range(float(low), float(high), len(parts) == 3, kind == "int")  # type: ignore[arg-type]
    if set(spec.grid) & set(spec.ranges):
        raise DigitlabError(f"sweep: {sorted(set(spec.grid) & set(spec.ranges))} given as both --grid and --range")
    try:
        spec.seeds = list(dict.fromkeys(int(s) for s in seeds.split(",")))
    except ValueError:
        raise DigitlabError(f"sweep: --seeds {seeds!r} is not a comma-separated list of integers") from None
    spec.search = search or ("grid" if not spec.ranges else "tpe")
    if spec.search not in SEARCHES:
        raise unknown_name("search", spec.search, list(SEARCHES))
    if spec.search == "grid" and spec.ranges:
        raise DigitlabError("sweep: --range needs --search random or tpe (a grid needs values: --grid KEY=A,B)")
    if not spec.grid and not spec.ranges and len(spec.seeds) < 2:
        raise DigitlabError("sweep: nothing to vary: give --grid, --range or several --seeds")
    if trials is not None and trials < 1:
        raise DigitlabError("sweep: --trials must be at least 1")
    spec.trials = trials
    swept = set(spec.grid) | set(spec.ranges)
    for arg in spec.train_args:
        flag = arg.split("=", 1)[0].lstrip("-").replace("-", "_")
        if arg.startswith("--") and (flag in RESERVED or flag in swept or flag.removeprefix("no_") in swept):
            raise DigitlabError(f"sweep: {arg} is set by the sweep; leave it out of the training flags")
    return spec


def flag_args(params: dict) -> list[str]:
    """``{"lr": 0.1, "ema": True, "width": None}`` -> ``["--lr", "0.1", "--ema"]`` (None: the default)."""
    args: list[str] = []
    for key, value in params.items():
        flag = "--" + key.replace("_", "-")
        if value is None:
            continue
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + key.replace("_", "-"))
        else:
            args += [flag, repr(value) if isinstance(value, float) else str(value)]
    return args


def run_name(params: dict, seed: int) -> str:
    """A run directory name from its values, so running the sweep again finds the same run."""
    parts = [
        f"{k.replace('_', '-')}{v:.6g}" if isinstance(v, float) else f"{k.replace('_', '-')}{v}"
        for k, v in params.items()
    ]
    name = "_".join(parts + [f"seed{seed}"])
    return re.sub(r"[^A-Za-z0-9.=+_-]", "-", name)


class TrialFailed(Exception):
    """A run of the trial exited with an error; the trial is recorded as failed and the sweep goes on."""


@dataclass
class SweepResult:
    folder: Path
    comparison: Comparison | None  # every run of the sweep (None: no run finished)
    states: dict[str, int]  # trial state -> count, e.g. {"COMPLETE": 5, "FAIL": 1, "INTERRUPTED": 2}
    failures: list[str]  # one line per failed run: which, its exit status, its log


@contextlib.contextmanager
def _lock(folder: Path) -> Iterator[None]:
    """One sweep process per folder: a second would train the same runs twice."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "sweep.lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DigitlabError(f"{folder} is being swept by another process") from None
        yield


class _Runner:
    """Trains one run (a configuration and a seed) in its own `digitlab train` process."""

    def __init__(self, spec: SweepSpec, folder: Path, log, jobs: int = 1) -> None:
        self.spec, self.folder, self.log = spec, folder, log
        self.failures: list[str] = []
        given = any(a.split("=")[0] == "--threads" for a in spec.train_args)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        # Parallel runs share the cores instead of each taking them all (oversubscription is slower).
        self.threads = [] if given else ["--threads", str(max(1, cores // jobs))]

    def run(self, params: dict, seed: int) -> float:
        name = run_name(params, seed)
        run_dir = self.folder / name
        before = read_run(run_dir) if (run_dir / "config.json").exists() else None
        if before is not None and before.status == "finished" and before.final_acc is not None:
            self.log(f"{name}: already finished ({before.final_acc:.2%})")
            return float(before.final_acc)
        if (run_dir / "last.pt").exists():  # stopped half-way by an earlier, interrupted sweep
            args = ["--resume", str(run_dir)]
        else:
            args = [*self.spec.train_args, *flag_args(params), "--seed", str(seed)]
            args += ["--name", name, "--runs-dir", str(self.folder)]
        cmd = [sys.executable, "-m", "digitlab", "train", *args, *self.threads, "--quiet"]
        log_path = self.folder / f"{name}.log"  # beside the run directory (which may never be made)
        self.log(f"{name}: {'resuming' if '--resume' in args else 'training'} (output in {log_path})")
        with log_path.open("a") as out:
            out.write("$ " + " ".join(cmd) + "\n")
            out.flush()
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
            try:
                rc = proc.wait()
            except KeyboardInterrupt:  # the run got the same Ctrl-C: let it save its last epoch
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                raise
        if rc in (130, -2):
            raise KeyboardInterrupt
        run = read_run(run_dir) if (run_dir / "config.json").exists() else None
        if rc != 0 or run is None or run.final_acc is None:
            line = f"{name}: exit status {rc}, see {log_path}"
            self.failures.append(line)
            self.log(line)
            raise TrialFailed(line)
        self.log(f"{name}: {run.final_acc:.2%} in {run.seconds or 0:.1f}s")
        return float(run.final_acc)


def _suggest(trial, spec: SweepSpec) -> dict:
    params: dict = {}
    for key, values in spec.grid.items():
        params[key] = trial.suggest_categorical(key, values)
    for key, r in spec.ranges.items():
        if r.integer:
            params[key] = trial.suggest_int(key, int(r.low), int(r.high), log=r.log)
        else:
            params[key] = trial.suggest_float(key, r.low, r.high, log=r.log)
    return params


def _prepare(study, spec: SweepSpec) -> int:
    """Put back what an interrupted sweep left unfinished; returns how many trials remain to run."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    for t in trials:
        if t.state == TrialState.RUNNING:  # its process is gone (we hold the lock): it was interrupted
            # Optuna's public API cannot end another process's trial; its storage interface can.
            study._storage.set_trial_user_attr(t._trial_id, "interrupted", True)
            study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    settled = [
        t
        for t in trials
        if t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL and not t.user_attrs.get("interrupted"))
    ]
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    known = {
        json.dumps(t.params if t.params else t.system_attrs.get("fixed_params", {}), sort_keys=True)
        for t in settled + waiting
    }
    if spec.search == "grid":
        points = [dict(zip(spec.grid, values, strict=True)) for values in itertools.product(*spec.grid.values())]
    else:  # the configurations interrupted sweeps had proposed
        points = [t.params for t in trials if t.state == TrialState.FAIL and t.user_attrs.get("interrupted")]
    for p in points:
        if json.dumps(p, sort_keys=True) not in known:
            study.enqueue_trial(p)
            known.add(json.dumps(p, sort_keys=True))
    waiting = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.WAITING]
    if spec.search == "grid":
        return len(waiting)
    return max(len(waiting), spec.n_trials() - len(settled))


def _optimize(study, spec: SweepSpec, runner: _Runner, n_trials: int, jobs: int) -> None:
    """Ask Optuna for ``n_trials`` configurations and train each with every seed, ``jobs`` runs at a time.

    Optuna is asked and told from this thread only (its SQLite storage hands one waiting trial to two
    threads that ask at once); the runs wait on their processes in a pool of ``jobs`` threads.
    """
    from optuna.trial import Trial, TrialState

    open_trials: dict[int, tuple[Trial, list[Future]]] = {}  # trial number -> (trial, its runs)
    asked = 0
    with ThreadPoolExecutor(jobs) as pool:
        try:
            while asked < n_trials or open_trials:
                # A new configuration as soon as a process is free, so TPE sees every result so far.
                while asked < n_trials and sum(not f.done() for _, fs in open_trials.values() for f in fs) < jobs:
                    trial = study.ask()
                    params = _suggest(trial, spec)
                    open_trials[trial.number] = (trial, [pool.submit(runner.run, params, s) for s in spec.seeds])
                    asked += 1
                wait([f for _, fs in open_trials.values() for f in fs], return_when=FIRST_COMPLETED)
                for number, (trial, futures) in list(open_trials.items()):
                    if not all(f.done() for f in futures):
                        continue
                    del open_trials[number]
                    errors = [f.exception() for f in futures]
                    if any(isinstance(e, KeyboardInterrupt) for e in errors):
                        raise KeyboardInterrupt
                    if any(e is not None for e in errors):
                        trial.set_user_attr("error", str(next(e for e in errors if e is not None)))
                        study.tell(trial, state=TrialState.FAIL)
                    else:
                        study.tell(trial, sum(f.result() for f in futures) / len(futures))
        except KeyboardInterrupt:
            # The runs got the same Ctrl-C and save their last epoch; record their trials as interrupted
            # so that running the sweep again continues them (``_prepare``).
            for trial, futures in open_trials.values():
                wait(futures)
                trial.set_user_attr("interrupted", True)
                study.tell(trial, state=TrialState.FAIL)
            raise


def run_sweep(spec: SweepSpec, folder: str | Path, *, jobs: int = 1, log=print) -> SweepResult:
    """Run (or continue) a sweep in ``folder`` and compare its runs.

    Args:
        spec: what to vary and how (``parse_spec`` builds one from the command line).
        folder: the sweep's folder: ``study.db``, ``sweep.json``, one run directory and log per run.
        jobs: runs trained at the same time (each gets cores/jobs threads unless the flags say ``--threads``).
        log: called with one line when a run starts and one when it has finished, failed or was already done.
    """
    try:
        import optuna
    except ImportError:
        raise DigitlabError("digitlab sweep needs Optuna: pip install 'digitlab[sweep]'") from None
    if jobs < 1:
        raise DigitlabError("sweep: --jobs must be at least 1")
    folder = Path(folder)
    with _lock(folder):
        # The runner prints one line per run; Optuna's own warnings would repeat each failure with a traceback.
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        samplers = {"grid": optuna.samplers.RandomSampler, "random": optuna.samplers.RandomSampler}
        sampler = samplers.get(spec.search, optuna.samplers.TPESampler)(seed=spec.sampler_seed)
        study = optuna.create_study(
            storage=f"sqlite:///{folder.resolve() / 'study.db'}",
            study_name="sweep",
            direction="maximize",
            sampler=sampler,
            load_if_exists=True,
        )
        stored = study.user_attrs.get("spec")
        if stored is None:
            study.set_user_attr("spec", spec.to_dict())
        elif stored != json.loads(json.dumps(spec.to_dict())):
            raise DigitlabError(f"{folder} holds a different sweep (see its sweep.json); choose another --name")
        (folder / "sweep.json").write_text(json.dumps(spec.to_dict(), indent=2) + "\n")  # for people; the study has it
        remaining = _prepare(study, spec)
        runner = _Runner(spec, folder, log, jobs)
        _optimize(study, spec, runner, remaining, jobs)
        states: dict[str, int] = {}
        for t in study.get_trials(deepcopy=False):
            state = "INTERRUPTED" if t.user_attrs.get("interrupted") else t.state.name  # and retried since
            states[state] = states.get(state, 0) + 1
    runs = [read_run(r.path, with_params=True) for r in find_runs(folder)[0]]
    return SweepResult(folder, compare_runs(runs) if runs else None, states, runner.failures)
