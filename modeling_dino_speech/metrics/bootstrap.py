"""Confidence intervals of an EER by the bootstrap, over trials or over speakers.

A trial list's EER moves for two reasons: which trials were drawn (the trial bootstrap resamples trials), and
which speakers happen to be in the list (the speaker bootstrap resamples speakers: a drawn speaker's target
trials count as many times as it was drawn, a non-target pair of speakers (s, t) as often as s was drawn times
t was drawn). With a few dozen speakers the second is much the wider, and it is the one that says how another
set of similar speakers would score.

The scores are sorted once; each replicate only reweights them, so a thousand replicates of a quarter of a
million trials take seconds.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

__all__ = ["eer_interval", "weighted_eer"]


def weighted_eer(sorted_labels: np.ndarray, weights: np.ndarray) -> float:
    """EER (fraction) of trials already sorted by ascending score, each counted `weights` times.

    The operating points are the thresholds between consecutive scores (ties are not merged here: the
    bootstrap needs speed, and the point EER differs from the tie-exact one by at most one trial's weight).
    """
    target = np.where(sorted_labels == 1, weights, 0.0)
    nontarget = np.where(sorted_labels == 1, 0.0, weights)
    total_t, total_n = target.sum(), nontarget.sum()
    if total_t <= 0 or total_n <= 0:
        return float("nan")
    # Rejecting the k lowest-scored trials: misses = targets among them, false alarms = non-targets above.
    p_miss = np.concatenate([[0.0], np.cumsum(target)]) / total_t
    p_fa = 1.0 - np.concatenate([[0.0], np.cumsum(nontarget)]) / total_n
    k = int(np.searchsorted(p_miss - p_fa, 0.0))  # p_miss - p_fa rises from -1 to 1
    if k == 0:
        return float(p_fa[0])
    d0, d1 = p_miss[k - 1] - p_fa[k - 1], p_miss[k] - p_fa[k]
    a = d0 / (d0 - d1) if d1 != d0 else 0.0
    return float(p_miss[k - 1] + a * (p_miss[k] - p_miss[k - 1]))


def eer_interval(
    scores: np.ndarray,
    labels: np.ndarray,
    enroll_groups: Optional[Sequence] = None,
    test_groups: Optional[Sequence] = None,
    replicates: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Tuple[float, float]:
    """Percentile bootstrap interval of the EER, in percent.

    Args:
        scores, labels: (T,) trial scores and 1/0 labels.
        enroll_groups, test_groups: (T,) the speaker of each trial's two sides: resample speakers; None:
            resample trials.
        replicates: bootstrap draws; level: the interval's coverage.

    Returns:
        (low, high) EER in percent.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int8)
    order = np.argsort(scores, kind="stable")
    sorted_labels = labels[order]
    rng = np.random.default_rng(seed)
    values = []
    if enroll_groups is None:
        n = len(scores)
        for _ in range(replicates):
            weights = np.bincount(rng.integers(0, n, n), minlength=n)[order].astype(np.float64)
            values.append(weighted_eer(sorted_labels, weights))
    else:
        names, ids = np.unique(
            np.concatenate([np.asarray(enroll_groups), np.asarray(test_groups)]), return_inverse=True
        )
        enroll, test = ids[: len(scores)][order], ids[len(scores) :][order]
        for _ in range(replicates):
            counts = np.bincount(rng.integers(0, len(names), len(names)), minlength=len(names)).astype(np.float64)
            weights = np.where(sorted_labels == 1, counts[enroll], counts[enroll] * counts[test])
            values.append(weighted_eer(sorted_labels, weights))
    values = np.asarray([v for v in values if np.isfinite(v)])
    if values.size == 0:
        raise ValueError("no bootstrap replicate held both target and non-target trials")
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(100.0 * values, [tail, 100.0 - tail])
    return float(low), float(high)
