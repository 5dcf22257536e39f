"""Embedding whitening estimated without labels on the training pool, stored in the exported model.

DINO's teacher embeddings are far from isotropic: a few directions carry most of the variance of an unlabeled
pool, and in a pool of many sources those directions are channel, level and language as much as voice. PCA
whitening, `(x - mean) @ V diag(1 / sqrt(lambda))`, estimated on the pool's embeddings, lets cosine scoring weigh
every direction alike. The effect is measured in benchmarks/RESULTS.md (section "Real voices").
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch

__all__ = ["fit_whitening"]


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
