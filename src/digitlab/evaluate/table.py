"""A small results table that prints as text, renders as HTML in a notebook and saves as CSV or JSON.

The CLI turns it into a rich table; Jupyter calls ``_repr_html_``. No pandas: the tables are a
few dozen rows, and a dependency that large for them would be most of an install.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation of a value over repeated runs (seeds)."""

    mean: float
    std: float  # 0 for a single value
    n: int
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        vals = [float(v) for v in values]
        std = statistics.stdev(vals) if len(vals) > 1 else 0.0
        return cls(statistics.fmean(vals), std, len(vals), min(vals), max(vals))

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "n": self.n, "min": self.min, "max": self.max}


def _missing(v: object) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def percent(v: object) -> str:
    if _missing(v):
        return "-"
    if isinstance(v, Spread):
        return f"{v.mean:.2%} ± {v.std:.2%}" if v.n > 1 else f"{v.mean:.2%}"
    return f"{float(v):.2%}"  # type: ignore[arg-type]


def seconds(v: object) -> str:
    if _missing(v):
        return "-"
    if isinstance(v, Spread):
        return f"{v.mean:.1f} ± {v.std:.1f}s" if v.n > 1 else f"{v.mean:.1f}s"
    return f"{float(v):.1f}s"  # type: ignore[arg-type]


def count(v: object) -> str:
    return "-" if _missing(v) else f"{int(v):,}"  # type: ignore[call-overload]


def plain(v: object) -> str:
    if _missing(v):
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, Spread):
        return f"{v.mean:.4g} ± {v.std:.2g}"
    return str(v)


def default_format(column: str) -> Callable[[object], str]:
    """How a column prints, from its name: accuracies as percentages, times in seconds, counts with commas."""
    if column.endswith("acc") or column.endswith("accuracy"):
        return percent
    if column in ("seconds", "time"):
        return seconds
    if column in ("params", "parameters", "n"):
        return count
    return plain


class Table:
    """Rows of named values with a title; what `runs`, `compare` and `sweep` show.

    Args:
        columns: the column names, in order (a row's other keys are kept but not shown).
        rows: one dict per row; missing keys show as "-".
        title: printed over the table.
        formats: how to print a column (default from its name: ``default_format``).
    """

    def __init__(
        self,
        columns: Sequence[str],
        rows: Sequence[dict],
        *,
        title: str = "",
        formats: dict[str, Callable[[object], str]] | None = None,
    ) -> None:
        self.columns = list(columns)
        self.rows = [dict(r) for r in rows]
        self.title = title
        self.formats = {c: (formats or {}).get(c) or default_format(c) for c in self.columns}

    def __len__(self) -> int:
        return len(self.rows)

    def cells(self) -> list[list[str]]:
        """Every row as printed strings, in column order."""
        return [[self.formats[c](r.get(c)) for c in self.columns] for r in self.rows]

    def __str__(self) -> str:
        body = [self.columns] + self.cells()
        widths = [max(len(line[i]) for line in body) for i in range(len(self.columns))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in body]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(([self.title] if self.title else []) + lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in self.cells()
        )
        caption = f"<caption>{html.escape(self.title)}</caption>" if self.title else ""
        return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def records(self) -> list[dict]:
        """Rows as JSON-ready dicts: a Spread becomes ``{"mean", "std", "n", "min", "max"}``, paths strings."""
        return [{c: _jsonable(r.get(c)) for c in self.columns} for r in self.rows]

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps({"title": self.title, "rows": self.records()}, indent=2) + "\n"
        if path is not None:
            Path(path).write_text(text)
        return text

    def to_csv(self, path: str | Path | None = None) -> str:
        """CSV with the raw numbers; a Spread column becomes ``col`` (the mean), ``col_std`` and ``col_n``."""
        spread_cols = {c for c in self.columns if any(isinstance(r.get(c), Spread) for r in self.rows)}
        header: list[str] = []
        for c in self.columns:
            header += [c, f"{c}_std", f"{c}_n"] if c in spread_cols else [c]
        out = io.StringIO(newline="")
        w = csv.writer(out)
        w.writerow(header)
        for r in self.rows:
            line: list[object] = []
            for c in self.columns:
                v = r.get(c)
                if c in spread_cols:
                    line += [v.mean, v.std, v.n] if isinstance(v, Spread) else [_csv(v), "", ""]
                else:
                    line.append(_csv(v))
            w.writerow(line)
        text = out.getvalue()
        if path is not None:
            Path(path).write_text(text, newline="")
        return text


def _jsonable(v: object) -> object:
    if isinstance(v, Spread):
        return v.to_dict()
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def _csv(v: object) -> object:
    return "" if v is None else _jsonable(v)
