"""Embedding whitening estimated without labels on the training pool, stored in the exported model.

DINO's teacher embeddings are far from isotropic: a few directions carry most of the variance of an unlabeled
pool, and in a pool of many sources those directions are channel, level and language as much as voice. PCA
whitening, `(x - mean) @ V diag(1 / sqrt(lambda))`, estimated on the pool's embeddings, lets cosine scoring weigh
every direction alike. The effect is measured in benchmarks/RESULTS.md (section "Real voices").
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = ["fit_whitening", "whiten_on_pool"]


def fit_whitening(embeddings: np.ndarray, eigenvalue_floor: float = 1e-4) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean `(D,)` and PCA-whitening transform `(D, D)` of `(N, D)` pool embeddings.

    Args:
        eigenvalue_floor: eigenvalues below this fraction of the largest are raised to it, so directions the pool
            hardly uses are not blown up into noise.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"whitening needs (N >= 2, D) embeddings, got shape {x.shape}")
    mean = x.mean(axis=0)
    covariance = np.cov(x - mean, rowvar=False)
    values, vectors = np.linalg.eigh(covariance)
    values = np.maximum(values, eigenvalue_floor * values.max())
    transform = vectors / np.sqrt(values)[None, :]
    return torch.from_numpy(mean.astype(np.float32)), torch.from_numpy(transform.astype(np.float32))


def whiten_on_pool(
    model,
    feature_extractor,
    paths: Sequence[str],
    durations: Optional[Sequence[float]] = None,
    utterances: int = 2000,
    seed: int = 0,
    batch_size: int = 32,
) -> dict:
    """Embed a seeded random sample of the pool with `model` (a `DinoSpeechModel`, any whitening it has removed
    first) and store the whitening of those embeddings in it (`DinoSpeechModel.set_embedding_whitening`).

    Returns:
        a summary for the training record: the number of utterances and the pool's effective rank before
        whitening.
    """
    from ..data.corpora import report_problems, screen_audio
    from ..inference import embed_files
    from .monitor import effective_rank

    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.permutation(len(paths))[: min(utterances, len(paths))])
    # a pool that training read with on_error=skip may hold files that cannot be embedded: leave them out
    window = float(getattr(feature_extractor, "frame_length_ms", 25.0)) / 1000.0
    problems = screen_audio([paths[i] for i in chosen], feature_extractor.sampling_rate, min_seconds=window)
    report_problems([f"{paths[i]}: {p}" for i, p in zip(chosen, problems) if p], "skip", "whitening sample")
    chosen = chosen[[p is None for p in problems]]
    model.set_embedding_whitening(None)
    embeddings = embed_files(
        model,
        feature_extractor,
        [paths[i] for i in chosen],
        durations=None if durations is None else [durations[i] for i in chosen],
        batch_size=batch_size,
        progress=False,
    )
    mean, transform = fit_whitening(embeddings)
    model.set_embedding_whitening(mean, transform)
    return {
        "whitening_utterances": int(len(chosen)),
        "pool_effective_rank": round(effective_rank(torch.from_numpy(embeddings)), 2),
    }
