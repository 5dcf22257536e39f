"""What DINO training looks like from the inside, and an alarm for the two ways it collapses.

DINO has two trivial solutions: every input mapped to one prototype (the teacher's batch-mean distribution
has ~0 entropy; centring exists to prevent it) and the uniform output (every sample's teacher distribution
has entropy ~log K; sharpening exists to prevent it). Both are cases of a teacher whose output no longer
depends on its input, which can also happen in between (a learning rate that blows the weights up gives every
sample the same, neither sharp nor flat, distribution): the teacher's batch entropy minus its mean per-sample
entropy, the information its output carries about the input, falls to ~0 then, whatever the distribution. The
embeddings are watched too, scale-free (their mean pairwise cosine) and absolute (their spread), but a final
BatchNorm can keep them apart through a collapse, so the teacher's distributions are the primary signals.

Every confirmed collapse (kind and step) is kept in the monitor's state, so that checkpoints carry it and the
run's summary (`summary()`: `training_summary.json` and the model card) reports it, whatever the
`collapse_action`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Optional

import torch

if TYPE_CHECKING:
    from .config import MonitorConfig

logger = logging.getLogger(__name__)

CAUSES = {
    "one_prototype": (
        "all samples map to ONE prototype (teacher batch-mean entropy ~0). Likely causes: centring disabled or "
        "too slow (center_momentum too close to 1), teacher temperature too low, learning rate too high, or "
        "every crop the same (check the data and augmentation)."
    ),
    "uniform": (
        "the teacher output is UNIFORM (per-sample entropy ~log K). Likely causes: teacher temperature too "
        "high (sharpening too weak), teacher momentum too low, or a learning rate so small nothing is learnt."
    ),
    "constant_embeddings": (
        "the embeddings are CONSTANT across the batch (all pointing the same way, or std ~0). Likely causes: dead "
        "features after a too high learning rate, silent or identical input crops, or a broken feature pipeline."
    ),
    "same_output": (
        "every sample gets the SAME teacher distribution (per-sample entropy == batch entropy: the output no "
        "longer depends on the input). Likely causes: a learning rate far too high (the weights blew up), "
        "teacher momentum too low, or every crop the same (check the data and augmentation)."
    ),
}

#: The statistics of the last logged step that the run's summary reports.
SUMMARY_STATISTICS = (
    "teacher_entropy",
    "teacher_batch_entropy",
    "teacher_information",
    "embedding_cosine",
    "embedding_std",
    "effective_rank",
)


def entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of each row of `(N, K)` probabilities."""
    return -(probabilities * probabilities.clamp_min(1e-12).log()).sum(dim=-1)


def mean_pairwise_cosine(embeddings: torch.Tensor) -> float:
    """Mean cosine similarity of the distinct pairs of rows of `(N, D)` embeddings, N >= 2 (1: all the same
    direction, whatever their scale)."""
    unit = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    n = unit.shape[0]
    total = unit.sum(dim=0)
    # sum over all pairs of u_i . u_j is |sum u|^2; the n diagonal terms are |u_i|^2 = 1 (0 for a zero row)
    diagonal = (unit * unit).sum()
    return float((total @ total - diagonal) / (n * (n - 1)))


def effective_rank(embeddings: torch.Tensor) -> float:
    """exp(entropy of the normalised singular values) of centred `(N, D)` embeddings (Roy & Vetterli, 2007)."""
    centred = embeddings.float() - embeddings.float().mean(dim=0, keepdim=True)
    singular = torch.linalg.svdvals(centred)
    total = singular.sum()
    if total <= 0:
        return 0.0
    p = singular / total
    return float(torch.exp(entropy(p[None])[0]))


@torch.no_grad()
def dino_statistics(
    teacher_probs: torch.Tensor,
    student_logits: torch.Tensor,
    student_temperature: float,
    num_global: int,
    embeddings: torch.Tensor,
    center: torch.Tensor,
) -> Dict[str, float]:
    """Scalars logged every step.

    Args:
        teacher_probs: `(V_t * B, K)` centred, sharpened teacher distributions (view-major).
        student_logits: `(V_s * B, K)` student logits (global views first).
        embeddings: `(N, D)` teacher embeddings of the global views.
        center: `(1, K)` the DINO centre.
    """
    log_k = math.log(teacher_probs.shape[-1])
    student_probs = torch.softmax(student_logits.float() / student_temperature, dim=-1)
    batch = teacher_probs.shape[0] // num_global
    # KL(teacher || student) on matching views of the same utterances (global view t vs the other globals)
    student_global = student_probs[: num_global * batch].chunk(num_global)
    kl = []
    for t, teacher in enumerate(teacher_probs.chunk(num_global)):
        for s, student in enumerate(student_global):
            if s != t or num_global == 1:
                kl.append((teacher * (teacher.clamp_min(1e-12).log() - student.clamp_min(1e-12).log())).sum(-1).mean())
    sample_entropy = float(entropy(teacher_probs).mean()) / log_k
    batch_entropy = float(entropy(teacher_probs.mean(dim=0, keepdim=True))[0]) / log_k
    stats = {
        "teacher_entropy": sample_entropy,
        "teacher_batch_entropy": batch_entropy,
        "student_entropy": float(entropy(student_probs).mean()) / log_k,
        "kl_teacher_student": float(torch.stack(kl).mean()) if kl else 0.0,
        "center_norm": float(center.norm()),
        "embedding_std": float(embeddings.float().std(dim=0).mean()) if embeddings.shape[0] > 1 else 0.0,
        "effective_rank": effective_rank(embeddings) if embeddings.shape[0] > 1 else 0.0,
    }
    if batch > 1:  # one utterance says nothing of how the output depends on the input
        stats["teacher_information"] = batch_entropy - sample_entropy
        stats["embedding_cosine"] = mean_pairwise_cosine(embeddings)
    return stats


@dataclass
class CollapseMonitor:
    """Counts consecutive steps with a collapse signal; reports each kind once, loudly, with likely causes, and
    keeps every confirmed collapse (`events`) and the last statistics for the run's summary.

    Entropies are fractions of log K (0 = one-hot, 1 = uniform).
    """

    patience: int = 20
    min_batch_entropy: float = 0.05
    max_sample_entropy: float = 0.98
    min_embedding_std: float = 1e-4
    max_embedding_cosine: float = 0.999
    min_teacher_information: float = 0.001
    streaks: Dict[str, int] = field(default_factory=lambda: {k: 0 for k in CAUSES})
    reported: List[str] = field(default_factory=list)
    events: List[Dict[str, object]] = field(default_factory=list)
    """Each confirmed collapse: `{"kind": ..., "step": ...}`, in the order they were confirmed."""
    last: Dict[str, float] = field(default_factory=dict)
    """`SUMMARY_STATISTICS` of the last step fed to `update`, and its `step`."""

    @classmethod
    def from_config(cls, config: MonitorConfig) -> CollapseMonitor:
        """The monitor with the thresholds of a recipe's `monitor` section (its `collapse_action` is the loop's)."""
        return cls(
            config.patience,
            config.min_batch_entropy,
            config.max_sample_entropy,
            config.min_embedding_std,
            config.max_embedding_cosine,
            config.min_teacher_information,
        )

    def update(self, stats: Dict[str, float], step: int) -> Optional[str]:
        """Feed one step's statistics; returns the collapse kind the first time it is confirmed."""
        signals = {
            "one_prototype": stats["teacher_batch_entropy"] < self.min_batch_entropy,
            "uniform": stats["teacher_entropy"] > self.max_sample_entropy,
            "constant_embeddings": stats["embedding_std"] < self.min_embedding_std
            or stats.get("embedding_cosine", -1.0) > self.max_embedding_cosine,
            "same_output": stats.get("teacher_information", 1.0) < self.min_teacher_information,
        }
        self.last = {k: float(stats[k]) for k in SUMMARY_STATISTICS if k in stats}
        self.last["step"] = step
        confirmed = None
        for kind, on in signals.items():
            self.streaks[kind] = self.streaks.get(kind, 0) + 1 if on else 0
            if self.streaks[kind] >= self.patience and kind not in self.reported:
                self.reported.append(kind)
                self.events.append({"kind": kind, "step": step})
                confirmed = confirmed or kind
                banner = "!" * 78
                logger.warning("\n%s\nDINO COLLAPSE DETECTED at step %d: %s\n%s", banner, step, CAUSES[kind], banner)
        return confirmed

    def summary(self) -> Dict[str, object]:
        """For the run's summary: `collapse` (the first kind confirmed, or None), `collapses` (every one, with
        its step) and `final_statistics` (the last logged collapse signals, effective rank included)."""
        return {
            "collapse": self.events[0]["kind"] if self.events else None,
            "collapses": [dict(e) for e in self.events],
            "final_statistics": {k: round(v, 4) if isinstance(v, float) else v for k, v in self.last.items()},
        }

    def state_dict(self) -> dict:
        return {
            "streaks": dict(self.streaks),
            "reported": list(self.reported),
            "events": [dict(e) for e in self.events],
            "last": dict(self.last),
        }

    def load_state_dict(self, state: dict) -> None:
        self.streaks.update(state.get("streaks", {}))
        self.reported = list(state.get("reported", []))
        self.events = [dict(e) for e in state.get("events", [])]
        self.last = dict(state.get("last", {}))
