"""ResNet over the (frequency x time) fbank image, as in the r-vector / wespeaker speaker models.

Every convolution sees zeros beyond each utterance's last frame, exactly as if the utterance were alone, so
an utterance embeds the same inside a padded batch (in eval mode). A batch without padding skips the masking
(it would multiply by ones). Activations run channels-last, the layout oneDNN's CPU convolutions prefer, and in
eval mode each BatchNorm is folded into the convolution before it.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .pooling import has_padding, lengths_to_mask


def _downsample(lengths: torch.Tensor, stride: int) -> torch.Tensor:
    # Output length of a kernel-3/padding-1 (or kernel-1/padding-0) conv with this stride.
    return torch.div(lengths - 1, stride, rounding_mode="floor") + 1


def _time_mask(lengths: torch.Tensor, time: int, dtype: torch.dtype) -> torch.Tensor:
    """`(B, 1, 1, time)` 0/1 mask broadcastable over (B, C, F, T)."""
    return lengths_to_mask(lengths, time, dtype)[:, None, None, :]


def conv_bn(conv: nn.Conv2d, norm: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """`norm(conv(x))`; with fixed (eval-mode) statistics as one convolution whose weights carry the
    normalisation, which saves a pass over the activations and gives the same result up to rounding."""
    if norm.training or norm.running_mean is None or norm.running_var is None:
        return norm(conv(x))
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    weight = conv.weight * scale.view(-1, 1, 1, 1)
    return F.conv2d(x, weight, shift, conv.stride, conv.padding, conv.dilation, conv.groups)


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

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """`(B, C_in, F, T)` -> `(B, C, F / stride, T / stride)`; `lengths` None means no padding."""
        out = self.relu(conv_bn(self.conv1, self.bn1, x))
        mask = None
        if lengths is not None:
            lengths = _downsample(lengths, self.stride)
            mask = _time_mask(lengths, out.shape[-1], out.dtype)
            out = out * mask
        out = conv_bn(self.conv2, self.bn2, out)
        shortcut = conv_bn(self.shortcut[0], self.shortcut[1], x) if len(self.shortcut) else x
        out = self.relu(out.add_(shortcut))
        return (out if mask is None else out * mask), lengths


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
        # How activations are laid out in memory (not a parameter, not saved; the values are the same). None:
        # channels-last on CPU, which oneDNN's convolutions run faster (benchmarks/RESULTS.md); GPUs keep NCHW.
        self.channels_last: Optional[bool] = None

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = features.transpose(1, 2).unsqueeze(1)  # (B, 1, F, T)
        padded = lengths if has_padding(lengths, x.shape[-1]) else None
        if padded is not None:
            x = x * _time_mask(padded, x.shape[-1], x.dtype)
        x = self.relu(conv_bn(self.conv1, self.bn1, x))
        if padded is not None:
            x = x * _time_mask(padded, x.shape[-1], x.dtype)
        if self.channels_last or (self.channels_last is None and x.device.type == "cpu"):
            x = x.contiguous(memory_format=torch.channels_last)
        for block in self.blocks:
            x, padded = block(x, padded)
        out_lengths = lengths
        for block in self.blocks:
            out_lengths = _downsample(out_lengths, block.stride)
        return x.flatten(1, 2), out_lengths
