"""Self-Supervised Positive Sampling (SSPS, Lepage & Dehak, Interspeech 2025) for DINO.

DINO's teacher and student see crops of one utterance, so what they agree on includes the recording: its channel,
its room, its level. SSPS gives the student a second positive that shares the voice but not the recording: the
teacher's view of another utterance that lies close to the anchor in the teacher's embedding space (a
pseudo-positive). Its embedding comes from a FIFO memory queue of the teacher's embeddings of past global views,
each with the pool index of its utterance, so that an utterance is never its own pseudo-positive; the current
teacher head turns the stored embedding into the target distribution.

The queue lives on each process: with several processes, each samples among the views it has seen. The checkpoint
keeps the main process's queue, and every process resumes from it, so a resumed multi-process run draws other
pseudo-positives than the uninterrupted one would (a single process resumes bit for bit).
"""

from __future__ import annotations

from typing import Callable, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PositiveQueue", "pseudo_positive_logits"]


class PositiveQueue(nn.Module):
    """FIFO memory queue of teacher embeddings, and the pseudo-positive sampling from it.

    Args:
        size: entries the queue holds (global views of past batches); the oldest is overwritten first.
        dim: the embedding size D.
        neighbors: a pseudo-positive is drawn uniformly among the anchor's `neighbors` nearest entries (cosine)
            from other utterances.
    """

    def __init__(self, size: int, dim: int, neighbors: int):
        super().__init__()
        if size < 1 or dim < 1 or neighbors < 1:
            raise ValueError(f"PositiveQueue: size, dim and neighbors must be >= 1, got {size}, {dim}, {neighbors}")
        if neighbors > size:
            raise ValueError(f"PositiveQueue: neighbors={neighbors} exceeds the queue size {size}")
        self.neighbors = neighbors
        self.register_buffer("embeddings", torch.zeros(size, dim))
        # -1: an empty slot
        self.register_buffer("utterance", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.embeddings.shape[0]

    @torch.no_grad()
    def push(self, embeddings: torch.Tensor, utterance: torch.Tensor) -> None:
        """Enqueue `(N, D)` embeddings of the utterances `(N,)` (pool indices), overwriting the oldest entries."""
        if embeddings.ndim != 2 or embeddings.shape[1] != self.embeddings.shape[1]:
            raise ValueError(
                f"PositiveQueue.push: expected (N, {self.embeddings.shape[1]}), got {tuple(embeddings.shape)}"
            )
        if utterance.shape != embeddings.shape[:1]:
            raise ValueError(f"PositiveQueue.push: {embeddings.shape[0]} embeddings but {utterance.numel()} utterances")
        embeddings, utterance = embeddings[-self.size :], utterance[-self.size :]
        slots = (self.pointer + torch.arange(embeddings.shape[0], device=self.pointer.device)) % self.size
        self.embeddings[slots] = embeddings.detach().to(self.embeddings)
        self.utterance[slots] = utterance.to(self.utterance)
        self.pointer.copy_((self.pointer + embeddings.shape[0]) % self.size)

    @torch.no_grad()
    def sample(
        self, queries: torch.Tensor, utterance: torch.Tensor, generator: torch.Generator | None = None
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A pseudo-positive for each query.

        Args:
            queries: `(N, D)` teacher embeddings of the anchors' views.
            utterance: `(N,)` pool index of each anchor's utterance (its entries are never its positive).
            generator: the CPU generator of the uniform draw among the neighbours (seeded per step, so a resumed
                run draws what the uninterrupted one would).

        Returns:
            positives `(N, D)` (stored embeddings; zeros where none), found `(N,)` bool (a query has a positive
            when the queue holds at least `neighbors` entries of other utterances) and similarity `(N,)`, the
            cosine between each query and its positive (0 where none).
        """
        n = queries.shape[0]
        bank = F.normalize(self.embeddings, dim=-1)
        similarity = F.normalize(queries.float(), dim=-1) @ bank.T  # (N, size)
        excluded = (self.utterance[None, :] < 0) | (self.utterance[None, :] == utterance.to(self.utterance)[:, None])
        similarity = similarity.masked_fill(excluded, float("-inf"))
        top, slots = similarity.topk(self.neighbors, dim=-1)  # (N, neighbors), nearest first
        pick = torch.randint(self.neighbors, (n, 1), generator=generator).to(slots.device)
        chosen, cosine = slots.gather(1, pick).squeeze(1), top.gather(1, pick).squeeze(1)
        found = torch.isfinite(top[:, -1])  # the k-th nearest exists: all k draws are real entries
        positives = torch.where(found[:, None], self.embeddings[chosen], torch.zeros_like(self.embeddings[chosen]))
        return positives, found, torch.where(found, cosine, torch.zeros_like(cosine))


def pseudo_positive_logits(
    queue: PositiveQueue,
    head: Callable[[torch.Tensor], torch.Tensor],
    teacher_logits: torch.Tensor,
    teacher_embeddings: torch.Tensor,
    utterance: torch.Tensor,
    generator: torch.Generator | None = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The teacher `head`'s logits `(V_t * B, K)` of a pseudo-positive for each teacher view, and the mean cosine
    between the views and their positives.

    Args:
        queue: the memory queue the pseudo-positives are drawn from.
        head: the teacher's DINO head (embeddings -> logits).
        teacher_logits: `(V_t * B, K)` the views' own logits, kept for a view without a pseudo-positive.
        teacher_embeddings: `(V_t * B, D)` the views' embeddings, the queries.
        utterance: `(V_t * B,)` the pool index of each view's utterance.
        generator: see `PositiveQueue.sample`.
    """
    positives, found, cosine = queue.sample(teacher_embeddings, utterance, generator)
    with torch.no_grad():
        logits = head(positives.to(teacher_embeddings.dtype))
    logits = torch.where(found[:, None], logits.to(teacher_logits.dtype), teacher_logits)
    return logits, cosine[found].mean() if found.any() else cosine.new_zeros(())
