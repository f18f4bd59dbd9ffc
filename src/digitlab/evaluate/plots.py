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


def plot_curves(history: list[dict], path: str | Path) -> Path:
    """Loss and accuracy per epoch for train and test, side by side (seed 001's figure).

    Args:
        history: one dict per epoch with keys epoch, train_loss, train_acc, test_loss,
            test_acc (and time, unused here); missing or None values are skipped.
        path: PNG to write.
    """
    fig = Figure(figsize=(10, 3.5), dpi=100)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for ax, metric, name in ((ax_loss, "loss", "Loss"), (ax_acc, "acc", "Accuracy")):
        for split, style in (("train", "o-"), ("test", "s-")):
            x, y = _series(history, f"{split}_{metric}")
            if x:
                ax.plot(x, y, style, label=f"{split} {metric}", markersize=4)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"Training and test {name.lower()}")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right" if metric == "loss" else "lower right")
    return _save(fig, path)


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
        ax.bar_label(rects, labels=labels, fontsize=8, padding=2)
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
