"""Reading a row of digits as a number: cut a wide segment in two, or join two into one, when the model is surer.

``digitlab.inference.segment`` offers, for each segment, places where it may be two touching
digits and whether it and its neighbour may be one digit written in two strokes. The predictor
reads the segments as they are, then ``_Prepared.add_offers`` preprocesses only the offers that
could still win, and ``_best_reading`` picks the most probable reading left to right.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the predictor imports this module: a runtime import would be a circle
    from digitlab.inference.predictor import DigitPrediction

SPLIT_COST = 0.3  # log-probability a cut of one segment into two digits must gain to be taken
# (label smoothing 0.1 caps a confident digit near 0.9: two confident halves never beat a confident
# whole by this much, while a misread whole at 0.5 against two halves at 0.9 does)
JOIN_COST = 1.0  # ... and a join of two neighbours into one digit


@dataclass
class _Prepared:
    """One image after preprocessing, before the model: the model input and where it came from."""

    source: str
    x: np.ndarray  # float32 (N, C, H, W): the digits, then the halves of wide ones; N = 0 for a blank image
    images: list[np.ndarray]  # one per row of x
    boxes: list[tuple[int, int, int, int] | None]
    ms: float
    n_main: int = 0  # rows of x that are the digits as segmented
    halves: dict[int, list[int]] = field(default_factory=dict)  # digit index -> rows of each cut's first half
    joins: dict[int, int] = field(default_factory=dict)  # digit index -> row of it joined with the next
    digits: list = field(default_factory=list)  # the preprocessed Digits (their offers not yet expanded)

    def add_offers(self, main_probs: np.ndarray, everything: bool = False) -> np.ndarray | None:
        """Preprocess the cuts and joins that could still beat the digits as read; their inputs, or None.

        A reading scores its log-probabilities less SPLIT_COST per cut and JOIN_COST per join, and no
        log-probability exceeds 0. So a cut of digit i can only win when log p(i) < -SPLIT_COST, and a
        join of i and i+1 only when log p(i) + log p(i+1) < -JOIN_COST (each digit's best reading
        scores at least its whole log-probability). Confident digits skip the work: the same answer.
        ``everything``: all offers, as if none could be ruled out (to check that claim).
        """
        t0 = time.perf_counter()
        logp = [math.log(max(float(p.max()), 1e-12)) for p in main_probs]
        rows: list = []  # Digits
        for i, d in enumerate(self.digits):
            cuts = d.offers_cut and (everything or logp[i] < -SPLIT_COST)
            join = d.offers_join and i + 1 < len(self.digits) and (everything or logp[i] + logp[i + 1] < -JOIN_COST)
            if not (cuts or join):
                continue
            d.expand(cuts=cuts, join=join)
            for pieces in d.alternatives if cuts else []:
                self.halves.setdefault(i, []).append(self.n_main + len(rows))
                rows += pieces
            if join and d.merged_with_next is not None:
                self.joins[i] = self.n_main + len(rows)
                rows.append(d.merged_with_next)
        self.ms += (time.perf_counter() - t0) * 1000
        if not rows:
            return None
        self.images += [r.image for r in rows]
        self.boxes += [r.box for r in rows]
        return np.stack([r.array for r in rows])


def _best_reading(
    read: list[DigitPrediction], prep: _Prepared, logp_rows: list[float] | None = None
) -> list[DigitPrediction]:
    """The most probable reading of a row of segments, left to right.

    Each segment is read whole, or (when wide) as two touching digits cut at one of the offered
    places; two neighbours may be read as one digit written in two strokes. A reading scores
    the sum of its digits' log-probabilities, less SPLIT_COST or JOIN_COST for every split or join, so
    the segmentation is changed only when the model is clearly surer of the result.
    ``logp_rows``: each row's log-probability to score with (default: its ``probability``); the
    predictor passes the model's own, uncalibrated ones, the scale the two costs were tuned on.
    """
    if logp_rows is None:
        logp_rows = [math.log(max(it.probability, 1e-12)) for it in read]

    def logp(*rows: int) -> float:
        return sum(logp_rows[r] for r in rows)

    best: list[tuple[float, list[int]]] = [(0.0, [])]  # best[i]: the rows read for the first i segments
    for i in range(prep.n_main):
        options = [(logp(i), [i])]  # row i is segment i, read whole
        options += [(logp(r, r + 1) - SPLIT_COST, [r, r + 1]) for r in prep.halves.get(i, [])]
        score, rows = max(options, key=lambda o: o[0])
        candidate = (best[i][0] + score, best[i][1] + rows)
        if i >= 1 and (i - 1) in prep.joins:  # segments i-1 and i as one digit
            joined = prep.joins[i - 1]
            candidate = max(
                candidate, (best[i - 1][0] + logp(joined) - JOIN_COST, best[i - 1][1] + [joined]), key=lambda c: c[0]
            )
        best.append(candidate)
    return [read[r] for r in best[-1][1]]
