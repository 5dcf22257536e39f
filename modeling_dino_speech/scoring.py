"""Trial scoring: cosine similarity of utterance embeddings, and adaptive score normalisation (AS-norm).

AS-norm (Matejka et al., Interspeech 2017; "adaptive symmetric normalisation") calibrates each trial score
against how its two sides score against a cohort of other speakers' utterances:

    s_norm = ((s - mean_e) / std_e + (s - mean_t) / std_t) / 2,

where ``mean_e``/``std_e`` are the mean and standard deviation of the ``top_k`` highest cosine scores of
the enrolment embedding against the cohort (likewise for the test side). Only the top of the cohort is
used: the impostors most similar to the utterance set the scale. The cohort needs no labels -- here it
is a set of utterance embeddings from the (unlabelled) training pool, disjoint from the test speakers.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["CohortStatistics", "as_norm", "cohort_statistics", "cosine_scores", "l2_normalize"]


def l2_normalize(embeddings: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """(N, D) -> (N, D) float32 rows of unit length (all-zero rows stay zero)."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {embeddings.shape}")
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.maximum(norms, eps)


def cosine_scores(embeddings: np.ndarray, enroll_index: np.ndarray, test_index: np.ndarray) -> np.ndarray:
    """Cosine similarity of each trial's two embeddings.

    Args:
        embeddings: (U, D) one row per distinct file (each file is embedded once).
        enroll_index, test_index: (T,) int rows of ``embeddings`` for each trial's two sides.

    Returns:
        (T,) float32 scores in [-1, 1].
    """
    unit = l2_normalize(embeddings)
    enroll_index = np.asarray(enroll_index)
    test_index = np.asarray(test_index)
    scores = np.empty(enroll_index.shape[0], dtype=np.float32)
    chunk = 1 << 16  # bounds the (chunk, D) gathers for million-trial lists
    for start in range(0, scores.shape[0], chunk):
        e = unit[enroll_index[start : start + chunk]]
        t = unit[test_index[start : start + chunk]]
        scores[start : start + chunk] = np.einsum("td,td->t", e, t)
    return scores


class CohortStatistics(NamedTuple):
    """Per-embedding statistics of its ``top_k`` best cohort scores: ``mean`` (U,), ``std`` (U,)."""

    mean: np.ndarray
    std: np.ndarray


def cohort_statistics(
    embeddings: np.ndarray, cohort: np.ndarray, top_k: int = 300, chunk_size: int = 1024
) -> CohortStatistics:
    """Mean and std of the ``top_k`` highest cosine scores of each embedding against the cohort.

    Args:
        embeddings: (U, D) the trial files' embeddings.
        cohort: (K, D) unlabelled cohort embeddings (e.g. a random subset of the training pool).
        top_k: how many of the best cohort scores to keep; clipped to K.
        chunk_size: rows scored at a time, bounding memory at ``chunk_size * K`` floats.
    """
    unit = l2_normalize(embeddings)
    cohort_unit = l2_normalize(cohort)
    if cohort_unit.shape[0] == 0:
        raise ValueError("AS-norm needs a non-empty cohort")
    if cohort_unit.shape[1] != unit.shape[1]:
        raise ValueError(f"cohort dimension {cohort_unit.shape[1]} != embedding dimension {unit.shape[1]}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    k = min(top_k, cohort_unit.shape[0])
    mean = np.empty(unit.shape[0], dtype=np.float32)
    std = np.empty(unit.shape[0], dtype=np.float32)
    for start in range(0, unit.shape[0], chunk_size):
        scores = unit[start : start + chunk_size] @ cohort_unit.T  # (chunk, K)
        top = np.partition(scores, scores.shape[1] - k, axis=1)[:, scores.shape[1] - k :]  # top k, unordered
        mean[start : start + chunk_size] = top.mean(axis=1)
        std[start : start + chunk_size] = top.std(axis=1)
    return CohortStatistics(mean, std)


def as_norm(
    scores: np.ndarray,
    enroll_index: np.ndarray,
    test_index: np.ndarray,
    statistics: CohortStatistics,
    eps: float = 1e-6,
) -> np.ndarray:
    """Adaptive symmetric score normalisation.

    Args:
        scores: (T,) raw trial scores.
        enroll_index, test_index: (T,) rows of ``statistics`` for each trial's two sides.
        statistics: from :func:`cohort_statistics` over the same rows as the indices.
        eps: floor for the standard deviations (a cohort of identical scores).

    Returns:
        (T,) float32 normalised scores.
    """
    mean, std = statistics
    std = np.maximum(std, eps)
    scores = np.asarray(scores, dtype=np.float32)
    enroll = (scores - mean[enroll_index]) / std[enroll_index]
    test = (scores - mean[test_index]) / std[test_index]
    return 0.5 * (enroll + test)
