"""Recorded voices of the demo corpus.

**The Asterisk core voices** (``asterisk-core-sounds-{en,es,fr,it,ru}-wav``): Allison Smith (en and es, one
speaker label), June Wallack (fr), Carlo Flora (it) and a female Russian voice. Held out for evaluation only:
``heldout_real.csv``, ``trials_real.txt``, ``trials_real_crosslang.txt``.

**The verified voices** of six more packages (:data:`VERIFIED_PACKAGES`): single words recorded by KDE
volunteers for KTuberling in 23 languages (``ktuberling-data``), the Czech dubbing of Fish Fillets NG
(``fillets-ng-data-cs``), three Asterisk prompt sets (July E. Jiménez, es-CO; Armelle Desjardins, fr; Paola
Dal Zot, it) and the ALSA speaker-test voice (``alsa-utils``, ``usr/share/sounds/alsa``). The table
``real_voices.csv`` beside this module (``package,path,speaker,split``, the path relative to the package's
sound folder) lists every file the builder uses, with its speaker label and split:

* ``heldout``: 25 speakers (20 KTuberling speakers, the two main Fillets actors, July Jiménez, Armelle
  Desjardins, the ALSA voice) -> ``heldout_real_new.csv``, ``trials_real_new.txt`` and, with the held-out
  synthetic voices, ``trials_mixed.txt``;
* ``train``: 48 labels (KTuberling ca / fr / uk / lt / nn / wa speakers, the other Fillets characters, Paola
  Dal Zot) -> ``train.csv`` with ``source=real``. The labels there only score pseudo-label clusters.

The table comes from an analysis that is not part of the package. Speaker labels follow the recording
sessions (KTuberling: the game theme from ``<lang>.soundtheme`` plus sampling rate and channels; Fillets: the
character code in the file name; one voice per prompt set) and were checked with a supervised speaker encoder,
used only as an analysis tool, and with F0. Duplicates (same decoded PCM, or near-identical audio), non-speech,
the traces of two voices too small to use, and the Fillets characters that sound as close to a held-out actor
as a same-actor pair were dropped. Held-out Fillets and prompt lines outside 2.5-8 s (a reserve never used for
anything) are not listed. Speakers whose identity could not be settled (possibly one volunteer in several
languages) all sit on the held-out side; ambiguous ones (ca, uk, the minor Fillets characters) in training.

Utterances (:func:`plan_verified_voices`): words (KTuberling, ALSA; and training lines shorter than
``join_below_seconds``) are trimmed, brought to one level, shuffled (seeded, per speaker) and joined with
``joined_gap_seconds`` of silence into pseudo-utterances of at least ``joined_min_seconds``; held-out Fillets /
prompt lines of ``line_min_seconds``-``line_max_seconds`` are single utterances; at most
``real_new_per_speaker`` held-out utterances per speaker. Then the telephone band and a random level, like
every other file.
"""

from __future__ import annotations

import csv
import math
import os
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .debian import DemoCorpusUnavailable
from .rendering import RenderJob, process_pool
from .signal import SAMPLING_RATE, read_part

if TYPE_CHECKING:
    from .config import DemoCorpusConfig

__all__ = [
    "REAL_CREDITS",
    "REAL_SPEAKERS",
    "SPEECH_PACKAGES",
    "TABLE",
    "VERIFIED_CREDITS",
    "VERIFIED_PACKAGES",
    "LabelledFile",
    "RecordedUtterance",
    "asterisk_jobs",
    "asterisk_sound_folders",
    "plan_verified_voices",
    "pseudo_utterances",
    "quick_subset",
    "read_table",
]

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

#: The packages of the verified voices -> the folder (inside the unpacked package) the table's paths start in.
VERIFIED_PACKAGES = {
    "ktuberling-data": "usr/share/ktuberling/sounds",
    "fillets-ng-data-cs": "usr/share/games/fillets-ng/sound",
    "asterisk-prompt-es-co": "usr/share/asterisk/sounds/es",
    "asterisk-prompt-fr-armelle": "usr/share/asterisk/sounds/fr",
    "asterisk-prompt-it-menardi-wav": "usr/share/asterisk/sounds/it_IT_f_Menardi",
    "alsa-utils": "usr/share/sounds/alsa",
}
#: The versions the table was verified against (Debian 12). Another version is used if it holds every file.
VERIFIED_VERSIONS = {
    "ktuberling-data": "4:22.12.3-1",
    "fillets-ng-data-cs": "1.0.1-1.1",
    "asterisk-prompt-es-co": "0.20070403-2.1",
    "asterisk-prompt-fr-armelle": "20070613-2.2",
    "asterisk-prompt-it-menardi-wav": "1:1.4.22+mm20110907-3.1",
    "alsa-utils": "1.2.8-1",
}
#: package -> the ``source`` column of ``heldout_real_new.csv``.
SOURCES = {
    "ktuberling-data": "ktuberling",
    "fillets-ng-data-cs": "fillets-cs",
    "asterisk-prompt-es-co": "asterisk-prompt",
    "asterisk-prompt-fr-armelle": "asterisk-prompt",
    "asterisk-prompt-it-menardi-wav": "asterisk-prompt",
    "alsa-utils": "alsa",
}
#: Language of each package's voice; KTuberling's is in the speaker label (``kt_<language>[_<n>]``).
_LANGUAGES = {
    "fillets-ng-data-cs": "cs",
    "asterisk-prompt-es-co": "es",
    "asterisk-prompt-fr-armelle": "fr",
    "asterisk-prompt-it-menardi-wav": "it",
    "alsa-utils": "en",
}
#: Sources of single words: their utterances are always joined words.
WORD_SOURCES = ("ktuberling", "alsa")
#: Credits and licences as the packages' ``copyright`` (and ``LEEME``) files state them: (what, by whom, licence).
VERIFIED_CREDITS = {
    "ktuberling-data": (
        "KTuberling (KDE) sound themes: single words, one folder per language, recorded by volunteers",
        "no voice is named in the package; copyright 2007-2017 Albert Astals Cid, 2000 KDE Team and others",
        "GPL-2+",
    ),
    "fillets-ng-data-cs": (
        "Fish Fillets NG, Czech dialogue",
        "voice actors not named; upstream authors Ivo and Pavel Danihelka, ALTAR interactive and translators",
        "GPL-2",
    ),
    "asterisk-prompt-es-co": (
        "Asterisk prompts in Spanish with a neutral Colombian accent",
        "recorded by Avatar Ltda. with the voice of July E. Jiménez; copyright 2006 Avatar Ltda.",
        "GPL-2",
    ),
    "asterisk-prompt-fr-armelle": (
        "Asterisk prompts in French",
        "voice actor Armelle Desjardins; copyright 2006 Michel Gutierrez",
        "BSD-style (redistribution with or without modification, keeping the notice and disclaimer)",
    ),
    "asterisk-prompt-it-menardi-wav": (
        "Asterisk prompts in Italian",
        "the sound files were made by Marco Menardi and his wife, Paola Dal Zot (the voice), "
        "http://www.voip.ammdomus.it; the English text they translate is copyright Digium",
        "CC-BY-SA-3.0-IT (Attribuzione - Condividi allo stesso modo 3.0 Italia)",
    ),
    "alsa-utils": (
        "the ALSA speaker-test voice (usr/share/sounds/alsa: Front_Left, ..., Side_Right)",
        "voice not named; copyright 1998-2022 Jaroslav Kysela and others",
        "GPL-2",
    ),
}

TABLE = Path(__file__).with_name("real_voices.csv")
_TABLE_HEADER = ["package", "path", "speaker", "split"]
SPLITS = ("train", "heldout")


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


# ----------------------------------------------------------------------------------------------------------
# The verified voices
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelledFile:
    """One row of ``real_voices.csv``."""

    package: str
    path: str
    """Relative to the package's sound folder, :data:`VERIFIED_PACKAGES` ``[package]``."""
    speaker: str
    split: str

    @property
    def source(self) -> str:
        return SOURCES[self.package]

    @property
    def language(self) -> str:
        return self.speaker.split("_")[1] if self.package == "ktuberling-data" else _LANGUAGES[self.package]

    @property
    def stem(self) -> str:
        """The path without extension, ``/`` as ``-``: a file name unique within the package."""
        return Path(self.path).with_suffix("").as_posix().replace("/", "-")

    def location(self, folders: dict[str, Path]) -> Path:
        """The file in the unpacked package (``folders``: as :func:`~.debian.fetch_debian_packages` returns)."""
        return folders[self.package] / VERIFIED_PACKAGES[self.package] / self.path


def read_table(path: str | os.PathLike = TABLE) -> list[LabelledFile]:
    """The verified voices' table (``package,path,speaker,split``).

    Raises:
        ValueError: another header, an unknown package or split, or a file listed twice.
    """
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames != _TABLE_HEADER:
            raise ValueError(f"{path}: header {reader.fieldnames}, expected {_TABLE_HEADER}")
        rows = [LabelledFile(**row) for row in reader]
    for row in rows:
        if row.package not in VERIFIED_PACKAGES or row.split not in SPLITS:
            raise ValueError(f"{path}: unknown package or split in {row}")
    if len({(r.package, r.path) for r in rows}) != len(rows):
        raise ValueError(f"{path}: a file is listed twice")
    return rows


def package_version(folder: Path) -> str:
    """The version in an unpacked package's folder name (``<package>_<version>_<arch>``, ``%3a`` = ``:``)."""
    parts = folder.name.split("_")
    return parts[1].replace("%3a", ":") if len(parts) >= 3 else "?"


def check_packages(table: Sequence[LabelledFile], folders: dict[str, Path]) -> list[str]:
    """Every file of ``table`` must exist in the unpacked packages; returns notes on versions other than the
    verified ones.

    Raises:
        DemoCorpusUnavailable: files are missing (another package version), naming the first ones.
    """
    missing = [r for r in table if not r.location(folders).is_file()]
    if missing:
        shown = ", ".join(f"{r.package}: {r.path}" for r in missing[:5])
        versions = ", ".join(f"{p} {package_version(folders[p])}" for p in sorted({r.package for r in missing}))
        raise DemoCorpusUnavailable(
            f"{len(missing)} of the {len(table)} files of {TABLE.name} are missing from the unpacked packages "
            f"({shown}{' ...' if len(missing) > 5 else ''}). The table was verified against {VERIFIED_VERSIONS}; "
            f"found {versions}. Put the verified .deb files into the cache folder (--cache)."
        )
    return [
        f"{p}: version {package_version(folders[p])}, the table was verified against {VERIFIED_VERSIONS[p]}"
        for p in sorted({r.package for r in table})
        if package_version(folders[p]) != VERIFIED_VERSIONS[p]
    ]


def quick_subset(table: Sequence[LabelledFile], files_per_speaker: int, rng: np.random.Generator) -> list[LabelledFile]:
    """For tests: per split and source, the speaker with the most files, and ``files_per_speaker`` of them."""
    speakers: dict[tuple[str, str], dict[str, list[LabelledFile]]] = defaultdict(lambda: defaultdict(list))
    for row in table:
        speakers[row.split, row.source][row.speaker].append(row)
    chosen = []
    for key in sorted(speakers):
        files = max(sorted(speakers[key].items()), key=lambda item: len(item[1]))[1]
        pick = rng.choice(len(files), min(files_per_speaker, len(files)), replace=False)
        chosen += [files[i] for i in sorted(pick)]
    return chosen


def pseudo_utterances(lengths: Sequence[int], rng: np.random.Generator, min_length: int, gap: int) -> list[list[int]]:
    """Group recordings into joined utterances of at least ``min_length`` samples.

    The recordings (``lengths`` in samples) are taken in a random order and cut into consecutive groups as soon
    as a group, with ``gap`` samples between consecutive members, is long enough; a remainder that is too short
    joins the last group. Only when all of them together are shorter than ``min_length`` is the one group short.

    Returns:
        groups of indices into ``lengths``, each in joining order; every index exactly once.
    """
    groups: list[list[int]] = []
    current: list[int] = []
    total = 0
    for i in rng.permutation(len(lengths)):
        total += int(lengths[i]) + (gap if current else 0)
        current.append(int(i))
        if total >= min_length:
            groups.append(current)
            current, total = [], 0
    if current:
        if groups:
            groups[-1].extend(current)
        else:
            groups.append(current)
    return groups


@dataclass(frozen=True)
class RecordedUtterance:
    """One planned output file of the verified voices."""

    job: RenderJob
    speaker: str
    split: str
    language: str
    source: str
    members: tuple[LabelledFile, ...]
    seconds: float
    """Planned length: the trimmed members and the gaps between them (the rendered file matches it to within a
    sample or two of resampling)."""


def _part_length(path: str) -> int:
    return len(read_part(path))


def measure_parts(paths: Sequence[str], workers: int = 1) -> list[int]:
    """Samples at 16 kHz of each recording after :func:`~.signal.read_part` (decoded, mono, trimmed)."""
    if workers <= 1 or len(paths) < 64:
        return [_part_length(p) for p in paths]
    with process_pool(workers) as pool:
        return list(pool.map(_part_length, paths, chunksize=32))


def plan_verified_voices(
    table: Sequence[LabelledFile], folders: dict[str, Path], cfg: DemoCorpusConfig, rng: np.random.Generator
) -> list[RecordedUtterance]:
    """The held-out and training utterances of the verified voices (see the module docstring).

    ``rng`` gives one seed; each speaker's utterances come from their own generator derived from it, so a
    speaker's utterances do not depend on the other speakers in the table.
    """
    if cfg.real_quick_files:
        table = quick_subset(table, cfg.real_quick_files, rng)
    base = int(rng.integers(2**62))
    paths = [str(row.location(folders)) for row in table]
    lengths = dict(zip(table, measure_parts(paths, cfg.workers)))
    groups: dict[tuple[str, str], list[LabelledFile]] = defaultdict(list)
    for row in table:
        groups[row.split, row.speaker].append(row)
    gap = int(round(cfg.joined_gap_seconds * SAMPLING_RATE))
    planned = []
    for (split, speaker), files in sorted(groups.items()):
        speaker_rng = np.random.default_rng([base, zlib.crc32(f"{split}/{speaker}".encode())])
        for name, members in _speaker_units(split, files, lengths, cfg, speaker_rng, gap):
            seconds = (sum(lengths[m] for m in members) + gap * (len(members) - 1)) / SAMPLING_RATE
            folder = "real_new" if split == "heldout" else "real_train"
            job = RenderJob(
                f"wav/{folder}/{speaker}/{name}.wav",
                "joined",
                float(speaker_rng.uniform(-12.0, -1.0)),
                sources=tuple(str(m.location(folders)) for m in members),
                gap_s=cfg.joined_gap_seconds,
            )
            planned.append(RecordedUtterance(job, speaker, split, files[0].language, files[0].source, members, seconds))
    return planned


def _speaker_units(
    split: str,
    files: list[LabelledFile],
    lengths: dict[LabelledFile, int],
    cfg: DemoCorpusConfig,
    rng: np.random.Generator,
    gap: int,
) -> list[tuple[str, tuple[LabelledFile, ...]]]:
    """(file name, members) of one speaker's utterances; ``gap`` in samples."""
    min_length = math.ceil(cfg.joined_min_seconds * SAMPLING_RATE)

    def joined(rows: list[LabelledFile]) -> list[tuple[LabelledFile, ...]]:
        return [tuple(rows[i] for i in g) for g in pseudo_utterances([lengths[r] for r in rows], rng, min_length, gap)]

    words = files[0].source in WORD_SOURCES
    if split == "heldout":
        if words:
            units = [(f"pu{i:02d}", m) for i, m in enumerate(joined(files))]
        else:
            low, high = cfg.line_min_seconds * SAMPLING_RATE, cfg.line_max_seconds * SAMPLING_RATE
            units = [(f.stem, (f,)) for f in files if low <= lengths[f] <= high]
        if len(units) > cfg.real_new_per_speaker:
            units = [units[i] for i in sorted(rng.choice(len(units), cfg.real_new_per_speaker, replace=False))]
            if words:
                units = [(f"pu{i:02d}", m) for i, (_, m) in enumerate(units)]
        return units
    if words:
        return [(f"pu{i:03d}", m) for i, m in enumerate(joined(files))]
    short = [f for f in files if lengths[f] < cfg.join_below_seconds * SAMPLING_RATE]
    lines = [(f.stem, (f,)) for f in files if lengths[f] >= cfg.join_below_seconds * SAMPLING_RATE]
    return lines + [(f"pu{i:03d}", m) for i, m in enumerate(joined(short))]
