"""Recorded voices of the demo corpus.

The Asterisk "core sounds" prompt voices (``asterisk-core-sounds-{en,es,fr,it,ru}-wav``): Allison Smith (en
and es, one speaker label), June Wallack (fr), Carlo Flora (it) and a female Russian voice. They are held out
for evaluation only (``heldout_real.csv``, ``trials_real.txt``, ``trials_real_crosslang.txt``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .debian import DemoCorpusUnavailable
from .rendering import RenderJob

if TYPE_CHECKING:
    from .config import DemoCorpusConfig

__all__ = ["REAL_CREDITS", "REAL_SPEAKERS", "SPEECH_PACKAGES", "asterisk_jobs", "asterisk_sound_folders"]

#: Debian packages holding the Asterisk prompt voices (``-wav``: 8 kHz PCM).
SPEECH_PACKAGES = {lang: f"asterisk-core-sounds-{lang}-wav" for lang in ("en", "es", "fr", "it", "ru")}

#: The Asterisk voices. Allison Smith recorded both the US-English and the Mexican-Spanish prompts: one speaker.
#: Names and licences as stated in the packages' ``copyright`` files (the Russian voice is credited to its
#: provider, ivrvoice.ru / Maxim Topal, without the speaker's name; the sound folder marks it female).
REAL_SPEAKERS = {
    "en": "allison_smith",
    "es": "allison_smith",
    "fr": "june_wallack",
    "it": "carlo_flora",
    "ru": "ivrvoice_ru_female",
}
REAL_CREDITS = {
    "allison_smith": ("Allison Smith (http://www.theivrvoice.com)", "CC-BY-SA-3.0", "en (en_US), es (es_MX)"),
    "june_wallack": ("June Wallack (http://www.junewallack.com)", "CC-BY-SA-3.0", "fr (fr_CA)"),
    "carlo_flora": ("Carlo Flora (http://www.carloflora.com)", "CC-BY-3.0", "it (it_IT)"),
    "ivrvoice_ru_female": ("provided by Maxim Topal, http://www.ivrvoice.ru (female voice)", "CC-BY-3.0", "ru (ru_RU)"),
}


def asterisk_sound_folders(folders: dict[str, Path]) -> dict[str, Path]:
    """``{language: .../usr/share/asterisk/sounds/<lang>_<voice>}`` of the unpacked core-sounds packages."""
    sounds = {}
    for lang, pkg in SPEECH_PACKAGES.items():
        found = sorted(folders[pkg].glob(f"usr/share/asterisk/sounds/{lang}_*"))
        if not found:
            raise DemoCorpusUnavailable(f"{folders[pkg]}: no usr/share/asterisk/sounds/{lang}_* folder")
        sounds[lang] = found[0]
    return sounds


def asterisk_jobs(sounds: dict[str, Path], transcripts: dict[str, dict[str, str]], cfg: DemoCorpusConfig,
                  rng: np.random.Generator) -> list[tuple[RenderJob, str, str]]:  # fmt: skip
    """(job, speaker, language) for the held-out Asterisk recordings: prompts with spoken words (per the
    transcript: no tones or silence files) lasting ``real_min_seconds`` to ``real_max_seconds``."""
    from ...data.audio import AudioError, audio_info

    jobs = []
    for lang in sorted(sounds):
        folder = sounds[lang]
        candidates = []
        for path in sorted(folder.rglob("*.wav")):
            if path.relative_to(folder).with_suffix("").as_posix() not in transcripts[lang]:
                continue
            try:
                seconds = audio_info(path).duration
            except AudioError:  # e.g. the empty ru/is.wav
                continue
            if cfg.real_min_seconds <= seconds <= cfg.real_max_seconds:
                candidates.append(path)
        if len(candidates) < cfg.real_utterances_per_language:
            raise DemoCorpusUnavailable(
                f"{folder}: only {len(candidates)} prompts of {cfg.real_min_seconds}-{cfg.real_max_seconds} s"
            )
        chosen = sorted(rng.choice(len(candidates), cfg.real_utterances_per_language, replace=False))
        speaker = REAL_SPEAKERS[lang]
        for i in chosen:
            src = candidates[i]
            stem = str(src.relative_to(folder).with_suffix("")).replace(os.sep, "-")
            out = f"wav/real/{speaker}/{lang}_{stem}.wav"
            jobs.append((RenderJob(out, "file", float(rng.uniform(-12.0, -1.0)), source=str(src)), speaker, lang))
    return jobs
