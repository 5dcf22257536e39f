"""Settings of a demo corpus build, and the fingerprint that tells whether an existing corpus is up to date."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

__all__ = ["BUILDER_VERSION", "DemoCorpusConfig"]

#: Bump when the output of the builder changes for the same settings (it invalidates existing corpora).
BUILDER_VERSION = "2.0"


@dataclass
class DemoCorpusConfig:
    """Settings of one demo corpus build. Everything except ``out``, ``cache``, ``workers``, ``tools`` and
    ``force`` enters the settings fingerprint that decides whether an existing corpus is up to date."""

    out: str = "data/demo"
    cache: str | None = None
    """Folder for downloaded ``.deb`` files and their extracted contents (default :func:`default_cache_dir`)."""
    seed: int = 0
    quick: bool = False
    """Tiny subset for tests (a few voices, a few utterances)."""
    workers: int = 2
    tools: str = "auto"
    """``auto``: system espeak-ng / flite when on PATH, else fetch them without root; ``system``; ``local``."""
    force: bool = False
    """Rebuild from scratch even if a complete corpus is present."""

    train_espeak_voices: int = 120
    train_utterances: int = 20
    heldout_espeak_voices: int = 24
    heldout_utterances: int = 12
    real_utterances_per_language: int = 60
    real_min_seconds: float = 2.0
    real_max_seconds: float = 8.0
    trials_real: int = 2000
    trials_crosslang: int = 2000
    trials_synth: int = 2000
    prosody_train_voices: int = 8
    prosody_test_voices: int = 4
    prosody_utterances: int = 12
    """Utterances per (voice, label)."""
    min_seconds: float = 2.0
    max_seconds: float = 6.0
    """Synthetic utterances aim at a duration drawn in [min_seconds, max_seconds] and are cut at max_seconds."""
    music_max_seconds: float | None = None
    """Crop each music-on-hold file to this length (None keeps them whole)."""
    real_new_per_speaker: int = 30
    """At most this many held-out utterances per verified real speaker (``heldout_real_new.csv``)."""
    joined_min_seconds: float = 2.5
    """Words (and short training lines) of one speaker are joined into utterances of at least this length ..."""
    joined_gap_seconds: float = 0.15
    """... with this much silence between them."""
    join_below_seconds: float = 1.5
    """Training lines of the verified voices shorter than this are joined; longer ones are kept as they are."""
    line_min_seconds: float = 2.5
    line_max_seconds: float = 8.0
    """Held-out dialogue / prompt lines of this length (after trimming) are single utterances."""
    real_quick_files: int = 0
    """Tests: one verified speaker per split and source, this many of its files (0: all of the table)."""

    @classmethod
    def quick_preset(cls, **overrides) -> DemoCorpusConfig:
        """The ``--quick`` subset: seconds to build, enough structure for every test."""
        small = dict(
            quick=True, train_espeak_voices=5, train_utterances=3, heldout_espeak_voices=2, heldout_utterances=3,
            real_utterances_per_language=3, trials_real=40, trials_crosslang=20, trials_synth=30,
            prosody_train_voices=2, prosody_test_voices=2, prosody_utterances=2, music_max_seconds=10.0,
            real_new_per_speaker=3, real_quick_files=8,
        )  # fmt: skip
        small.update(overrides)
        return cls(**small)

    def fingerprint_fields(self) -> dict:
        """The settings that determine the corpus content."""
        skip = {"out", "cache", "workers", "tools", "force"}
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}
        fields["builder_version"] = BUILDER_VERSION
        return fields

    def fingerprint(self) -> str:
        blob = json.dumps(self.fingerprint_fields(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
