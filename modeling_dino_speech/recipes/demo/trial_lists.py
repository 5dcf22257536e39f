"""The demo corpus's speaker-verification trial lists: balanced samples (``make_trials``, the cross-language
Allison list) and all pairs (``all_pairs``), written in VoxCeleb format through
:mod:`modeling_dino_speech.data.trials`."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from ...data.trials import Trial, write_trials
from ...utils.atomic import atomic_path

__all__ = ["all_pairs", "make_crosslang_trials", "make_trials", "write_trial_list"]


def _pair(a: str, b: str, rng: np.random.Generator) -> tuple[str, str]:
    return (a, b) if rng.random() < 0.5 else (b, a)


def make_trials(spk2files: dict[str, list[str]], n_trials: int, rng: np.random.Generator) -> list[Trial]:
    """Balanced verification trials: ``n_trials // 2`` target pairs spread evenly over speakers and as many
    non-target pairs spread evenly over speaker pairs; no trial repeats. When the speakers have fewer distinct
    target pairs than requested, both halves shrink to stay balanced.

    Returns:
        ``[Trial(label, enroll, test), ...]`` with label 1 = same speaker.
    """
    speakers = sorted(s for s in spk2files if len(spk2files[s]) >= 2)
    targets = _sample_pairs([(s, s) for s in speakers], spk2files, spk2files, n_trials // 2, rng)
    cross = [(a, b) for i, a in enumerate(sorted(spk2files)) for b in sorted(spk2files)[i + 1 :]]
    nontargets = _sample_pairs(cross, spk2files, spk2files, len(targets), rng)
    trials = [Trial(1, a, b) for a, b in targets] + [Trial(0, a, b) for a, b in nontargets[: len(targets)]]
    order = rng.permutation(len(trials))
    return [trials[i] for i in order]


def _sample_pairs(groups: list[tuple[str, str]], left: dict[str, list[str]], right: dict[str, list[str]], n: int,
                  rng: np.random.Generator) -> list[tuple[str, str]]:  # fmt: skip
    """``n`` distinct file pairs, round-robin over ``groups`` (speaker pairs), files drawn at random."""
    chosen: set[frozenset] = set()
    out: list[tuple[str, str]] = []
    capacity = {}
    for g in groups:
        a, b = left[g[0]], right[g[1]]
        capacity[g] = len(a) * (len(a) - 1) // 2 if g[0] == g[1] and left is right else len(a) * len(b)
    used = {g: 0 for g in groups}
    active = [g for g in groups if capacity[g] > 0]
    while len(out) < n and active:
        for g in list(active):
            if len(out) >= n:
                break
            if used[g] >= capacity[g]:
                active.remove(g)
                continue
            a_files, b_files = left[g[0]], right[g[1]]
            for _ in range(1000):  # rejection sampling; capacity guarantees a free pair exists
                x, y = a_files[int(rng.integers(len(a_files)))], b_files[int(rng.integers(len(b_files)))]
                key = frozenset((x, y))
                if x != y and key not in chosen:
                    break
            else:
                active.remove(g)
                continue
            chosen.add(key)
            used[g] += 1
            out.append(_pair(x, y, rng))
    return out


def make_crosslang_trials(
    en: list[str], es: list[str], others: dict[str, list[str]], n_trials: int, rng: np.random.Generator
) -> list[Trial]:
    """Same-speaker trials across languages: targets are Allison (en) vs Allison (es); non-targets are Allison
    (en or es, alternating) vs the other real voices. Balanced."""
    targets = _sample_pairs([("en", "es")], {"en": en}, {"es": es}, n_trials // 2, rng)
    allison = {"allison_en": en, "allison_es": es}
    groups = [(a, o) for a in sorted(allison) for o in sorted(others)]
    nontargets = _sample_pairs(groups, allison, others, len(targets), rng)
    trials = [Trial(1, a, b) for a, b in targets] + [Trial(0, a, b) for a, b in nontargets[: len(targets)]]
    order = rng.permutation(len(trials))
    return [trials[i] for i in order]


def all_pairs(speaker_of: Mapping[str, str]) -> list[Trial]:
    """Every unordered pair of the files in ``{file: speaker}``, once, in sorted file order: target (1) when
    both files have the same speaker."""
    files = sorted(speaker_of)
    return [Trial(int(speaker_of[a] == speaker_of[b]), a, b) for i, a in enumerate(files) for b in files[i + 1 :]]


def write_trial_list(path: Path, trials: Iterable[Sequence]) -> None:
    """VoxCeleb format ``<label> <enroll> <test>``, written atomically."""
    with atomic_path(path) as tmp:
        write_trials(tmp, [Trial(*t) for t in trials])
