"""Embedding whitening estimated without labels on the training pool, stored in the exported model.

DINO's teacher embeddings are far from isotropic: a few directions carry most of the variance of an unlabeled
pool, and in a pool of many sources those directions are channel, level and language as much as voice. PCA
whitening, `(x - mean) @ V diag(1 / sqrt(lambda))`, estimated on the pool's embeddings, lets cosine scoring weigh
every direction alike. The effect is measured in benchmarks/RESULTS.md (section "Real voices").

With pseudo-labels (a pseudo-label round's clusters) the whitened space can be whitened once more, within the
classes: within-class covariance normalisation (WCCN, Hatch, Kajarekar and Stolcke, ICSLP 2006) scales down
the directions along which utterances of one cluster differ (channel, text, augmentation) against those along
which clusters differ. The clusters cover a part of the pool and few of its voices, so their covariance is
shrunk towards its average variance before it is inverted.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch

from ..configuration_dino_speech import EMBEDDING_LAYERS

__all__ = [
    "apply_whitening",
    "fit_whitening",
    "fit_within_class_whitening",
    "whiten_on_pool",
    "whiten_within_classes",
    "whitening_removed",
]


@contextmanager
def whitening_removed(model) -> Iterator[Dict[str, object]]:
    """Inside, `model` (a `DinoSpeechModel`) gives its raw layer outputs; after, its stored whitenings are back.
    Yields them, `{layer: EmbeddingWhitening}` for each layer that had one."""
    stored = {layer: model.layer_whitening(layer) for layer in EMBEDDING_LAYERS}
    stored = {layer: whitening for layer, whitening in stored.items() if whitening is not None}
    model.remove_whitening()
    try:
        yield stored
    finally:
        for layer, whitening in stored.items():
            model.set_embedding_whitening(whitening.mean, whitening.transform, layer=layer)


@torch.no_grad()
def apply_whitening(whitening, embeddings: np.ndarray) -> np.ndarray:
    """`(N, D)` embeddings at hand, without any whitening, through a model's stored `EmbeddingWhitening`."""
    return whitening(torch.as_tensor(embeddings, device=whitening.mean.device)).cpu().numpy()


def fit_whitening(
    embeddings: np.ndarray, eigenvalue_floor: float = 1e-4, power: float = 0.5
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean `(D,)` and PCA-whitening transform `(D, D)` of `(N, D)` pool embeddings.

    Args:
        eigenvalue_floor: eigenvalues below this fraction of the largest are raised to it, so directions the pool
            hardly uses are not blown up into noise.
        power: the transform is `V diag(lambda ** -power)`: 0.5 whitens fully, less evens the directions out only
            part of the way (0 centres and rotates), which leaves the directions the pool uses most a larger share.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"whitening needs (N >= 2, D) embeddings, got shape {x.shape}")
    mean = x.mean(axis=0)
    transform = _inverse_power(np.cov(x - mean, rowvar=False), eigenvalue_floor, power)
    return torch.from_numpy(mean.astype(np.float32)), torch.from_numpy(transform.astype(np.float32))


def _inverse_power(covariance: np.ndarray, eigenvalue_floor: float, power: float = 0.5) -> np.ndarray:
    """`V diag(lambda ** -power)` of a covariance (0.5: its inverse square root), its eigenvalues raised to
    `eigenvalue_floor` times the largest."""
    values, vectors = np.linalg.eigh(covariance)
    values = np.maximum(values, eigenvalue_floor * values.max())
    return vectors / values[None, :] ** power


def fit_within_class_whitening(
    embeddings: np.ndarray, labels: np.ndarray, shrinkage: float = 0.1, eigenvalue_floor: float = 1e-4
) -> torch.Tensor:
    """WCCN transform `(D, D)` of `(N, D)` embeddings (already whitened) with class `labels` `(N,)`.

    `x @ W` has the within-class covariance `(1 - shrinkage) * S_w + shrinkage * mean(diag(S_w)) * I` turned
    into the identity, where `S_w` is the average covariance of the classes around their means.

    Args:
        labels: int class of each row; rows labelled -1 (left out by the clustering) are ignored.
        shrinkage: in [0, 1]; 0 trusts the clusters' covariance as it is, 1 only rescales.
        eigenvalue_floor, power: as in `fit_whitening`.

    Raises:
        ValueError: shapes that do not match, a shrinkage outside [0, 1], or fewer than two classes.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64, copy=False)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"within-class whitening needs (N, D) embeddings and (N,) labels, got {x.shape} and {y.shape}")
    if not 0.0 <= shrinkage <= 1.0:
        raise ValueError(f"within-class whitening: shrinkage must be in [0, 1], got {shrinkage}")
    x, y = x[y >= 0], y[y >= 0]
    classes, y = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"within-class whitening needs at least two classes, got {len(classes)}")
    means = np.zeros((len(classes), x.shape[1]))
    np.add.at(means, y, x)
    means /= np.bincount(y)[:, None]
    centred = x - means[y]
    within = centred.T @ centred / len(x)
    within = (1.0 - shrinkage) * within + shrinkage * np.trace(within) / x.shape[1] * np.eye(x.shape[1])
    return torch.from_numpy(_inverse_power(within, eigenvalue_floor).astype(np.float32))


def whiten_on_pool(
    model,
    feature_extractor,
    paths: Sequence[str],
    durations: Optional[Sequence[float]] = None,
    utterances: int = 2000,
    seed: int = 0,
    batch_size: int = 32,
    embeddings: Optional[np.ndarray] = None,
    eigenvalue_floor: float = 1e-4,
    power: float = 0.5,
) -> dict:
    """Embed a seeded random sample of the pool with `model` (a `DinoSpeechModel`, any whitening it has removed
    first) and store the whitening of those embeddings in it (`DinoSpeechModel.set_embedding_whitening`), one
    for each layer it whitens (`DinoSpeechModel.whitened_layers`).

    Args:
        embeddings: `(len(paths), D)`, `model`'s embeddings of every file of `paths` without any whitening, when
            they are at hand (a pseudo-label round that trains nothing has them): the sample is taken from them
            instead of embedded again, and the files are not screened again.
        eigenvalue_floor, power: as in `fit_whitening`.

    Returns:
        a summary for the training record: the number of utterances and the pool's effective rank before
        whitening.
    """
    from ..data.corpora import report_problems, screen_audio
    from ..inference import embed_files
    from .monitor import effective_rank

    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.permutation(len(paths))[: min(utterances, len(paths))])
    model.remove_whitening()
    if embeddings is not None:
        if embeddings.shape[0] != len(paths):
            raise ValueError(f"whitening: {embeddings.shape[0]} embeddings given for {len(paths)} files")
        sample = np.asarray(embeddings)[chosen]
    else:
        # a pool that training read with on_error=skip may hold files that cannot be embedded: leave them out
        window = float(getattr(feature_extractor, "frame_length_ms", 25.0)) / 1000.0
        problems = screen_audio([paths[i] for i in chosen], feature_extractor.sampling_rate, min_seconds=window)
        report_problems([f"{paths[i]}: {p}" for i, p in zip(chosen, problems) if p], "skip", "whitening sample")
        chosen = chosen[[p is None for p in problems]]
        sample = embed_files(
            model,
            feature_extractor,
            [paths[i] for i in chosen],
            durations=None if durations is None else [durations[i] for i in chosen],
            batch_size=batch_size,
            progress=False,
        )
    layers = model.layer_outputs(torch.as_tensor(sample))
    for layer, outputs in layers.items():
        mean, transform = fit_whitening(outputs.cpu().numpy(), eigenvalue_floor, power)
        model.set_embedding_whitening(mean, transform, layer=layer)
    return {
        "whitening_utterances": int(len(chosen)),
        "pool_effective_rank": round(effective_rank(layers["embedding"].cpu().float()), 2),
    }


def whiten_within_classes(
    model,
    feature_extractor,
    paths: Sequence[str],
    labels: Sequence[int],
    shrinkage: float,
    batch_size: int = 32,
    embeddings: Optional[np.ndarray] = None,
) -> dict:
    """Embed `paths` with `model` (a `DinoSpeechModel` with its PCA whitening, `whiten_on_pool`) and add to that
    whitening the within-class whitening of those embeddings under `labels` (`fit_within_class_whitening`).

    Args:
        embeddings: `(len(paths), D)`, `model`'s embeddings of `paths` without any whitening, when they are at
            hand: they are whitened with the model's PCA whitening instead of embedded again. Each layer the
            model whitens (`DinoSpeechModel.whitened_layers`) gets its own within-class whitening.

    Returns:
        a summary for the training record: the shrinkage, the number of utterances and of classes.
    """
    from ..inference import embed_files

    if model.whitening is None:
        raise ValueError(
            "within-class whitening is fitted in the PCA-whitened space: whiten the model on the pool first"
        )
    if embeddings is None:
        with whitening_removed(model):
            embeddings = embed_files(model, feature_extractor, list(paths), batch_size=batch_size, progress=False)
    elif embeddings.shape[0] != len(paths):
        raise ValueError(f"within-class whitening: {embeddings.shape[0]} embeddings given for {len(paths)} files")
    for layer, outputs in model.layer_outputs(torch.as_tensor(embeddings)).items():
        whitening = model.layer_whitening(layer)
        if whitening is None:
            raise ValueError(f"within-class whitening of the {layer} layer needs its PCA whitening first")
        within = fit_within_class_whitening(apply_whitening(whitening, outputs), np.asarray(labels), shrinkage)
        model.set_embedding_whitening(
            whitening.mean.detach().cpu(), whitening.transform.detach().cpu() @ within, layer=layer
        )
    return {
        "within_class_whitening": shrinkage,
        "within_class_utterances": int(len(paths)),
        "within_class_classes": int(len(set(int(label) for label in labels if int(label) >= 0))),
    }
