"""Detection error tradeoff of a verification system: EER and minimum detection cost (minDCF).

A trial is accepted when its score is ``>= threshold``. The operating points are all thresholds over the
*distinct* score values (plus ``+inf``, which rejects everything), so tied scores move together and the
result does not depend on how a sort orders them.

- EER: where the piecewise-linear curve through the operating points crosses ``P_miss == P_fa``. Linear
  interpolation between two adjacent operating points is the error of randomly choosing between their
  thresholds, so the EER is an achievable error rate (and for a block of tied scores it is the expected
  error under random tie-breaking). It equals the classic ``brentq`` root of the interpolated ROC curve.
- minDCF: ``min_t (C_miss * P_miss(t) * p_target + C_fa * P_fa(t) * (1 - p_target))`` over the operating
  points, divided by ``min(C_miss * p_target, C_fa * (1 - p_target))`` (the cost of the best system that
  ignores its input), as in the NIST SRE and VoxSRC evaluations.

Speed: the curve needs the trials in score order with their labels. ``np.argsort`` is several times slower
than ``np.sort`` (numpy's SIMD sorts; ``benchmarks/RESULTS.md``, section 5), so the label is packed into the
lowest bit of an order-preserving 64-bit integer key and one value sort does the work. That is exact whenever
that bit carries no score information: always for scores that were float32 (or float16, or small integers),
which need a single sort. Genuine float64 scores get a second value sort of the exact keys to prove that no two
distinct scores share everything but their last bit; if two do, an argsort takes over. Large temporaries are
reused, because on a loaded machine page faults on fresh memory cost as much as the sort.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = [
    "DetectionCurve",
    "OperatingPoint",
    "detection_curve",
    "equal_error_rate",
    "minimum_detection_cost",
]

_SIGN = np.uint64(1 << 63)
_ONE = np.uint64(1)
_SIGN_SHIFT = np.uint64(63)


class OperatingPoint(NamedTuple):
    """A metric value and the decision threshold (accept when ``score >= threshold``) that reaches it."""

    value: float
    threshold: float


@dataclass(frozen=True)
class DetectionCurve:
    """All operating points of a detector, in increasing threshold order.

    Attributes:
        thresholds: (M + 1,) the M distinct scores ascending, then ``+inf``; a trial is accepted when its
            score is ``>= threshold``.
        p_miss: (M + 1,) fraction of target trials rejected; non-decreasing from 0 to 1.
        p_fa: (M + 1,) fraction of non-target trials accepted; non-increasing from 1 to 0.
        num_targets, num_nontargets: trial counts.
    """

    thresholds: np.ndarray
    p_miss: np.ndarray
    p_fa: np.ndarray
    num_targets: int
    num_nontargets: int

    def equal_error_rate(self) -> OperatingPoint:
        """EER (a fraction, not %) and the first threshold at which ``P_miss >= P_fa``."""
        p_miss, p_fa = self.p_miss, self.p_fa
        # P_miss - P_fa is non-decreasing (-1 first, +1 last): bisect for its first index >= 0 instead
        # of materialising it.
        lo, hi = 0, p_miss.shape[0] - 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if p_miss[mid] >= p_fa[mid]:
                hi = mid
            else:
                lo = mid
        m1, f1 = float(p_miss[hi]), float(p_fa[hi])
        if m1 == f1:
            return OperatingPoint(m1, float(self.thresholds[hi]))
        m0, f0 = float(p_miss[lo]), float(p_fa[lo])
        # Both rates move linearly along the segment; solve m0 + a (m1 - m0) = f0 - a (f0 - f1).
        a = (f0 - m0) / ((m1 - m0) + (f0 - f1))
        return OperatingPoint(m0 + a * (m1 - m0), float(self.thresholds[hi]))

    def minimum_detection_cost(self, p_target: float = 0.01, c_miss: float = 1.0, c_fa: float = 1.0) -> OperatingPoint:
        """Normalised minDCF at prior ``p_target`` and the threshold that reaches it."""
        if not 0.0 < p_target < 1.0:
            raise ValueError(f"p_target must be in (0, 1), got {p_target}")
        if c_miss <= 0 or c_fa <= 0:
            raise ValueError(f"c_miss and c_fa must be positive, got c_miss={c_miss}, c_fa={c_fa}")
        weight_miss, weight_fa = c_miss * p_target, c_fa * (1.0 - p_target)
        cost = self.p_miss * (weight_miss / weight_fa)  # cost / weight_fa: one temporary instead of three
        cost += self.p_fa
        best = int(np.argmin(cost))
        value = weight_miss * float(self.p_miss[best]) + weight_fa * float(self.p_fa[best])
        return OperatingPoint(value / min(weight_miss, weight_fa), float(self.thresholds[best]))


def _validate(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Returns a private float64 copy of the scores (callers may overwrite it) and a bool target mask."""
    scores_in = np.asarray(scores)
    labels = np.asarray(labels)
    if scores_in.ndim != 1 or labels.ndim != 1 or scores_in.shape != labels.shape:
        raise ValueError(
            f"scores and labels must be 1-D of equal length, got shapes {scores_in.shape} and {labels.shape}"
        )
    if not (np.issubdtype(scores_in.dtype, np.floating) or np.issubdtype(scores_in.dtype, np.integer)):
        raise ValueError(f"scores must be real numbers, got dtype {scores_in.dtype}")
    # float64 holds every float32/float16 value exactly.
    scores = np.array(scores_in, dtype=np.float64)
    scores += 0.0  # -0.0 -> +0.0, so equal scores get one key
    if np.isnan(scores.sum()) and np.isnan(scores).any():  # the sum is NaN-free for almost every list
        raise ValueError(f"scores contain NaN, first at trial index {int(np.flatnonzero(np.isnan(scores))[0])}")
    if labels.dtype != np.bool_:
        if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
            raise ValueError(f"labels must be 0/1 or bool, got dtype {labels.dtype}")
        valid = labels.size == 0 or (labels.min() >= 0 and labels.max() <= 1)
        if np.issubdtype(labels.dtype, np.floating):
            valid = valid and bool(((labels == 0) | (labels == 1)).all())
        if not valid:
            i = int(np.flatnonzero((labels != 0) & (labels != 1))[0])
            raise ValueError(f"labels must be 0 (non-target) or 1 (target); trial {i} has label {labels[i].item()!r}")
        labels = labels != 0
    return scores, labels


def _lowest_bytes(packed: np.ndarray) -> np.ndarray:
    """(N,) uint8 strided view of the least significant byte of each uint64."""
    offset = 0 if sys.byteorder == "little" else 7
    return packed.view(np.uint8)[offset::8]


def _sorted_groups(scores: np.ndarray, is_target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort trials by score and group equal scores. Overwrites ``scores``.

    Fresh large arrays are expensive (page faults cost more than the arithmetic), so buffers are reused.

    Returns:
        thresholds: (M + 1,) float64, the M distinct scores ascending, then ``+inf``.
        last: (M,) int64 index (in sorted order) of the last trial of each group.
        targets_at_or_below: (M,) int64 number of target trials scoring ``<= thresholds[:M]``.
    """
    n = scores.shape[0]
    bits = scores.view(np.uint64)
    key = np.bitwise_and(bits, _ONE)
    # Scores promoted from float32/float16/int never use the lowest mantissa bit; then the key's lowest
    # bit is a constant per sign (0 for positive, 1 for negative) and can carry the label instead.
    lossy = bool(key.any())
    # Order-preserving key: negative floats flip every bit, positive ones set the sign bit.
    np.right_shift(scores.view(np.int64), 63, out=key.view(np.int64))
    key |= _SIGN
    key ^= bits
    packed = np.bitwise_and(key, ~_ONE, out=bits) if lossy else key  # the scores are no longer needed
    if not lossy:
        packed &= ~_ONE
    packed |= is_target.view(np.uint8)
    packed.sort()
    sorted_labels = _lowest_bytes(packed) & 1
    packed &= ~_ONE
    sorted_keys = packed
    if lossy:
        coarse_groups = np.count_nonzero(packed[1:] != packed[:-1])
        sorted_keys = np.sort(key)
        exact_groups = np.count_nonzero(sorted_keys[1:] != sorted_keys[:-1])
        # Exact groups refine the coarse ones, so equal counts mean the same partition and the packed
        # labels line up with the exact groups. Otherwise two distinct scores differ only in their last
        # bit, and an argsort pays for exactness.
        if coarse_groups != exact_groups:
            order = np.argsort(key)
            sorted_keys = key[order]
            sorted_labels = is_target[order].view(np.uint8)
    boundary = np.empty(n, dtype=bool)
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=boundary[:-1])
    boundary[-1] = True
    last = np.flatnonzero(boundary)
    del boundary
    group_keys = sorted_keys[last]
    if not lossy:  # put back the lowest key bit cleared for the label: 1 for negative scores
        negative = group_keys >> _SIGN_SHIFT
        negative ^= _ONE
        group_keys |= negative
        del negative
    thresholds = np.empty(last.shape[0] + 1)
    bits = thresholds[:-1].view(np.int64)  # decode the keys straight into the output
    np.right_shift(group_keys.view(np.int64), 63, out=bits)
    np.invert(bits, out=bits)
    bits = bits.view(np.uint64)
    bits |= _SIGN
    bits ^= group_keys
    thresholds[-1] = np.inf
    del group_keys
    cumulative = np.cumsum(sorted_labels, dtype=np.int64, out=sorted_keys.view(np.int64))
    return thresholds, last, cumulative[last]


def detection_curve(scores: np.ndarray, labels: np.ndarray) -> DetectionCurve:
    """All operating points of a verification trial list.

    Args:
        scores: (N,) float or int; higher means "more likely the same speaker". NaN is an error.
        labels: (N,) bool or 0/1; 1/True marks a target (same-speaker) trial.
    """
    scores, is_target = _validate(scores, labels)
    num_targets = int(np.count_nonzero(is_target))
    num_nontargets = is_target.shape[0] - num_targets
    if num_targets == 0 or num_nontargets == 0:
        raise ValueError(
            f"need both target and non-target trials, got {num_targets} targets and {num_nontargets} non-targets"
        )
    thresholds, last, counts = _sorted_groups(scores, is_target)
    # Point 0 accepts everything; point j + 1 accepts the scores above thresholds[j].
    p_miss = np.empty_like(thresholds)
    p_miss[0] = 0.0
    np.divide(counts, num_targets, out=p_miss[1:])
    # Non-targets accepted above group j: N_non - (last + 1 - targets_at_or_below), computed in place.
    counts -= last
    counts += num_nontargets - 1
    p_fa = np.empty_like(thresholds)
    p_fa[0] = 1.0
    np.divide(counts, num_nontargets, out=p_fa[1:])
    return DetectionCurve(thresholds, p_miss, p_fa, num_targets, num_nontargets)


def equal_error_rate(scores: np.ndarray, labels: np.ndarray) -> OperatingPoint:
    """EER (fraction) of a trial list; see `DetectionCurve.equal_error_rate`."""
    return detection_curve(scores, labels).equal_error_rate()


def minimum_detection_cost(
    scores: np.ndarray, labels: np.ndarray, p_target: float = 0.01, c_miss: float = 1.0, c_fa: float = 1.0
) -> OperatingPoint:
    """Normalised minDCF of a trial list; see `DetectionCurve.minimum_detection_cost`."""
    return detection_curve(scores, labels).minimum_detection_cost(p_target, c_miss, c_fa)
