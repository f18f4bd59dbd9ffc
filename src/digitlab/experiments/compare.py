"""Comparing runs: the config fields that differ, parameters, accuracy and time, and mean ± spread over seeds.

The tutorials compare all the time (FC against CNN, one optimizer against another, 5 epochs
against 22); this puts any set of run directories side by side from the files they already hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from digitlab.errors import DigitlabError
from digitlab.evaluate.table import Spread, Table
from digitlab.experiments.runs import RunInfo, find_runs, read_run

# Fields that tell runs apart without being a difference in what was trained.
IGNORED = ("name", "runs_dir", "provenance")
RESULT_COLUMNS = ("final_acc", "best_acc", "seconds")


def flatten(config: dict) -> dict[str, object]:
    """``{"train": {"lr": 0.1}, "preset": None}`` -> ``{"lr": 0.1, "preset": None}``.

    Field names are unique across the config's sections, so the short name is the flag's name.
    """
    flat: dict[str, object] = {}
    for key, value in config.items():
        if key in IGNORED:
            continue
        if isinstance(value, dict):
            flat.update({k: v for k, v in value.items() if not isinstance(v, dict)})
        else:
            flat[key] = value
    return flat


def differing_fields(configs: list[dict]) -> list[str]:
    """The config fields whose value is not the same in every config, in config order."""
    flats = [flatten(c) for c in configs]
    keys = list(dict.fromkeys(k for f in flats for k in f))
    return [k for k in keys if len({repr(f.get(k)) for f in flats}) > 1]


@dataclass
class Comparison:
    """Runs side by side; prints as text and shows as HTML tables in a notebook."""

    runs: list[RunInfo]
    fields: list[str]  # the config fields that differ between the runs
    table: Table  # one row per run
    over_seeds: Table | None  # one row per configuration run with several seeds (None: no repeats)

    def __str__(self) -> str:
        return "\n\n".join(str(t) for t in (self.table, self.over_seeds) if t is not None)

    def _repr_html_(self) -> str:
        return "".join(t._repr_html_() for t in (self.table, self.over_seeds) if t is not None)

    def to_csv(self, path: str | Path | None = None) -> str:
        """One row per run (the over-seeds table follows from it; `digitlab sweep` writes both)."""
        return self.table.to_csv(path)

    def to_json(self, path: str | Path | None = None) -> str:
        import json

        doc = {
            "fields": self.fields,
            "runs": self.table.records(),
            "over_seeds": self.over_seeds.records() if self.over_seeds is not None else [],
        }
        text = json.dumps(doc, indent=2) + "\n"
        if path is not None:
            Path(path).write_text(text)
        return text

    def plot(self, path: str | Path | None = None):
        """Overlaid loss and accuracy curves of every run (a matplotlib Figure; saved when given a path)."""
        from digitlab.evaluate.plots import plot_compare

        return plot_compare({label(r, self.fields): r.history for r in self.runs}, path)


def label(run: RunInfo, fields: list[str]) -> str:
    """A run's legend entry: its name, and the differing values when they are few."""
    flat = flatten(run.config)
    shown = [f"{k}={flat.get(k)}" for k in fields]
    return run.name if not shown or len(shown) > 3 else f"{run.name} ({', '.join(shown)})"


def collect(paths: list[str | Path]) -> list[RunInfo]:
    """Run directories from the command line: each path a run, or a folder of runs (a sweep's folder)."""
    runs: list[RunInfo] = []
    for p in paths:
        if (Path(p) / "config.json").exists() or Path(p).is_file():
            runs.append(read_run(p, with_params=True))
        elif Path(p).is_dir():
            found, _ = find_runs(p)
            if not found:
                raise DigitlabError(f"{p} holds no runs")
            runs += [read_run(r.path, with_params=True) for r in found]
        else:
            raise DigitlabError(f"{p} does not exist")
    return runs


def compare_runs(runs: list[RunInfo]) -> Comparison:
    """The comparison table of ``runs``, and mean ± spread over the runs that differ only by seed."""
    if not runs:
        raise DigitlabError("nothing to compare: give at least one run directory")
    fields = differing_fields([r.config for r in runs])
    rows = []
    for r in runs:
        flat = flatten(r.config)
        rows.append(
            {
                "name": r.name,
                **{f: flat.get(f) for f in fields},
                "params": r.params,
                **{c: getattr(r, c) for c in RESULT_COLUMNS},
                "status": r.status,
            }
        )
    table = Table(["name", *fields, "params", *RESULT_COLUMNS, "status"], rows, title="runs compared")
    return Comparison(runs, fields, table, over_seeds(runs, fields))


def over_seeds(runs: list[RunInfo], fields: list[str]) -> Table | None:
    """Mean ± sample standard deviation over seeds of every configuration that was run with several.

    Only finished runs count: an interrupted run's accuracy is an earlier epoch's.
    """
    config_fields = [f for f in fields if f != "seed"]
    groups: dict[tuple, list[RunInfo]] = {}
    for r in runs:
        if r.status == "finished" and r.final_acc is not None:
            flat = flatten(r.config)
            groups.setdefault(tuple(repr(flat.get(f)) for f in config_fields), []).append(r)
    if "seed" not in fields or not any(len(g) > 1 for g in groups.values()):
        return None
    rows = []
    for group in groups.values():
        flat = flatten(group[0].config)
        row: dict = {f: flat.get(f) for f in config_fields}
        row["seeds"] = ",".join(str(flatten(r.config).get("seed")) for r in group)
        row["params"] = group[0].params
        for c in RESULT_COLUMNS:
            values = [getattr(r, c) for r in group if getattr(r, c) is not None]
            row[c] = Spread.of(values) if values else None
        rows.append(row)
    rows.sort(key=lambda r: -r["final_acc"].mean if r["final_acc"] else 0.0)
    return Table(
        [*config_fields, "seeds", "params", *RESULT_COLUMNS],
        rows,
        title="mean ± standard deviation over seeds (finished runs)",
    )
