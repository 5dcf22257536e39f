"""ECAPA-TDNN (Desplanques et al., 2020): SE-Res2Net TDNN blocks with multi-layer feature aggregation.

Each block re-zeroes the frames beyond an utterance's length so that dilated convolutions never read
padding, and the squeeze-excitation averages only real frames.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from .pooling import lengths_to_mask, masked_mean_std


class TDNNBlock(nn.Module):
    """Conv1d -> ReLU -> BatchNorm, then padding set back to zero."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(
            in_channels, out_channels, kernel_size, dilation=dilation, padding=dilation * (kernel_size - 1) // 2
        )
        self.relu = nn.ReLU(inplace=True)
        self.norm = nn.BatchNorm1d(out_channels)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        x = self.norm(self.relu(self.conv(x)))
        return x if mask is None else x * mask[:, None, :].to(x.dtype)


class Res2Conv(nn.Module):
    """Res2Net hierarchy: split channels into `scale` groups, each group's conv also sees the previous output."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, scale: int):
        super().__init__()
        if channels % scale:
            raise ValueError(f"ECAPA channels ({channels}) must be divisible by the Res2Net scale ({scale})")
        width = channels // scale
        self.convs = nn.ModuleList(TDNNBlock(width, width, kernel_size, dilation) for _ in range(scale - 1))
        self.scale = scale

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        chunks = torch.chunk(x, self.scale, dim=1)
        outputs = [chunks[0]]
        previous = None
        for conv, chunk in zip(self.convs, chunks[1:]):
            previous = conv(chunk if previous is None else chunk + previous, mask)
            outputs.append(previous)
        return torch.cat(outputs, dim=1)


class SqueezeExcitation(nn.Module):
    """Channel gates from the utterance mean (real frames only)."""

    def __init__(self, channels: int, bottleneck: int):
        super().__init__()
        self.gate = nn.Sequential(
            nn.Linear(channels, bottleneck), nn.ReLU(inplace=True), nn.Linear(bottleneck, channels), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        mean, _ = masked_mean_std(x, mask)
        return x * self.gate(mean)[..., None]


class SERes2Block(nn.Module):
    def __init__(self, channels: int, kernel_size: int, dilation: int, scale: int, se_channels: int):
        super().__init__()
        self.reduce = TDNNBlock(channels, channels)
        self.res2 = Res2Conv(channels, kernel_size, dilation, scale)
        self.expand = TDNNBlock(channels, channels)
        self.se = SqueezeExcitation(channels, se_channels)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        out = self.expand(self.res2(self.reduce(x, mask), mask), mask)
        return x + self.se(out, mask)


class ECAPATDNN(nn.Module):
    """ECAPA-TDNN backbone: `(B, T, F)` features -> `(B, mfa_channels, T)` frame-level features."""

    def __init__(
        self,
        num_mel_bins: int = 80,
        channels: int = 512,
        scale: int = 8,
        se_channels: int = 128,
        mfa_channels: int = 1536,
        dilations: Tuple[int, ...] = (2, 3, 4),
    ):
        super().__init__()
        self.stem = TDNNBlock(num_mel_bins, channels, kernel_size=5)
        self.blocks = nn.ModuleList(SERes2Block(channels, 3, d, scale, se_channels) for d in dilations)
        self.aggregation = TDNNBlock(channels * len(dilations), mfa_channels)
        self.output_channels = mfa_channels

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = features.transpose(1, 2)
        mask = lengths_to_mask(lengths, x.shape[-1])
        x = self.stem(x * mask[:, None, :].to(x.dtype), mask)
        outputs = []
        for block in self.blocks:
            x = block(x, mask)
            outputs.append(x)
        return self.aggregation(torch.cat(outputs, dim=1), mask), lengths
