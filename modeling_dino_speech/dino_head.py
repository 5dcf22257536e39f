"""The DINO projection head: MLP -> L2-normalised bottleneck -> weight-normalised prototypes."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn


class WeightNormalizedLinear(nn.Module):
    """Bias-free linear layer with weight = g * v / ||v|| per output row.

    With `norm_fixed=True`, g stays at 1: the logits are cosine similarities to K prototype directions, which
    DINO needs for stable training (the norm would otherwise grow to sharpen the output and shortcut the
    temperature). Kept as two plain parameters so EMA, safetensors and meta-device loading treat it like any
    other layer.
    """

    def __init__(self, in_features: int, out_features: int, norm_fixed: bool = True):
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(out_features, in_features))
        self.weight_g = nn.Parameter(torch.ones(out_features, 1), requires_grad=not norm_fixed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight_g * F.normalize(self.weight_v, dim=1))


class DINOHead(nn.Module):
    """`(B, in_dim)` embeddings -> `(B, num_prototypes)` logits over the prototypes.

    `num_layers` linear layers with GELU (no BatchNorm, as in the paper) map to a bottleneck that is
    L2-normalised before the weight-normalised last layer.
    """

    def __init__(
        self,
        in_dim: int,
        num_prototypes: int = 65536,
        hidden_size: int = 2048,
        bottleneck_size: int = 256,
        num_layers: int = 3,
        norm_last_layer: bool = True,
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        sizes = [in_dim] + [hidden_size] * (num_layers - 1) + [bottleneck_size]
        layers = []
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            layers.append(nn.Linear(a, b))
            if i < num_layers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        self.last_layer = WeightNormalizedLinear(bottleneck_size, num_prototypes, norm_fixed=norm_last_layer)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(embeddings), dim=-1))
