"""Losses named after the paper: the DINO cross-entropy with its centre, and additive angular margin softmax."""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class DINOLoss(nn.Module):
    """Cross-entropy between the teacher's centred, sharpened distribution and the student's, over all
    (teacher global view, student view) pairs except a view with itself.

    The centre `c` (an EMA of teacher outputs, averaged over all processes) is subtracted before the teacher
    softmax: centring stops one prototype from dominating, sharpening (a low teacher temperature) stops the
    uniform collapse; together they replace negative samples.

    Args:
        num_prototypes: K.
        num_global_crops: views the teacher sees (they come first in the student's output).
        student_temperature: temperature of the student softmax.
        center_momentum: EMA momentum of the centre.
    """

    def __init__(
        self,
        num_prototypes: int,
        num_global_crops: int = 2,
        student_temperature: float = 0.1,
        center_momentum: float = 0.9,
    ):
        super().__init__()
        self.num_global_crops = num_global_crops
        self.student_temperature = student_temperature
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, num_prototypes))

    def teacher_probabilities(self, teacher_output: torch.Tensor, teacher_temperature: float) -> torch.Tensor:
        """`(V_t * B, K)` teacher logits -> centred, sharpened probabilities of the same shape."""
        return F.softmax((teacher_output.float() - self.center) / teacher_temperature, dim=-1)

    def forward(
        self, student_output: torch.Tensor, teacher_output: torch.Tensor, teacher_temperature: float
    ) -> torch.Tensor:
        """
        Args:
            student_output: `(V_s * B, K)` logits, crops stacked view-major (all of view 0, then view 1, ...),
                the global views first.
            teacher_output: `(V_t * B, K)` logits of the global views, view-major.
            teacher_temperature: the sharpening temperature at this step.

        Returns:
            scalar loss: mean over batch and over the `V_t * V_s - V_t` pairs.
        """
        teacher_views = self.teacher_probabilities(teacher_output, teacher_temperature).detach()
        teacher_views = teacher_views.chunk(self.num_global_crops)
        student_views = F.log_softmax(student_output.float() / self.student_temperature, dim=-1)
        student_views = student_views.chunk(student_output.shape[0] // teacher_views[0].shape[0])
        total, pairs = student_output.new_zeros((), dtype=torch.float32), 0
        for t, teacher in enumerate(teacher_views):
            for s, student in enumerate(student_views):
                if s == t:
                    continue
                total = total + torch.sum(-teacher * student, dim=-1).mean()
                pairs += 1
        if pairs == 0:
            raise ValueError("DINO needs at least two views: one for the teacher and another for the student")
        return total / pairs

    @torch.no_grad()
    def update_center(
        self, teacher_output: torch.Tensor, all_reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    ) -> None:
        """EMA of the batch mean of teacher logits; averaged over processes so every rank keeps one centre.

        Args:
            all_reduce: maps a per-process tensor to its mean over processes (e.g. `accelerator.reduce(x,
                "mean")`); default: torch.distributed mean when initialised, else identity.
        """
        batch_center = teacher_output.float().mean(dim=0, keepdim=True)
        if all_reduce is not None:
            batch_center = all_reduce(batch_center)
        elif dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(batch_center)
            batch_center = batch_center / dist.get_world_size()
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)


def full_precision(tensor: torch.Tensor) -> torch.autocast:
    """Autocast switched off on `tensor`'s device, for the sums these losses take over products of unit vectors:
    in bf16 a cosine near 1 or a covariance entry keeps only about three significant digits."""
    return torch.autocast(device_type=tensor.device.type, enabled=False)


class _CollapseRegularizer(nn.Module):
    """What the regularisers against dimensional collapse share: they score a batch of L2-normalised
    embeddings, so they need at least two of them, and they score it in float32, under autocast too. A
    subclass gives the score as `penalty`."""

    #: the regulariser's name in the error for a batch of one
    name = "a collapse regulariser"

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = eps

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """`(N, D)` embeddings (N >= 2) -> scalar, in float32 under autocast too."""
        if embeddings.shape[0] < 2:
            raise ValueError(f"{self.name} needs at least two embeddings in a batch")
        x = F.normalize(embeddings.float(), dim=-1, eps=self.eps)
        with full_precision(x):
            return self.penalty(x)

    def penalty(self, x: torch.Tensor) -> torch.Tensor:
        """`(N, D)` L2-normalised float32 rows -> scalar."""
        raise NotImplementedError


class KoLeoLoss(_CollapseRegularizer):
    """Kozachenko-Leonenko entropy regulariser (Sablayrolles et al., ICLR 2019; DINOv2): spreads the embeddings
    of a batch over the sphere by pushing each away from its nearest neighbour, against dimensional collapse.

    `-mean_i log(min_{j != i} ||x_i - x_j||)` over L2-normalised rows; larger when points crowd together.
    """

    name = "KoLeo"

    def penalty(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            # The nearest neighbour by cosine (the largest dot product), the sample itself excluded.
            similarity = x @ x.T
            similarity.fill_diagonal_(-2.0)
            nearest = similarity.argmax(dim=1)
        distances = (x - x[nearest]).norm(dim=-1)
        return -torch.log(distances + self.eps).mean()


class DimensionRegularization(_CollapseRegularizer):
    """Dimension regularisation against dimensional collapse, after SDPN's (Chen et al., Interspeech 2025, who
    penalise the Frobenius norm of the embeddings' covariance): a penalty on how unevenly a batch of embeddings
    spreads its variance over the embedding's directions.

    With `C` the covariance of the L2-normalised rows, the participation ratio `tr(C)^2 / ||C||_F^2` counts the
    directions the batch uses (1 when it lies on a line, D when its variance is even over all D). The penalty
    is `log(D / participation ratio)`: 0 for an even spread, `log D` for a collapse onto one direction; its log
    keeps the gradient's scale the same from a mild to a severe collapse. A batch of N rows spans at most N - 1
    directions, so the penalty's floor is `log(D / (N - 1))` when N <= D.
    """

    name = "dimension regularisation"

    def penalty(self, x: torch.Tensor) -> torch.Tensor:
        x = x - x.mean(dim=0, keepdim=True)
        covariance = x.T @ x / (x.shape[0] - 1)
        participation = torch.diagonal(covariance).sum() ** 2 / (covariance.square().sum() + self.eps)
        return torch.log(x.shape[1] / (participation + self.eps))


class AAMSoftmax(nn.Module):
    """Additive angular margin softmax (ArcFace), optionally with sub-centres per class.

    Logits are `scale * cos(theta_y + margin)` for the true class and `scale * cos(theta_j)` for the others,
    where theta is the angle to the nearest sub-centre of each class. Without labels (inference) no margin is
    applied.
    """

    def __init__(
        self, embedding_size: int, num_labels: int, margin: float = 0.2, scale: float = 30.0, subcenters: int = 1
    ):
        super().__init__()
        self.num_labels = num_labels
        self.subcenters = subcenters
        self.scale = scale
        self.margin = margin
        self.weight = nn.Parameter(torch.empty(num_labels * subcenters, embedding_size))

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """`(B, D)` -> `(B, num_labels)` cosine to the nearest sub-centre of each class, in float32 under autocast
        too (the margin is a small shift of a cosine near 1)."""
        with full_precision(embeddings):
            cos = F.linear(F.normalize(embeddings.float(), dim=-1), F.normalize(self.weight.float(), dim=-1))
        if self.subcenters > 1:
            cos = cos.view(-1, self.num_labels, self.subcenters).amax(dim=-1)
        return cos

    def forward(self, embeddings: torch.Tensor, labels: Optional[torch.Tensor] = None):
        """Returns `(logits, loss)`; loss is None without labels. A negative label marks a row without a class
        (e.g. an utterance the clustering left out): no margin, no part in the loss."""
        cos = self.cosine(embeddings)
        if labels is None:
            return self.scale * cos, None
        labelled = labels >= 0
        if not bool(labelled.any()):
            raise ValueError("AAMSoftmax: every label of the batch is negative (no row has a class)")
        cos = cos.clamp(-1 + 1e-7, 1 - 1e-7)
        sin = torch.sqrt(1.0 - cos.pow(2))
        cos_m, sin_m = math.cos(self.margin), math.sin(self.margin)
        with_margin = cos * cos_m - sin * sin_m
        # Past theta = pi - m, cos(theta + m) stops decreasing; use the linear extension as ArcFace does.
        with_margin = torch.where(
            cos > math.cos(math.pi - self.margin), with_margin, cos - math.sin(math.pi - self.margin) * self.margin
        )
        one_hot = F.one_hot(labels.clamp(min=0), self.num_labels).to(cos.dtype) * labelled.unsqueeze(-1)
        logits = self.scale * (one_hot * with_margin + (1.0 - one_hot) * cos)
        return logits, F.cross_entropy(logits, labels.masked_fill(~labelled, -1), ignore_index=-1)
