"""ECAPA-TDNN (Desplanques et al., 2020): SE-Res2Net TDNN blocks with multi-layer feature aggregation.

Each block re-zeroes the frames beyond an utterance's length so that dilated convolutions never read
padding, and the squeeze-excitation averages only real frames. A batch without padding skips the masking
altogether (it would multiply by ones).

Frame-level tensors run time-major, `(B, T, C)`, inside the backbone: the 1x1 convolutions that carry most of
the compute are then a single matrix product over all frames, and BatchNorm sees `(B * T, C)` rows. The
parameters are the usual `nn.Conv1d` / `nn.BatchNorm1d` ones, so checkpoints are unaffected.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .pooling import has_padding, lengths_to_mask


def time_major_conv(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """`conv` applied to time-major `(B, T, C_in)` input -> `(B, T, C_out)` (stride 1, 'same' padding)."""
    weight = conv.weight
    kernel = weight.shape[-1]
    if kernel == 1:
        return F.linear(x, weight.squeeze(-1), conv.bias)
    # im2col: the k dilated taps of every frame side by side, then one matrix product.
    dilation, padding = conv.dilation[0], conv.padding[0]
    padded = F.pad(x, (0, 0, padding, padding))
    taps = padded.unfold(1, (kernel - 1) * dilation + 1, 1)[..., ::dilation]  # (B, T, C_in, k)
    return F.linear(taps.reshape(*x.shape[:2], -1), weight.reshape(weight.shape[0], -1), conv.bias)


def time_major_norm(norm: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm1d over the channels of `(B, T, C)`; statistics over B and T, as for `(B, C, T)` input."""
    return norm(x.reshape(-1, x.shape[-1])).view(x.shape)


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
        """`(B, T, C_in)` -> `(B, T, C_out)`; `mask` is `(B, T, 1)` 0/1 in x's dtype, or None (no padding)."""
        x = time_major_norm(self.norm, self.relu(time_major_conv(self.conv, x)))
        # In place: BatchNorm's backward needs its input, not its output.
        return x if mask is None else x.mul_(mask)


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
        """`(B, T, C)` -> `(B, T, C)`."""
        chunks = torch.chunk(x, self.scale, dim=-1)
        outputs = [chunks[0]]
        previous = None
        for conv, chunk in zip(self.convs, chunks[1:]):
            previous = conv(chunk if previous is None else chunk + previous, mask)
            outputs.append(previous)
        return torch.cat(outputs, dim=-1)


class SqueezeExcitation(nn.Module):
    """Channel gates from the utterance mean (real frames only)."""

    def __init__(self, channels: int, bottleneck: int):
        super().__init__()
        self.gate = nn.Sequential(
            nn.Linear(channels, bottleneck), nn.ReLU(inplace=True), nn.Linear(bottleneck, channels), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        """`(B, T, C)` -> `(B, T, C)`."""
        # Padded frames of x are zero, so the masked mean is a plain sum over the real-frame count.
        mean = x.mean(dim=1) if mask is None else x.sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
        return x * self.gate(mean)[:, None, :]


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
    """ECAPA-TDNN backbone: `(B, T, F)` features -> `(B, mfa_channels, T)` frame-level features (a transposed
    view of a time-major tensor)."""

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
        x = features
        time = x.shape[1]
        mask = None
        if has_padding(lengths, time):
            mask = lengths_to_mask(lengths, time, x.dtype)[..., None]
            x = x * mask
        x = self.stem(x, mask)
        outputs = []
        for block in self.blocks:
            x = block(x, mask)
            outputs.append(x)
        return self.aggregation(torch.cat(outputs, dim=-1), mask).transpose(1, 2), lengths
