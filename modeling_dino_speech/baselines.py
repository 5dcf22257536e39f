"""Reference systems that need no training, to put a trained model's numbers in context.

- ``fbank-stats``: the mean and standard deviation over time of each log-mel filterbank bin (no mean
  normalisation), compared with cosine similarity. It captures the long-term spectrum (voice timbre, but
  also channel and language), so it is a strong baseline when those correlate with speaker identity.
  Two choices keep it from measuring the wrong thing: the mean spectrum has its average over bins removed
  (recording level is a log-domain offset, not a speaker trait), and each half is L2-normalised on its own,
  so the cosine of two embeddings is the average of the cosines of their spectral shapes and of their
  spectral variabilities (the raw halves differ in scale, and one would otherwise swamp the other).
- ``random-init:<checkpoint dir>``: the checkpoint's architecture with freshly initialised weights (seeded):
  what the network gives before any learning.

Both are selected by name wherever a model directory is accepted (``--model fbank-stats``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FBANK_STATS", "RANDOM_INIT_PREFIX", "BaselineOutput", "FbankStatistics", "fbank_statistics", "random_init"]

FBANK_STATS = "fbank-stats"
RANDOM_INIT_PREFIX = "random-init:"


@dataclass
class BaselineOutput:
    """``embeddings``: (batch, dim) utterance embeddings."""

    embeddings: torch.Tensor


class FbankStatistics(nn.Module):
    """Masked mean (level removed) and standard deviation over time of each filterbank bin, each half
    L2-normalised: (B, T, F) -> (B, 2F)."""

    def forward(
        self, input_features: torch.Tensor, attention_mask: Optional[torch.Tensor] = None, **kwargs
    ) -> BaselineOutput:
        if attention_mask is None:
            attention_mask = torch.ones(input_features.shape[:2], device=input_features.device)
        weights = attention_mask.to(input_features.dtype)[..., None]  # (B, T, 1)
        count = weights.sum(dim=1).clamp_min(1.0)  # (B, 1)
        mean = (input_features * weights).sum(dim=1) / count
        variance = (((input_features - mean[:, None]) ** 2) * weights).sum(dim=1) / count
        shape = mean - mean.mean(dim=-1, keepdim=True)
        std = variance.clamp_min(1e-10).sqrt()
        return BaselineOutput(torch.cat([F.normalize(shape, dim=-1), F.normalize(std, dim=-1)], dim=-1))


def fbank_statistics(num_mel_bins: int = 80) -> Tuple[FbankStatistics, object]:
    """The fbank-statistics system and its feature extractor (Kaldi fbank, no mean normalisation)."""
    from modeling_dino_speech import DinoSpeechFeatureExtractor

    return FbankStatistics().eval(), DinoSpeechFeatureExtractor(feature_size=num_mel_bins, mean_normalization=None)


def random_init(checkpoint: str | os.PathLike, seed: int = 0) -> Tuple[nn.Module, object]:
    """The architecture (config) and feature extractor of ``checkpoint``, with seeded random weights."""
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

    import modeling_dino_speech  # noqa: F401  (registers the Auto classes)

    # Never the checkpoint's own code: a model type this package does not know is an error here.
    config = AutoConfig.from_pretrained(checkpoint, trust_remote_code=False)
    torch.manual_seed(seed)
    model = AutoModel.from_config(config, trust_remote_code=False)
    return model.eval(), AutoFeatureExtractor.from_pretrained(checkpoint, trust_remote_code=False)
