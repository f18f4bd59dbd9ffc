"""Training curves, run comparisons, confusion matrices and bar charts.

Each plot function returns its matplotlib ``Figure`` (a notebook shows it) and writes a PNG when
given a path. Figures use matplotlib's object API: no pyplot global state, no GUI backend.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    return path


def _finish(fig: Figure, path: str | Path | None) -> Figure:
    """Lay the figure out, write it when given a path, and return it."""
    if path is None:
        fig.tight_layout()
    else:
        _save(fig, path)
    return fig


def _wrapped(title: str, width_inches: float, fontsize: float) -> str:
    # Break a long title into lines that fit the figure instead of letting it run off the edge.
    # The axes take about 80% of the figure's width; an average character is about 0.6 em wide.
    chars = max(20, int(0.8 * width_inches * 72 / (0.6 * fontsize)))
    return "\n".join(textwrap.wrap(title, chars)) if title else ""


def _series(history: list[dict], key: str) -> tuple[list, list]:
    # Rows may lack a test value (evaluated every N epochs only): plot the points that exist.
    pts = [(row["epoch"], row[key]) for row in history if row.get(key) is not None]
    return [e for e, _ in pts], [v for _, v in pts]


def plot_curves(history: list[dict], path: str | Path | None = None, *, steps: list[float] | None = None) -> Figure:
    """Training loss at every step with each evaluated epoch's test point over it, and accuracy.

    The x axis counts steps (epochs on the top axis), so a one-epoch run is a curve of its steps
    rather than a single point. Without ``steps`` (a run whose metrics have no step losses) the
    curves are per epoch, as seed 001 drew them.

    Args:
        history: metrics.csv rows: epoch, train_loss, train_acc, test_loss, test_acc and ``step``
            (the global step at the epoch's end); missing or None values are skipped.
        path: PNG to write; None: only return the figure.
        steps: each training step's loss, in order (``last.pt``'s ``step_losses``).
    """
    per_step = bool(steps) and all(row.get("step") for row in history)
    key = "step" if per_step else "epoch"
    fig = Figure(figsize=(10, 3.5), dpi=100)
    ax_loss, ax_acc = fig.subplots(1, 2)
    if per_step and steps:  # (per_step implies steps; said again for the type checker)
        n = len(steps)
        window = max(1, n // 50)
        smooth = np.convolve(steps, np.ones(window) / window, mode="valid")
        ax_loss.plot(range(1, n + 1), steps, "-", color="C0", lw=0.6, alpha=0.3, label="train loss (each step)")
        if window > 1:
            ax_loss.plot(range(window, n + 1), smooth, "-", color="C0", label=f"train loss (mean of {window} steps)")
    else:
        x, y = _points(history, key, "train_loss")
        ax_loss.plot(x, y, "o-", color="C0", label="train loss", markersize=4)
    x, y = _points(history, key, "test_loss")
    if x:
        ax_loss.plot(x, y, "s-", color="C1", label="test loss (per epoch)", markersize=5)
    for split, style, color in (("train", "o-", "C0"), ("test", "s-", "C1")):
        x, y = _points(history, key, f"{split}_acc")
        if x:
            ax_acc.plot(x, y, style, color=color, label=f"{split} accuracy (per epoch)", markersize=5)
    for ax, name in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.set_xlabel(key)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"Training and test {name}")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right" if name == "loss" else "lower right", fontsize=8)
        if per_step:  # epochs on top, so the steps can be read as epochs too
            per_epoch = history[0]["step"] / history[0]["epoch"]
            top = ax.secondary_xaxis("top", functions=(lambda s, k=per_epoch: s / k, lambda e, k=per_epoch: e * k))
            top.set_xlabel("epoch")
            top.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _finish(fig, path)


def _points(history: list[dict], x_key: str, key: str) -> tuple[list, list]:
    # Rows may lack a test value (evaluated every N epochs only): plot the points that exist.
    pts = [(row[x_key], row[key]) for row in history if row.get(key) is not None]
    return [x for x, _ in pts], [v for _, v in pts]


def plot_confusion(cm, classes: list[str], path: str | Path | None = None) -> Figure:
    """A confusion matrix (rows: true class, columns: predicted) with the count in each cell."""
    cm = np.asarray(cm)
    k = len(classes)
    size = max(4.0, 0.5 * k + 1.5)
    fig = Figure(figsize=(size + 1, size), dpi=100)
    ax = fig.subplots()
    im = ax.imshow(cm, cmap="Blues", interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    long_names = max(map(len, classes), default=1) > 2  # "airplane", not "7": slant them
    ax.set_xticks(range(k), classes, rotation=45 if long_names else 0, ha="right" if long_names else "center")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix")
    threshold = cm.max() / 2 if cm.size else 0
    fontsize = 8 if k <= 12 else 6
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(
                    j,
                    i,
                    str(int(cm[i, j])),
                    ha="center",
                    va="center",
                    fontsize=fontsize,
                    color="white" if cm[i, j] > threshold else "black",
                )
    return _finish(fig, path)


def plot_bars(
    table: dict[str, dict[str, float]],
    path: str | Path | None = None,
    *,
    title: str = "",
    ylabel: str = "accuracy",
    errors: dict[str, dict[str, float]] | None = None,
) -> Figure:
    """Grouped bars: one group per outer key (e.g. model), one bar per inner key (e.g. condition).

    Args:
        table: ``{group: {bar: value}}``.
        path: PNG to write (None: only return the figure).
        title: over the chart, wrapped to its width.
        ylabel: the value axis.
        errors: same shape as ``table``: error bar half-heights (e.g. the standard deviation over seeds).
    """
    groups = list(table)
    bars = list(dict.fromkeys(k for row in table.values() for k in row))
    x = np.arange(len(groups))
    width = 0.8 / max(1, len(bars))
    fig_width = 1.8 * len(groups) + 2
    fig = Figure(figsize=(fig_width, 3.8), dpi=100)
    ax = fig.subplots()
    for b, name in enumerate(bars):
        values = [table[g].get(name, np.nan) for g in groups]
        yerr = [errors.get(g, {}).get(name, 0.0) for g in groups] if errors else None
        rects = ax.bar(x + (b - (len(bars) - 1) / 2) * width, values, width, label=name, yerr=yerr, capsize=4)
        spreads = yerr or [0.0] * len(values)
        labels = [f"{v:.3f}" + (f"\n±{e:.3f}" if e else "") for v, e in zip(values, spreads, strict=True)]
        ax.bar_label(rects, labels=labels, fontsize=8, padding=2)  # above the error bar, where there is one
    ax.set_xticks(x, groups)
    ax.set_ylabel(ylabel)
    if all(v <= 1 for row in table.values() for v in row.values()):
        ax.set_ylim(0, 1.3)  # fractions: room above 1.0 for the labels and legend
    ax.set_title(_wrapped(title, fig_width, 11), fontsize=11)
    ax.legend(loc="upper center", ncols=len(bars), fontsize=8)
    return _finish(fig, path)


def plot_compare(histories: dict[str, list[dict]], path: str | Path | None = None) -> Figure:
    """Several runs' curves overlaid: loss (train solid, test dashed) and test accuracy, per epoch.

    Args:
        histories: ``{label: metrics.csv rows}`` (keys epoch, train_loss, test_loss, test_acc).
        path: PNG to write (e.g. ``compare.png``); None: only return the figure.
    """
    fig = Figure(figsize=(11, 4), dpi=100)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for i, (name, history) in enumerate(histories.items()):
        color = f"C{i % 10}"
        x, y = _series(history, "train_loss")
        ax_loss.plot(x, y, "-", color=color, marker="o", markersize=3, label=f"{name} train")
        x, y = _series(history, "test_loss")
        ax_loss.plot(x, y, "--", color=color, marker="s", markersize=3, label=f"{name} test")
        x, y = _series(history, "test_acc")
        ax_acc.plot(x, y, "-", color=color, marker="s", markersize=3, label=name)
    for ax, what in ((ax_loss, "loss (train solid, test dashed)"), (ax_acc, "test accuracy")):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(what)
        ax.grid(alpha=0.3)
    ax_loss.set_yscale("log")  # losses of different runs differ by factors; a log axis keeps all readable
    ax_acc.legend(fontsize=7, loc="lower right")
    return _finish(fig, path)
