"""ResNet over the (frequency x time) fbank image, as in the r-vector / wespeaker speaker models.

Every convolution sees zeros beyond each utterance's last frame, exactly as if the utterance were alone, so
an utterance embeds the same inside a padded batch (in eval mode).
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import nn


def _downsample(lengths: torch.Tensor, stride: int) -> torch.Tensor:
    # Output length of a kernel-3/padding-1 (or kernel-1/padding-0) conv with this stride.
    return torch.div(lengths - 1, stride, rounding_mode="floor") + 1


def _time_mask(lengths: torch.Tensor, time: int, dtype: torch.dtype) -> torch.Tensor:
    """`(B, 1, 1, time)` 0/1 mask broadcastable over (B, C, F, T)."""
    return (torch.arange(time, device=lengths.device)[None, :] < lengths[:, None]).to(dtype)[:, None, None, :]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet18/34 block)."""

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.stride = stride
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        out = self.relu(self.bn1(self.conv1(x)))
        lengths = _downsample(lengths, self.stride)
        mask = _time_mask(lengths, out.shape[-1], out.dtype)
        out = self.bn2(self.conv2(out * mask))
        out = self.relu(out + self.shortcut(x)) * mask
        return out, lengths


class ResNet(nn.Module):
    """ResNet backbone.

    Input `(B, T, F)` features; output `(B, C_out, T / 8)` frame-level features with
    `C_out = 8 * base_width * ceil(F / 8)` (channels x remaining frequency bins), and the output lengths.
    """

    def __init__(self, num_mel_bins: int = 80, layers: Sequence[int] = (3, 4, 6, 3), base_width: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(1, base_width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(base_width)
        self.relu = nn.ReLU(inplace=True)
        blocks: List[nn.Module] = []
        in_channels = base_width
        freq = num_mel_bins
        for stage, num_blocks in enumerate(layers):
            channels = base_width * 2**stage
            stride = 1 if stage == 0 else 2
            for b in range(num_blocks):
                blocks.append(BasicBlock(in_channels, channels, stride if b == 0 else 1))
                in_channels = channels
            freq = (freq - 1) // stride + 1
        self.blocks = nn.ModuleList(blocks)
        self.output_channels = in_channels * freq

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = features.transpose(1, 2).unsqueeze(1)  # (B, 1, F, T)
        x = x * _time_mask(lengths, x.shape[-1], x.dtype)
        x = self.relu(self.bn1(self.conv1(x))) * _time_mask(lengths, x.shape[-1], x.dtype)
        for block in self.blocks:
            x, lengths = block(x, lengths)
        return x.flatten(1, 2), lengths
