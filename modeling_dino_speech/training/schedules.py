"""Every schedule of the recipe (learning rate, weight decay, teacher momentum, teacher temperature) as an
array indexed by the global optimiser step, computed in one place."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def cosine_scheduler(
    base: float, final: float, total_steps: int, warmup_steps: int = 0, warmup_start: float = 0.0
) -> np.ndarray:
    """Linear warm-up from `warmup_start` to `base` over `warmup_steps`, then a half cosine to `final`.

    Returns:
        `(total_steps,)` float64 array; entry i is the value used at optimiser step i.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    warmup_steps = int(min(max(warmup_steps, 0), total_steps))
    warmup = np.linspace(warmup_start, base, warmup_steps, endpoint=False) if warmup_steps else np.zeros(0)
    steps = np.arange(total_steps - warmup_steps)
    span = max(len(steps), 1)
    cosine = final + 0.5 * (base - final) * (1 + np.cos(np.pi * steps / span))
    return np.concatenate([warmup, cosine])


def linear_warmup(start: float, end: float, total_steps: int, warmup_steps: int) -> np.ndarray:
    """`start` -> `end` linearly over `warmup_steps`, then constant at `end`."""
    warmup_steps = int(min(max(warmup_steps, 0), total_steps))
    return np.concatenate(
        [np.linspace(start, end, warmup_steps, endpoint=False), np.full(total_steps - warmup_steps, end)]
    )


@dataclass
class DinoSchedules:
    learning_rate: np.ndarray
    weight_decay: np.ndarray
    teacher_momentum: np.ndarray
    teacher_temperature: np.ndarray
    freeze_last_layer_steps: int
    ssps_start_step: int = 0
    """The first step whose loss has SSPS's pseudo-positives (when the recipe has them)."""

    @classmethod
    def build(cls, optim, dino, total_steps: int, steps_per_epoch: int, effective_batch: int) -> DinoSchedules:
        """The recipe's schedules for `total_steps` optimiser steps of `effective_batch` utterances."""
        per_epoch = max(steps_per_epoch, 1)
        peak_lr = optim.lr * effective_batch / 256.0
        return cls(
            learning_rate=cosine_scheduler(peak_lr, optim.min_lr, total_steps, round(optim.warmup_epochs * per_epoch)),
            weight_decay=cosine_scheduler(optim.weight_decay, optim.weight_decay_end, total_steps),
            teacher_momentum=cosine_scheduler(dino.teacher_momentum, dino.teacher_momentum_end, total_steps),
            teacher_temperature=linear_warmup(
                dino.warmup_teacher_temperature,
                dino.teacher_temperature,
                total_steps,
                round(dino.warmup_teacher_temperature_epochs * per_epoch),
            ),
            freeze_last_layer_steps=round(optim.freeze_last_layer_epochs * per_epoch),
            ssps_start_step=round(dino.ssps_start_fraction * total_steps),
        )
