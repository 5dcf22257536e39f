"""Mask-aware temporal pooling: frame-level features (B, C, T) -> one utterance vector."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

_VARIANCE_FLOOR = 1e-5


def lengths_to_mask(lengths: torch.Tensor, max_len: int, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """`(batch,)` lengths -> `(batch, max_len)` mask of the real frames: boolean, or 1/0 in `dtype` (to multiply
    activations with)."""
    mask = torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]
    return mask if dtype is None else mask.to(dtype)


def has_padding(lengths: torch.Tensor, time: int) -> bool:
    """Whether any of the `(batch,)` lengths is shorter than `time` frames, i.e. whether masks are needed.

    Under `torch.compile` this answers True without looking: a data-dependent branch would break the graph, and
    the compiler fuses the (then all-ones) mask multiplications into neighbouring kernels anyway.
    """
    if torch.compiler.is_compiling():
        return True
    return not bool((lengths >= time).all())


def drop_full_mask(mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """None for a `(B, T)` mask without a padded frame (the unmasked computation is the same, and cheaper)."""
    if mask is None or torch.compiler.is_compiling() or not bool(mask.all()):
        return mask
    return None


def masked_mean_std(
    x: torch.Tensor, mask: Optional[torch.Tensor], weights: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean and standard deviation over time of `x` `(B, C, T)`, ignoring padded frames.

    Args:
        mask: `(B, T)` bool, or None when no frame is padded.
        weights: `(B, C or 1, T)` non-negative weights summing to 1 over the real frames (attention), or None
            for a uniform average over the real frames.

    Returns:
        mean and std, each `(B, C)`.
    """
    if weights is None:
        if mask is None:
            # Two passes (mean, then squared deviations) beat torch.var_mean's Welford loop several times over.
            mean = x.mean(dim=-1)
            variance = (x - mean[..., None]).square().mean(dim=-1)
            return mean, variance.clamp_min(_VARIANCE_FLOOR).sqrt()
        m = mask[:, None, :].to(x.dtype)
        weights = m / m.sum(dim=-1, keepdim=True).clamp_min(1.0)
    mean = (x * weights).sum(dim=-1)
    variance = (weights * (x - mean[..., None]).pow(2)).sum(dim=-1)
    return mean, variance.clamp_min(_VARIANCE_FLOOR).sqrt()


class StatisticsPooling(nn.Module):
    """Mean and standard deviation over the real frames: `(B, C, T)` -> `(B, 2C)`."""

    def __init__(self, channels: int):
        super().__init__()
        self.output_size = 2 * channels

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return torch.cat(masked_mean_std(x, drop_full_mask(mask)), dim=-1)


class AttentiveStatisticsPooling(nn.Module):
    """Attention-weighted mean and standard deviation, with the utterance's global context as attention input
    (ECAPA-TDNN): `(B, C, T)` -> `(B, 2C)`."""

    def __init__(self, channels: int, attention_channels: int = 128, global_context: bool = True):
        super().__init__()
        self.global_context = global_context
        in_channels = 3 * channels if global_context else channels
        self.attention = nn.Sequential(
            nn.Conv1d(in_channels, attention_channels, kernel_size=1),
            nn.ReLU(),
            nn.BatchNorm1d(attention_channels),
            nn.Tanh(),
            nn.Conv1d(attention_channels, channels, kernel_size=1),
        )
        self.output_size = 2 * channels

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        first, relu, norm, tanh, last = self.attention
        batch, channels, time = x.shape
        mask = drop_full_mask(mask)
        # The 1x1 convolutions run time-major, as one matrix product over all frames; ECAPA-TDNN hands over a
        # transposed view of a time-major tensor, so `frames` is then contiguous.
        frames = x.transpose(1, 2)
        weight = first.weight.squeeze(-1)
        if self.global_context:
            # The first conv sees [x; mean; std] with mean and std constant over time: rather than stacking a
            # (B, 3C, T) input, apply its x-columns to the frames and add the context columns' output once per
            # utterance (the same sum, three times fewer multiplications).
            mean, std = masked_mean_std(x, mask)
            context = F.linear(torch.cat([mean, std], dim=-1), weight[:, channels:], first.bias)
            hidden = F.linear(frames, weight[:, :channels]) + context[:, None, :]
        else:
            hidden = F.linear(frames, weight, first.bias)
        hidden = tanh(norm(relu(hidden).reshape(batch * time, -1)))
        scores = F.linear(hidden, last.weight.squeeze(-1), last.bias).view(batch, time, channels)
        if mask is not None:
            scores = scores.masked_fill(~mask[..., None], torch.finfo(scores.dtype).min)
        # Softmax over time on the time-major scores (a softmax over a strided dimension is much slower).
        weights = torch.softmax(scores, dim=1).transpose(1, 2)
        return torch.cat(masked_mean_std(x, mask, weights), dim=-1)


def build_pooling(kind: str, channels: int, attention_channels: int) -> nn.Module:
    if kind == "statistics":
        return StatisticsPooling(channels)
    if kind == "attentive_statistics":
        return AttentiveStatisticsPooling(channels, attention_channels)
    raise ValueError(f"unknown pooling {kind!r}")
