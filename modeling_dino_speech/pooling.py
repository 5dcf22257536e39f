"""Mask-aware temporal pooling: frame-level features (B, C, T) -> one utterance vector."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

_VARIANCE_FLOOR = 1e-5


def lengths_to_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """`(batch,)` lengths -> `(batch, max_len)` boolean mask, True on real frames."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


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
            weights = x.new_full((x.shape[0], 1, x.shape[-1]), 1.0 / x.shape[-1])
        else:
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
        return torch.cat(masked_mean_std(x, mask), dim=-1)


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
        inputs = x
        if self.global_context:
            mean, std = masked_mean_std(x, mask)
            time = x.shape[-1]
            inputs = torch.cat([x, mean[..., None].expand(-1, -1, time), std[..., None].expand(-1, -1, time)], dim=1)
        scores = self.attention(inputs)
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, :], torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1)
        return torch.cat(masked_mean_std(x, mask, weights), dim=-1)


def build_pooling(kind: str, channels: int, attention_channels: int) -> nn.Module:
    if kind == "statistics":
        return StatisticsPooling(channels)
    if kind == "attentive_statistics":
        return AttentiveStatisticsPooling(channels, attention_channels)
    raise ValueError(f"unknown pooling {kind!r}")
