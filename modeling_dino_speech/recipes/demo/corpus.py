"""The demo corpus: a small multi-speaker speech corpus assembled offline from Debian packages.

``dino-speech demo-corpus --out data/demo [--cache DIR] [--quick]``

What it builds (all paths in the CSVs and trial lists are relative to ``--out``):

* real recorded speech, the Asterisk IVR prompts (``asterisk-core-sounds-{en,es,fr,it,ru}-wav``): four real
  voices, Allison Smith (en and es, one speaker label), June Wallack (fr), Carlo Flora (it) and one female
  Russian voice. They are held out for evaluation only: ``heldout_real.csv``, ``trials_real.txt`` and
  ``trials_real_crosslang.txt`` (target trials = Allison en vs Allison es).
* synthetic speech from espeak-ng (languages x shipped voice variants x pitch / rate, plus randomly generated
  vocal tracts written as espeak-ng variant files) and flite (kal16, awb, slt, rms): the unlabeled training pool
  ``train.csv`` and held-out synthetic voices ``heldout_synth.csv`` / ``trials_synth.txt`` whose speakers do
  not occur in training.
* a "prosody style" task, a synthetic STAND-IN for emotion corpora (IEMOCAP / CREMA-D / MSP-Podcast):
  neutral / excited / sad / angry rendered with espeak-ng pitch level, pitch range, rate, voice quality and
  amplitude, split by voice (``prosody_train.csv`` / ``prosody_test.csv``).
* music for augmentation in MUSAN's layout: ``musan_standin/music/asterisk-moh/*.wav``.

Every file is mono 16-bit PCM at 16 kHz that went through 8 kHz (the real voices are 8 kHz telephone audio:
without the same band limit, bandwidth alone would tell synthetic from real speakers), lightly trimmed of
leading / trailing silence and peak-normalised to a random level.

The build is deterministic given ``--seed``, cached (the ``.deb`` files live in ``~/.cache/dino-speech/debs``)
and idempotent: a complete corpus with the same settings is left untouched, and a build killed half-way is
resumed (every audio file is written atomically, so a file that exists is complete).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import gzip
import hashlib
import itertools
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

__all__ = [
    "BUILDER_VERSION",
    "DemoCorpusConfig",
    "DemoCorpusUnavailable",
    "SpeechTools",
    "build_demo_corpus",
    "corpus_is_complete",
    "default_cache_dir",
    "fetch_debian_packages",
    "find_speech_tools",
    "main",
    "telephone_band",
]

#: Bump when the output of the builder changes for the same settings (it invalidates existing corpora).
BUILDER_VERSION = "1.1"

SAMPLING_RATE = 16000
TELEPHONE_RATE = 8000

#: Debian packages holding the real voices and the music-on-hold (``-wav``), and the prompt transcripts.
SPEECH_PACKAGES = {lang: f"asterisk-core-sounds-{lang}-wav" for lang in ("en", "es", "fr", "it", "ru")}
TRANSCRIPT_PACKAGES = {lang: f"asterisk-core-sounds-{lang}" for lang in ("en", "es", "fr", "it", "ru")}
MUSIC_PACKAGE = "asterisk-moh-opsound-wav"

#: The real voices. Allison Smith recorded both the US-English and the Mexican-Spanish prompts: one speaker.
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
MUSIC_CREDITS = [
    ("macroform-cold_day, macroform-robot_dity, macroform-the_simplicity", "Paul Shuler (Macroform), 2009"),
    ("manolo_camp-morning_coffee", "Manolo Camp, 2009"),
    ("reno_project-system", "Reno Project, 2008"),
]

#: espeak-ng languages used for synthetic voices -> language of the text they read. Voices of languages without
#: an Asterisk transcript read a related language's text, i.e. speak it with their own accent.
ESPEAK_LANGUAGES = {
    "en-us": "en", "en-gb": "en", "en-gb-scotland": "en", "en-gb-x-rp": "en", "en-029": "en", "en-us-nyc": "en",
    "es": "es", "es-419": "es", "fr-fr": "fr", "fr-be": "fr", "fr-ch": "fr", "it": "it", "ru": "ru",
    "uk": "ru", "bg": "ru", "pt": "es", "pt-br": "es", "ca": "es", "ro": "it", "eo": "es", "la": "it",
    "de": "en", "nl": "en", "sv": "en", "da": "en", "nb": "en", "pl": "en", "cs": "en", "sk": "en",
    "hr": "en", "hu": "en", "fi": "en", "et": "en", "tr": "en", "id": "en", "sw": "en", "cy": "en",
}  # fmt: skip
#: Shipped espeak-ng variants left out: unnatural on purpose (whisper, test voices, effects).
_EXCLUDED_VARIANTS = {"fast", "whisper", "whisperf", "Demonic", "announcer", "UniRobot", "anikaRobot", "Mr serious"}
#: flite voices: kal16, awb and slt join the training pool, rms is held out. (``kal`` is the same speaker as
#: ``kal16`` at 8 kHz, and ``awb_time`` is a limited-domain voice that only speaks clock times.)
FLITE_TRAIN_VOICES = ("kal16", "awb", "slt")
FLITE_HELDOUT_VOICES = ("rms",)

PROSODY_LABELS = ("neutral", "excited", "sad", "angry")


class DemoCorpusUnavailable(RuntimeError):
    """The corpus cannot be built on this machine (no apt / dpkg, no network and no cached packages, or the
    speech synthesisers are missing and cannot be fetched). The message says what to install."""


# ----------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------


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

    @classmethod
    def quick_preset(cls, **overrides) -> DemoCorpusConfig:
        """The ``--quick`` subset: seconds to build, enough structure for every test."""
        small = dict(
            quick=True, train_espeak_voices=5, train_utterances=3, heldout_espeak_voices=2, heldout_utterances=3,
            real_utterances_per_language=3, trials_real=40, trials_crosslang=20, trials_synth=30,
            prosody_train_voices=2, prosody_test_voices=2, prosody_utterances=2, music_max_seconds=10.0,
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


def default_cache_dir() -> Path:
    """``$DINO_SPEECH_DEB_CACHE``, else ``$XDG_CACHE_HOME/dino-speech/debs``, else ``~/.cache/dino-speech/debs``."""
    if os.environ.get("DINO_SPEECH_DEB_CACHE"):
        return Path(os.environ["DINO_SPEECH_DEB_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "dino-speech" / "debs"


# ----------------------------------------------------------------------------------------------------------
# Debian packages, fetched without root
# ----------------------------------------------------------------------------------------------------------

_INSTALL_HINT = (
    "The demo corpus is assembled from Debian/Ubuntu packages and synthesised with espeak-ng and flite.\n"
    "  * with root:    sudo apt-get update && sudo apt-get install -y espeak-ng flite\n"
    "  * without root: the builder fetches them itself with `apt-get download` + `dpkg -x` into the cache\n"
    "                  folder (--cache) and runs them with LD_LIBRARY_PATH / --path set; this needs apt-get,\n"
    "                  dpkg-deb and access to a Debian/Ubuntu mirror (or the .deb files already in --cache).\n"
    "  * the speech packages (asterisk-core-sounds-{en,es,fr,it,ru}[-wav], asterisk-moh-opsound-wav) are always\n"
    "    fetched with `apt-get download`; copy their .deb files into --cache on a machine without a mirror."
)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock, so two builders (tests + demo) sharing a cache or an output do not collide."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            import fcntl
        except ImportError:  # non-POSIX: no locking, builds there must not run concurrently
            yield
            return
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _run(cmd: Sequence[str], cwd: Path | None = None, env: dict | None = None, what: str = "") -> str:
    try:
        proc = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True)
    except FileNotFoundError:
        raise DemoCorpusUnavailable(f"`{cmd[0]}` is not installed ({what or 'needed'}).\n{_INSTALL_HINT}") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-2000:]
        raise DemoCorpusUnavailable(
            f"`{' '.join(cmd)}` failed with exit code {proc.returncode}: {tail}\n{_INSTALL_HINT}"
        )
    return proc.stdout


def _cached_deb(cache: Path, package: str) -> Path | None:
    found = sorted(cache.glob(f"{package}_*.deb"))
    return found[-1] if found else None


def _download_debs(packages: Sequence[str], cache: Path) -> None:
    """``apt-get download`` the packages not yet in ``cache`` (into a scratch folder, then moved: a killed
    download never leaves a partial ``.deb`` under its final name)."""
    missing = [p for p in packages if _cached_deb(cache, p) is None]
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise DemoCorpusUnavailable(
            f"Debian packages {', '.join(missing)} are not in {cache} and apt-get is not available to fetch them.\n"
            + _INSTALL_HINT
        )
    scratch = Path(tempfile.mkdtemp(prefix=".download-", dir=cache))
    try:
        # apt-get download needs no root; as root it warns that the _apt user cannot write here (harmless).
        try:
            _run(["apt-get", "download", *missing], cwd=scratch, what="fetching Debian packages")
        except DemoCorpusUnavailable as err:
            raise DemoCorpusUnavailable(
                f"{err}\nIf apt-get reports 'Unable to locate package', run `apt-get update` first (as root)."
            ) from None
        for deb in scratch.glob("*.deb"):
            os.replace(deb, cache / deb.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    still = [p for p in missing if _cached_deb(cache, p) is None]
    if still:
        raise DemoCorpusUnavailable(f"apt-get download did not produce {', '.join(still)} in {cache}.\n{_INSTALL_HINT}")


def _extract_deb(deb: Path, dest: Path) -> None:
    """``dpkg -x`` into ``dest`` through a temporary folder renamed at the end (atomic)."""
    if shutil.which("dpkg-deb") is None and shutil.which("dpkg") is None:
        raise DemoCorpusUnavailable(f"dpkg is needed to unpack {deb}.\n{_INSTALL_HINT}")
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tool = ["dpkg-deb", "-x"] if shutil.which("dpkg-deb") else ["dpkg", "-x"]
    _run([*tool, str(deb), str(tmp)], what="unpacking Debian packages")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)


def fetch_debian_packages(packages: Sequence[str], cache: str | os.PathLike | None = None) -> dict[str, Path]:
    """Download (once) and unpack (once) Debian packages without root.

    Returns:
        ``{package: folder}``, each folder holding the package's files as ``dpkg -x`` lays them out
        (``<folder>/usr/share/...``).

    Raises:
        DemoCorpusUnavailable: apt-get / dpkg missing, or the download failed; the message says what to do.
    """
    cache = Path(cache) if cache is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with _file_lock(cache / ".lock"):
        _download_debs(packages, cache)
        out = {}
        for package in packages:
            deb = _cached_deb(cache, package)
            dest = cache / "extracted" / deb.stem
            if not (dest / ".complete").exists():
                _extract_deb(deb, dest)
                (dest / ".complete").write_text(deb.name + "\n")
            out[package] = dest
    return out


# ----------------------------------------------------------------------------------------------------------
# Speech synthesisers: system binaries, or the Debian packages unpacked without root
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpeechTools:
    """How to run espeak-ng and flite. ``env`` is None for system binaries, else the environment
    (LD_LIBRARY_PATH) that makes the unpacked ones run."""

    espeak: str
    flite: str
    espeak_data: str
    """The ``espeak-ng-data`` folder the binary should use."""
    env: dict | None = None
    espeak_version: str = ""
    flite_voices: tuple[str, ...] = ()
    source: str = "system"


def _installed_packages() -> dict[str, str]:
    """``{package: source package}`` of the installed packages."""
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev} ${source:Package}\n"],
            capture_output=True,
            text=True,
        ).stdout
    except FileNotFoundError:
        return {}
    fields = [line.split() for line in out.splitlines()]
    return {f[0]: f[2] if len(f) > 2 else f[0] for f in fields if len(f) > 1 and f[1] == "ii"}


def _dependency_closure(roots: Sequence[str], refetch_sources: Iterable[str] = ()) -> list[str]:
    """The packages (roots and their recursive Depends / Pre-Depends) that are not installed, plus the
    installed ones built from ``refetch_sources`` (to run a private copy of an installed tool).

    An OR-group or a virtual package counts as satisfied when any of its alternatives / providers is
    installed; otherwise its first alternative is taken.
    """
    refetch = set(refetch_sources)
    installed = {p for p, src in _installed_packages().items() if src not in refetch}
    wanted: list[str] = []
    queue = list(roots)
    seen: set[str] = set()
    while queue:
        batch = [p for p in queue if p not in seen]
        queue = []
        if not batch:
            break
        seen.update(batch)
        text = _run(
            ["apt-cache", "depends", "--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks",
             "--no-replaces", "--no-enhances", *batch],
            what="resolving dependencies",
        )  # fmt: skip
        for package, groups in _parse_apt_depends(text).items():
            if package not in installed and package not in wanted:
                wanted.append(package)
            for group in groups:  # one group = alternatives, each alternative = [name, *providers]
                options = [name for alt in group for name in alt]
                if any(name in installed for name in options):
                    continue
                first = group[0]
                choice = first[0] if not first[0].startswith("<") else (first[1] if len(first) > 1 else None)
                if choice and choice not in seen:
                    queue.append(choice)
    return wanted


def _parse_apt_depends(text: str) -> dict[str, list[list[list[str]]]]:
    result: dict[str, list[list[list[str]]]] = {}
    current: list[list[list[str]]] | None = None
    pending_or = False
    for line in text.splitlines():
        if not line.startswith(" "):
            current = result.setdefault(line.strip(), [])
            pending_or = False
            continue
        match = re.match(r"^ (\|| )(Pre)?Depends: (\S+)", line)
        if match and current is not None:
            alt = [match.group(3)]
            if pending_or and current:
                current[-1].append(alt)
            else:
                current.append([alt])
            pending_or = match.group(1) == "|"
        elif line.startswith("    ") and current:
            current[-1][-1].append(line.strip())  # a provider of the virtual package just listed
        else:
            pending_or = False
    return result


def _local_tools(cache: Path, need: Sequence[str]) -> tuple[Path, dict]:
    """Fetch ``need`` (espeak-ng and/or flite, with their own libraries and data) plus any missing system
    library as .deb files and unpack them all into one prefix. Returns (prefix, environment)."""
    tools_dir = cache / "tools"
    root = tools_dir / ("root-" + "-".join(sorted(need)))
    tools_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(cache / ".lock"):
        if not (root / ".complete").exists():
            if shutil.which("apt-cache") is None or shutil.which("apt-get") is None:
                raise DemoCorpusUnavailable(
                    f"{' and '.join(need)} not found and apt is not available.\n{_INSTALL_HINT}"
                )
            # The tools' own source packages are always fetched (espeak-ng -> libespeak-ng1, espeak-ng-data),
            # so that "local" is a private copy even where the tools are also installed.
            packages = _dependency_closure(need, refetch_sources=need)
            _download_debs(packages, tools_dir)
            tmp = root.with_name(root.name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            for package in packages:
                _run(["dpkg-deb", "-x", str(_cached_deb(tools_dir, package)), str(tmp)], what="unpacking")
            (tmp / ".complete").write_text("\n".join(packages) + "\n")
            shutil.rmtree(root, ignore_errors=True)
            os.replace(tmp, root)
    libdirs = sorted({str(p.parent) for p in root.glob("usr/lib/**/*.so*")})
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join([*libdirs, env.get("LD_LIBRARY_PATH", "")]).strip(os.pathsep)
    return root, env


def find_speech_tools(cache: str | os.PathLike | None = None, mode: str = "auto") -> SpeechTools:
    """Locate espeak-ng and flite.

    Args:
        cache: the .deb cache (see :func:`default_cache_dir`), used when the tools are fetched without root.
        mode: ``auto`` (system binaries when on PATH, otherwise fetch), ``system`` or ``local`` (always the
            unpacked Debian packages, e.g. to test that path).

    Raises:
        DemoCorpusUnavailable: with installation instructions.
    """
    if mode not in ("auto", "system", "local"):
        raise ValueError(f"tools mode must be auto, system or local, got {mode!r}")
    cache = Path(cache) if cache is not None else default_cache_dir()
    system = {name: shutil.which(name) for name in ("espeak-ng", "flite")}
    if mode == "local":
        need = ["espeak-ng", "flite"]
    else:
        need = [name for name, path in system.items() if path is None]
    if need and mode == "system":
        raise DemoCorpusUnavailable(f"{' and '.join(need)} not found on PATH.\n{_INSTALL_HINT}")
    env = None
    paths = dict(system)
    if need:
        root, env = _local_tools(cache, need)
        for name in need:
            paths[name] = str(root / "usr" / "bin" / name)
    espeak_out = _run([paths["espeak-ng"], "--version"], env=env, what="espeak-ng")
    if "espeak-ng" in need:
        data = next(iter(sorted(Path(paths["espeak-ng"]).parents[1].glob("lib/**/espeak-ng-data/phontab"))), None)
        if data is None:
            raise DemoCorpusUnavailable(f"no espeak-ng-data found under {Path(paths['espeak-ng']).parents[1]}")
        espeak_data = str(data.parent)
    else:
        match = re.search(r"Data at:\s*(\S+)", espeak_out)
        if not match:
            raise DemoCorpusUnavailable(f"cannot find espeak-ng's data folder in `espeak-ng --version`: {espeak_out!r}")
        espeak_data = match.group(1)
    voices_out = _run([paths["flite"], "-lv"], env=env, what="flite")
    voices = tuple(voices_out.split(":", 1)[-1].split())
    missing = [v for v in (*FLITE_TRAIN_VOICES, *FLITE_HELDOUT_VOICES) if v not in voices]
    if missing:
        raise DemoCorpusUnavailable(f"flite lacks the voices {missing} (it has {voices}).\n{_INSTALL_HINT}")
    version = espeak_out.strip().split("Data at")[0].strip()
    source = "system" if not need else ("local: " + ", ".join(need))
    return SpeechTools(paths["espeak-ng"], paths["flite"], espeak_data, env, version, voices, source)


#: espeak-ng lists at most 349 voices (languages + variants + mbrola voices) and silently drops the rest, so the
#: variants are spread over several data folders with this many each next to the ~130 languages.
_VARIANTS_PER_OVERLAY = 150


def _espeak_overlays(
    tools: SpeechTools, folder: Path, used: Sequence[str], generated: dict[str, str]
) -> dict[str, Path]:
    """``espeak-ng-data`` folders that link everything (except mbrola voices) to the real one and hold, in
    ``voices/!v``, the shipped and generated voice variants in ``used``.

    Returns:
        ``{variant: folder to pass as espeak-ng --path}``.
    """
    src = Path(tools.espeak_data)
    shutil.rmtree(folder, ignore_errors=True)
    names = sorted(set(used))
    where: dict[str, Path] = {}
    for chunk in range(0, max(len(names), 1), _VARIANTS_PER_OVERLAY):
        root = folder / str(chunk // _VARIANTS_PER_OVERLAY)
        data = root / "espeak-ng-data"
        (data / "voices" / "!v").mkdir(parents=True)
        for entry in src.iterdir():
            if entry.name != "voices":
                os.symlink(entry, data / entry.name)
        for name in names[chunk : chunk + _VARIANTS_PER_OVERLAY]:
            target = data / "voices" / "!v" / name
            if name in generated:
                target.write_text(generated[name])
            else:
                os.symlink(src / "voices" / "!v" / name, target)
            where[name] = root
    return where


def _shipped_variants(tools: SpeechTools) -> list[str]:
    folder = Path(tools.espeak_data) / "voices" / "!v"
    names = [p.name for p in folder.iterdir() if p.is_file() and " " not in p.name]
    return sorted(n for n in names if n not in _EXCLUDED_VARIANTS)


# ----------------------------------------------------------------------------------------------------------
# Signal processing shared by every file
# ----------------------------------------------------------------------------------------------------------


def telephone_band(waveform: np.ndarray, sampling_rate: int) -> np.ndarray:
    """Resample ``(N,)`` float32 audio to 8 kHz and back to 16 kHz: the band above ~3.7 kHz is removed.

    Returns:
        ``(M,)`` float32 at 16 kHz, ``M = round(N * 16000 / sampling_rate)`` up to the resampler's rounding.
    """
    from ...resampling import resample

    return resample(resample(waveform, sampling_rate, TELEPHONE_RATE), TELEPHONE_RATE, SAMPLING_RATE)


def trim_silence(
    waveform: np.ndarray, sampling_rate: int, threshold_db: float = -40.0, margin_s: float = 0.1
) -> np.ndarray:
    """Cut leading / trailing frames quieter than ``threshold_db`` below the loudest 10 ms frame, keeping
    ``margin_s`` of context on each side (a light trim: pauses inside the utterance stay)."""
    hop = max(1, int(0.01 * sampling_rate))
    n = len(waveform) // hop
    if n < 3:
        return waveform
    frames = waveform[: n * hop].reshape(n, hop).astype(np.float64)
    rms = np.sqrt(np.mean(frames**2, axis=1) + 1e-20)
    loud = np.flatnonzero(rms >= rms.max() * 10.0 ** (threshold_db / 20.0))
    margin = int(margin_s * sampling_rate)
    start = max(0, loud[0] * hop - margin)
    stop = min(len(waveform), (loud[-1] + 1) * hop + margin)
    return waveform[start:stop]


def _fit_length(waveform: np.ndarray, max_seconds: float | None) -> np.ndarray:
    if max_seconds is None or len(waveform) <= int(max_seconds * SAMPLING_RATE):
        return waveform
    out = waveform[: int(max_seconds * SAMPLING_RATE)].copy()
    fade = int(0.03 * SAMPLING_RATE)
    out[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return out


def _write_wav_atomic(path: Path, waveform: np.ndarray) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    sf.write(tmp, waveform, SAMPLING_RATE, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)


def _write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------------------
# Rendering jobs (one job = one output file), run in a process pool
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderJob:
    """One output file. ``kind``: ``espeak`` / ``flite`` (synthesise ``text`` with ``args``) or ``file``
    (process the recording ``source``). All randomness (text, jitter, level) is drawn when planning, so the
    result does not depend on which worker runs the job or in which order."""

    out: str
    kind: str
    level_db: float
    args: tuple[str, ...] = ()
    text: str = ""
    variant: str = ""
    """espeak-ng voice variant, used to point the job at the data folder that holds it."""
    more_text: str = ""
    """Read after ``text`` when the utterance came out shorter than ``min_seconds``."""
    min_seconds: float = 0.0
    source: str = ""
    trim: bool = True
    max_seconds: float | None = None


_WORKER: dict = {}


def _init_worker(out_dir: str, tools: SpeechTools | None, scratch: str) -> None:
    import torch

    torch.set_num_threads(1)  # the pool is the parallelism; intra-op threads only fight over 2 cores
    _WORKER.update(out_dir=Path(out_dir), tools=tools, scratch=Path(scratch))


def _synthesise(job: RenderJob) -> tuple[np.ndarray, int]:
    from ...data.audio import AudioError, load_audio

    tools: SpeechTools = _WORKER["tools"]
    work = Path(tempfile.mkdtemp(dir=_WORKER["scratch"]))
    try:
        text_file, wav_file = work / "text.txt", work / "out.wav"
        text_file.write_text(job.text + "\n", encoding="utf-8")
        if job.kind == "espeak":
            cmd = [tools.espeak, "-b", "1", *job.args, "-w", str(wav_file), "-f", str(text_file)]
        else:
            cmd = [tools.flite, *job.args, "-f", str(text_file), "-o", str(wav_file)]
        proc = subprocess.run(cmd, env=tools.env, capture_output=True, text=True)
        if proc.returncode != 0 or not wav_file.exists():
            raise RuntimeError(f"{job.out}: `{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
        try:
            import soundfile as sf

            sr = sf.info(str(wav_file)).samplerate
            return load_audio(wav_file, sampling_rate=None), sr
        except AudioError as err:
            raise RuntimeError(
                f"{job.out}: the synthesiser produced no usable audio for {job.text!r} ({err.problem})"
            ) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _render(job: RenderJob) -> tuple[str, float]:
    """Produce one file; returns (relative path, duration in seconds)."""
    from ...data.audio import load_audio

    if job.kind == "file":
        import soundfile as sf

        wav, sr = load_audio(job.source, sampling_rate=None), sf.info(job.source).samplerate
    else:
        wav, sr = _synthesise(job)
        if job.more_text and len(trim_silence(wav, sr)) < job.min_seconds * sr:
            wav, sr = _synthesise(dataclasses.replace(job, text=f"{job.text} {job.more_text}"))
    if job.trim:
        wav = trim_silence(wav, sr)
    wav = telephone_band(wav, sr)
    wav = _fit_length(wav, job.max_seconds)
    peak = float(np.abs(wav).max())
    if peak < 1e-4:
        raise RuntimeError(f"{job.out}: silent output (peak {peak:.2e}) from {job.source or job.text!r}")
    wav = (wav * (10.0 ** (job.level_db / 20.0) / peak)).astype(np.float32)
    _write_wav_atomic(_WORKER["out_dir"] / job.out, wav)
    return job.out, len(wav) / SAMPLING_RATE


def _run_jobs(
    jobs: list[RenderJob], out_dir: Path, tools: SpeechTools | None, workers: int, log=print
) -> dict[str, float]:
    """Render the jobs whose output is missing; returns {relative path: seconds} for all jobs."""
    import soundfile as sf
    from tqdm.auto import tqdm

    durations: dict[str, float] = {}
    todo: list[RenderJob] = []
    for job in jobs:
        path = out_dir / job.out
        if path.exists():  # written atomically, so an existing file is a finished one (resume)
            durations[job.out] = sf.info(str(path)).frames / SAMPLING_RATE
        else:
            todo.append(job)
    if not todo:
        return durations
    done = len(jobs) - len(todo)
    log(f"Rendering {len(todo)} files with {workers} worker(s)" + (f" ({done} already done)" if done else "") + " ...")
    scratch = Path(tempfile.mkdtemp(prefix="scratch-", dir=out_dir / ".build"))
    init_args = (str(out_dir), tools, str(scratch))
    try:
        progress = tqdm(total=len(todo), desc="demo corpus", unit="file", file=sys.stderr, mininterval=2.0)
        if workers <= 1 or len(todo) < 8:
            import torch

            threads = torch.get_num_threads()
            _init_worker(*init_args)
            try:
                for job in todo:
                    rel, sec = _render(job)
                    durations[rel] = sec
                    progress.update(1)
            finally:
                torch.set_num_threads(threads)
        else:
            from concurrent.futures import ProcessPoolExecutor

            # fork: workers inherit the imported modules instead of re-importing torch/transformers.
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            ctx = multiprocessing.get_context(method)
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=init_args) as pool:
                for rel, sec in pool.map(_render, todo, chunksize=8):
                    durations[rel] = sec
                    progress.update(1)
        progress.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return durations


# ----------------------------------------------------------------------------------------------------------
# Planning: voices, texts, jobs
# ----------------------------------------------------------------------------------------------------------


def _read_transcript(folder: Path, lang: str) -> dict[str, str]:
    """The Asterisk prompt transcript (``core-sounds-<lang>.txt.gz``) as ``{prompt name: spoken text}``, e.g.
    ``{"digits/1": "one", ...}``; bracketed descriptions such as ``[beep]`` removed, prompts without words
    (tones, silence) left out."""
    files = sorted(folder.glob(f"usr/share/doc/*/core-sounds-{lang}.txt*"))
    if not files:
        raise DemoCorpusUnavailable(f"{folder}: no core-sounds-{lang}.txt transcript in the package")
    if files[0].suffix == ".gz":
        with gzip.open(files[0], "rb") as handle:
            raw = handle.read()
    else:
        raw = files[0].read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    entries = {}
    for line in text.splitlines():
        if line.startswith(";") or ":" not in line:
            continue
        key, content = line.split(":", 1)
        # "[beep]", "(3 seconds of silence)": descriptions of prompts that are not speech
        content = " ".join(re.sub(r"\[[^\]]*\]|\([^)]*\)", " ", content).split())
        if any(ch.isalpha() for ch in content) and not key.startswith("silence/"):
            entries[key.strip()] = content
    if len(entries) < 20:
        raise DemoCorpusUnavailable(f"{files[0]}: only {len(entries)} usable prompts")
    return entries


def _sentences(transcript: dict[str, str]) -> list[str]:
    """Sentences of at least two words, in transcript order, for the synthetic voices to read."""
    out = []
    for key in sorted(transcript):
        for sentence in re.split(r"(?<=[.!?])\s+", transcript[key]):
            if len(sentence.split()) >= 2 and not any(ch in sentence for ch in "<>{}\\|_"):
                out.append(sentence)
    return out


def _compose_text(sentences: list[str], n_words: int, rng: np.random.Generator) -> str:
    """Consecutive transcript sentences from a random start, cut to ``n_words`` words."""
    start = int(rng.integers(len(sentences)))
    words: list[str] = []
    i = start
    while len(words) < n_words:
        words.extend(sentences[i % len(sentences)].split())
        i += 1
    text = " ".join(words[:n_words]).rstrip(",;:")
    return text if text[-1] in ".!?" else text + "."


def _generated_variant(name: str, rng: np.random.Generator, gender: str | None = None) -> tuple[str, dict]:
    """A random espeak-ng voice variant: pitch base / top, vocal-tract length (formant frequency scale),
    formant bandwidths and amplitudes, flutter, roughness and breathiness. Returns (file text, parameters)."""
    gender = gender or ("male" if rng.random() < 0.5 else "female")
    if gender == "male":
        base, span, tract = rng.uniform(70, 135), rng.uniform(25, 80), rng.uniform(0.86, 1.03)
    else:
        base, span, tract = rng.uniform(150, 225), rng.uniform(40, 120), rng.uniform(0.98, 1.18)
    params = dict(
        gender=gender, pitch_base=round(base), pitch_top=round(base + span), tract=round(float(tract), 3),
        flutter=int(rng.integers(0, 20)), roughness=int(rng.integers(0, 5)), voicing=int(rng.integers(70, 115)),
        consonants=int(rng.integers(80, 130)), breath=int(rng.integers(0, 8)) if rng.random() < 0.4 else 0,
    )  # fmt: skip
    lines = [
        "language variant",
        f"name {name}",
        f"gender {gender}",
        f"pitch {params['pitch_base']} {params['pitch_top']}",
    ]
    for k in range(9):
        if 1 <= k <= 5:
            freq = 100 * tract * rng.uniform(0.96, 1.04)
        else:
            freq = 100 * rng.uniform(0.95, 1.05)
        lines.append(f"formant {k} {round(freq)} {round(rng.uniform(75, 125))} {round(rng.uniform(80, 160))}")
    lines += [
        f"flutter {params['flutter']}",
        f"roughness {params['roughness']}",
        f"voicing {params['voicing']}",
        f"consonants {params['consonants']}",
    ]
    if params["breath"]:
        b = params["breath"]
        lines.append(f"breath 0 {b} {b + 1} {b + 1} {b + 1} {b + 1} {b} {b}")
    return "\n".join(lines) + "\n", params


@dataclass
class _Voice:
    voice_id: str
    engine: str
    language: str
    text_language: str
    params: dict = field(default_factory=dict)
    variant_file: str | None = None  # generated espeak-ng variant (file text) when not a shipped one


def _plan_voices(cfg: DemoCorpusConfig, rng: np.random.Generator, shipped: list[str]) -> dict[str, list[_Voice]]:
    """Voices of the training pool, the held-out synthetic set and the prosody task (all disjoint)."""
    languages = sorted(ESPEAK_LANGUAGES)
    counter = iter(range(1, 100000))
    # Shipped variants in random order without repeats (until all are used): as many distinct timbres as possible.
    shipped_cycle = itertools.cycle([shipped[i] for i in rng.permutation(len(shipped))])

    def espeak_voice(group: str, generated: bool, gender: str | None = None, pool: Sequence[str] = languages) -> _Voice:
        idx = next(counter)
        lang = pool[int(rng.integers(len(pool)))]
        params = dict(pitch=int(rng.integers(30, 71)), speed=int(rng.integers(140, 201)), gap=int(rng.integers(0, 3)))
        if generated:
            name = f"dsv{idx:03d}"
            text, extra = _generated_variant(name, rng, gender)
            params.update(variant=name, **extra)
            params["pitch"] = int(rng.integers(42, 59))  # the generated pitch line already varies
            vid = f"{group}{idx:03d}_espeak_{lang}_gen"
            return _Voice(vid, "espeak", lang, ESPEAK_LANGUAGES[lang], params, text)
        variant = next(shipped_cycle)
        params.update(variant=variant)
        vid = f"{group}{idx:03d}_espeak_{lang}_{re.sub(r'[^A-Za-z0-9]', '', variant)}"
        return _Voice(vid, "espeak", lang, ESPEAK_LANGUAGES[lang], params)

    def flite_voice(group: str, name: str) -> _Voice:
        idx = next(counter)
        return _Voice(f"{group}{idx:03d}_flite_{name}", "flite", "en", "en", dict(voice=name))

    # Training pool: half shipped variants (pitch / rate varied), half generated vocal tracts, plus flite.
    train = [espeak_voice("synth", generated=bool(i % 2)) for i in range(cfg.train_espeak_voices)]
    flite_train = FLITE_TRAIN_VOICES[:1] if cfg.quick else FLITE_TRAIN_VOICES
    train += [flite_voice("synth", name) for name in flite_train]
    # Held out: only generated vocal tracts (a shipped variant could also occur in training under another
    # language or pitch) and a flite voice never used in training.
    heldout = [espeak_voice("synth", generated=True) for _ in range(cfg.heldout_espeak_voices)]
    heldout += [flite_voice("synth", name) for name in FLITE_HELDOUT_VOICES]
    # Prosody voices speak languages whose text they can read natively, alternating male / female.
    n_prosody = cfg.prosody_train_voices + cfg.prosody_test_voices
    native = ("en-gb", "en-us", "es", "fr-fr", "it")
    prosody = [espeak_voice("prosody", True, ("male", "female")[i % 2], native) for i in range(n_prosody)]
    return {"train": train, "heldout": heldout, "prosody": prosody}


def _words_for(seconds: float, words_per_second: float) -> int:
    return max(3, int(round(seconds * words_per_second)))


def _synth_jobs(voice: _Voice, n: int, folder: str, texts: dict[str, list[str]], cfg: DemoCorpusConfig,
                rng: np.random.Generator) -> list[RenderJob]:  # fmt: skip
    jobs = []
    for u in range(n):
        seconds = float(rng.uniform(cfg.min_seconds, cfg.max_seconds))
        level = float(rng.uniform(-12.0, -1.0))
        out = f"wav/{folder}/{voice.voice_id}/{u:03d}.wav"
        if voice.engine == "espeak":
            p = voice.params
            speed = int(p["speed"] * rng.uniform(0.93, 1.07))
            text = _compose_text(texts[voice.text_language], _words_for(seconds, speed / 60.0 * 0.85), rng)
            more = _compose_text(texts[voice.text_language], _words_for(cfg.min_seconds, speed / 60.0), rng)
            args = (
                "-v",
                f"{voice.language}+{p['variant']}",
                "-p",
                str(p["pitch"]),
                "-s",
                str(speed),
                "-g",
                str(p["gap"]),
            )
            jobs.append(
                RenderJob(
                    out, "espeak", level, args, text, p["variant"], more, cfg.min_seconds, max_seconds=cfg.max_seconds
                )
            )
        else:
            stretch = float(rng.uniform(0.9, 1.15))
            text = _compose_text(texts["en"], _words_for(seconds, 2.7 / stretch), rng)
            more = _compose_text(texts["en"], _words_for(cfg.min_seconds, 2.7 / stretch), rng)
            args = ("-voice", voice.params["voice"], "--setf", f"duration_stretch={stretch:.3f}")
            jobs.append(
                RenderJob(out, "flite", level, args, text, "", more, cfg.min_seconds, max_seconds=cfg.max_seconds)
            )
    return jobs


#: Prosody styles relative to a voice's own neutral settings: pitch level and range (variant file), rate,
#: amplitude, and voice quality. Per-utterance jitter makes the classes overlap a little, as real ones do.
_PROSODY_STYLES = {
    "neutral": dict(pitch=1.00, span=1.00, speed=1.00, amp=100, flutter=0, roughness=0, breath=0),
    "excited": dict(pitch=1.25, span=1.90, speed=1.18, amp=130, flutter=8, roughness=0, breath=0),
    "sad": dict(pitch=0.88, span=0.40, speed=0.76, amp=70, flutter=0, roughness=0, breath=5),
    "angry": dict(pitch=1.10, span=1.35, speed=1.10, amp=150, flutter=4, roughness=4, breath=0),
}


def _prosody_variant(voice: _Voice, label: str) -> str:
    style = _PROSODY_STYLES[label]
    p = voice.params
    lines = []
    for line in voice.variant_file.splitlines():
        key = line.split(" ", 1)[0]
        if key == "name":
            line = f"name {p['variant']}_{label}"
        elif key == "pitch":
            base = p["pitch_base"] * style["pitch"]
            line = f"pitch {round(base)} {round(base + (p['pitch_top'] - p['pitch_base']) * style['span'])}"
        elif key == "flutter":
            line = f"flutter {p['flutter'] + style['flutter']}"
        elif key == "roughness":
            line = f"roughness {p['roughness'] + style['roughness']}"
        elif key == "breath":
            continue
        lines.append(line)
    breath = p["breath"] + style["breath"]
    if breath:
        lines.append(f"breath 0 {breath} {breath + 1} {breath + 1} {breath + 1} {breath + 1} {breath} {breath}")
    return "\n".join(lines) + "\n"


def _prosody_jobs(voice: _Voice, n: int, texts: dict[str, list[str]], cfg: DemoCorpusConfig,
                  rng: np.random.Generator) -> list[tuple[RenderJob, str]]:  # fmt: skip
    jobs = []
    for label in PROSODY_LABELS:
        style = _PROSODY_STYLES[label]
        for u in range(n):
            seconds = float(rng.uniform(cfg.min_seconds, cfg.max_seconds))
            speed = int(voice.params["speed"] * style["speed"] * rng.uniform(0.94, 1.06))
            pitch = int(np.clip(50 + rng.normal(0, 4), 30, 70))
            amp = int(style["amp"] * rng.uniform(0.9, 1.1))
            text = _compose_text(texts[voice.text_language], _words_for(seconds, speed / 60.0 * 0.85), rng)
            more = _compose_text(texts[voice.text_language], _words_for(cfg.min_seconds, speed / 60.0), rng)
            variant = f"{voice.params['variant']}_{label}"
            args = ("-v", f"{voice.language}+{variant}", "-p", str(pitch), "-s", str(speed), "-a", str(amp))
            out = f"wav/prosody/{voice.voice_id}/{label}_{u:03d}.wav"
            level = float(rng.uniform(-12.0, -1.0))
            job = RenderJob(
                out, "espeak", level, args, text, variant, more, cfg.min_seconds, max_seconds=cfg.max_seconds
            )
            jobs.append((job, label))
    return jobs


def _real_jobs(sounds: dict[str, Path], transcripts: dict[str, dict[str, str]], cfg: DemoCorpusConfig,
               rng: np.random.Generator) -> list[tuple[RenderJob, str, str]]:  # fmt: skip
    """(job, speaker, language) for the held-out real recordings: prompts with spoken words (per the
    transcript: no tones or silence files) lasting ``real_min_seconds`` to ``real_max_seconds``."""
    import soundfile as sf

    jobs = []
    for lang in sorted(sounds):
        folder = sounds[lang]
        candidates = []
        for path in sorted(folder.rglob("*.wav")):
            key = path.relative_to(folder).with_suffix("").as_posix()
            if key in transcripts[lang] and cfg.real_min_seconds <= sf.info(str(path)).duration <= cfg.real_max_seconds:
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
# Trials
# ----------------------------------------------------------------------------------------------------------


def _pair(a: str, b: str, rng: np.random.Generator) -> tuple[str, str]:
    return (a, b) if rng.random() < 0.5 else (b, a)


def make_trials(spk2files: dict[str, list[str]], n_trials: int, rng: np.random.Generator) -> list[tuple[int, str, str]]:
    """Balanced verification trials: ``n_trials // 2`` target pairs spread evenly over speakers and as many
    non-target pairs spread evenly over speaker pairs; no trial repeats. When the speakers have fewer distinct
    target pairs than requested, both halves shrink to stay balanced.

    Returns:
        ``[(label, enroll, test), ...]`` with label 1 = same speaker.
    """
    speakers = sorted(s for s in spk2files if len(spk2files[s]) >= 2)
    targets = _sample_pairs([(s, s) for s in speakers], spk2files, spk2files, n_trials // 2, rng)
    cross = [(a, b) for i, a in enumerate(sorted(spk2files)) for b in sorted(spk2files)[i + 1 :]]
    nontargets = _sample_pairs(cross, spk2files, spk2files, len(targets), rng)
    trials = [(1, a, b) for a, b in targets] + [(0, a, b) for a, b in nontargets[: len(targets)]]
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
) -> list[tuple[int, str, str]]:
    """Same-speaker trials across languages: targets are Allison (en) vs Allison (es); non-targets are Allison
    (en or es, alternating) vs the other real voices. Balanced."""
    targets = _sample_pairs([("en", "es")], {"en": en}, {"es": es}, n_trials // 2, rng)
    allison = {"allison_en": en, "allison_es": es}
    groups = [(a, o) for a in sorted(allison) for o in sorted(others)]
    nontargets = _sample_pairs(groups, allison, others, len(targets), rng)
    trials = [(1, a, b) for a, b in targets] + [(0, a, b) for a, b in nontargets[: len(targets)]]
    order = rng.permutation(len(trials))
    return [trials[i] for i in order]


# ----------------------------------------------------------------------------------------------------------
# Writing manifests and documentation
# ----------------------------------------------------------------------------------------------------------


def _write_csv(path: Path, header: list[str], rows: Iterable[Sequence]) -> None:
    rows = sorted(rows, key=lambda r: r[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow([f"{v:.3f}" if isinstance(v, float) else v for v in row])
    os.replace(tmp, path)


def _write_trials(path: Path, trials: list[tuple[int, str, str]]) -> None:
    _write_text_atomic(path, "".join(f"{label} {a} {b}\n" for label, a, b in trials))


#: Files and folders the builder owns inside ``--out``; only these are ever deleted.
_OWNED = [
    "wav", "musan_standin", "licenses", "train.csv", "heldout_real.csv", "heldout_synth.csv", "trials_real.txt",
    "trials_real_crosslang.txt", "trials_synth.txt", "prosody_train.csv", "prosody_test.csv", "voices.json",
    "README.md", "ATTRIBUTION.md", "corpus.json", ".build", ".demo_corpus_state.json",
]  # fmt: skip
_MANIFESTS = ["train.csv", "heldout_real.csv", "heldout_synth.csv", "prosody_train.csv", "prosody_test.csv"]
_TRIALS = ["trials_real.txt", "trials_real_crosslang.txt", "trials_synth.txt"]


def corpus_is_complete(out: str | os.PathLike, cfg: DemoCorpusConfig | None = None) -> bool:
    """True when ``out`` holds a finished corpus (``corpus.json`` written last, every manifest and listed audio
    file present) built with the same settings as ``cfg`` (any settings when ``cfg`` is None)."""
    out = Path(out)
    try:
        meta = json.loads((out / "corpus.json").read_text())
    except (OSError, ValueError):
        return False
    if not meta.get("complete") or (cfg is not None and meta.get("settings_hash") != cfg.fingerprint()):
        return False
    for name in _MANIFESTS:
        path = out / name
        if not path.exists():
            return False
        with open(path, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                if not (out / row["path"]).is_file():
                    return False
    music = meta.get("counts", {}).get("musan_standin", {}).get("files", 0)
    return all((out / t).exists() for t in _TRIALS) and len(list((out / "musan_standin").rglob("*.wav"))) == music


def _clean(out: Path) -> None:
    for name in _OWNED:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def _split_stats(rows: list[tuple], speaker_col: int = 1, duration_col: int = 2) -> dict:
    return {
        "files": len(rows),
        "speakers": len({r[speaker_col] for r in rows}),
        "seconds": round(sum(r[duration_col] for r in rows), 1),
    }


def _readme(cfg: DemoCorpusConfig, counts: dict) -> str:
    c = counts
    return f"""# dino-speech demo corpus

Built by `dino-speech demo-corpus` (builder {BUILDER_VERSION}, seed {cfg.seed},
{"QUICK test subset" if cfg.quick else "full"} build). Every file: mono, 16 kHz, 16-bit PCM, resampled to 8 kHz
and back (telephone band, < 4 kHz), leading/trailing silence trimmed lightly, peak-normalised to a random level
between -12 and -1 dBFS. All paths in the CSV files and trial lists are relative to this folder.

## What it is

| file | content |
|---|---|
| `train.csv` (path,speaker,duration) | unlabeled training pool: {c["train"]["files"]} utterances of {c["train"]["speakers"]} synthetic voices (espeak-ng and flite). The `speaker` column is the true voice, kept ONLY to report cluster purity; training must not read it |
| `heldout_synth.csv`, `trials_synth.txt` | {c["heldout_synth"]["files"]} utterances of {c["heldout_synth"]["speakers"]} held-out synthetic voices (none of them in `train.csv`); {c["trials"]["trials_synth.txt"]["target"]} target + {c["trials"]["trials_synth.txt"]["nontarget"]} non-target trials |
| `heldout_real.csv` (path,speaker,duration,language), `trials_real.txt` | {c["heldout_real"]["files"]} real recordings of {c["heldout_real"]["speakers"]} voices (Asterisk prompts): Allison Smith (en + es, one speaker), June Wallack (fr), Carlo Flora (it), a female Russian voice; {c["trials"]["trials_real.txt"]["target"]} + {c["trials"]["trials_real.txt"]["nontarget"]} trials |
| `trials_real_crosslang.txt` | targets = Allison in English vs Allison in Spanish only; non-targets = Allison vs the other real voices ({c["trials"]["trials_real_crosslang.txt"]["target"]} + {c["trials"]["trials_real_crosslang.txt"]["nontarget"]}) |
| `prosody_train.csv`, `prosody_test.csv` (path,label,speaker,duration) | the prosody-style task, see below ({c["prosody_train"]["files"]} / {c["prosody_test"]["files"]} utterances, {c["prosody_train"]["speakers"]} / {c["prosody_test"]["speakers"]} voices, split by voice) |
| `musan_standin/music/asterisk-moh/*.wav` | {c["musan_standin"]["files"]} music-on-hold pieces ({c["musan_standin"]["seconds"]} s) in MUSAN's `music/` layout, for additive-music augmentation |
| `voices.json` | the parameters of every synthetic voice (engine, language, variant, pitch, rate, generated vocal tract) |
| `corpus.json` | build settings, counts, seconds of audio, tool versions; written last (its presence = a complete build) |
| `ATTRIBUTION.md`, `licenses/` | credits and licences of the recordings and music |

Trial lists use the VoxCeleb format `1 enroll.wav test.wav` (1 = same speaker, 0 = different); they are balanced.
The paths are the same strings as the `path` column of the CSVs.

Synthetic voices. espeak-ng: {len(ESPEAK_LANGUAGES)} languages x voice variants x pitch / rate / word gap; half of the
training voices use espeak-ng's shipped variants, the other half (and every held-out voice) a randomly generated
variant file (pitch base and range, vocal-tract length via formant frequency scaling, formant bandwidths,
flutter, roughness, breathiness). flite: kal16, awb, slt in training, rms held out. The voices read sentences
from the Asterisk prompt transcripts (en, es, fr, it, ru); voices of other languages read a related language's
text with their own accent. Utterances are {cfg.min_seconds:g}-{cfg.max_seconds:g} s.

## Prosody style: a synthetic STAND-IN for emotion recognition

No labelled emotional speech can be had offline, so this task is a clearly synthetic stand-in for IEMOCAP,
CREMA-D and MSP-Podcast, NOT emotion data. Labels neutral / excited / sad / angry are renderings of espeak-ng
settings over several generated voices: pitch level and pitch range (written into the voice's variant file),
speaking rate (`-s`), amplitude (`-a`; peak normalisation afterwards removes loudness as a cue) and voice
quality (flutter, roughness, breathiness), with per-utterance jitter. Train and test voices are disjoint.
Scores on it show whether embeddings keep prosodic information; they say nothing about real emotions.

## What it is not

Small, and mostly synthetic: numbers on it are a smoke test of the method, not comparable with VoxCeleb,
IEMOCAP, CREMA-D or MSP-Podcast results. The four real voices differ in language and recording studio as well
as in speaker, so `trials_real.txt` rewards language / channel cues; `trials_real_crosslang.txt` (same speaker
across two languages) is the truer speaker test. The synthetic voices come from two engines and are much less
varied than real people.

## Rebuilding, and the tools

Re-running the builder with the same settings does nothing; a killed build resumes. `--quick` builds a tiny
subset for tests. The Debian packages are cached in `~/.cache/dino-speech/debs` (`--cache`). espeak-ng and
flite: `sudo apt-get install -y espeak-ng flite`; without root the builder fetches them itself with
`apt-get download` + `dpkg -x` into the cache and runs them with `LD_LIBRARY_PATH` and espeak-ng's `--path`
pointing there (`--tools local` forces this).
"""


def _attribution(music_cropped: bool) -> str:
    rows = "\n".join(f"| `{spk}` | {who} | {langs} | {lic} |" for spk, (who, lic, langs) in REAL_CREDITS.items())
    music = "\n".join(f"- {files}: {who}" for files, who in MUSIC_CREDITS)
    return f"""# Attribution

## Recorded speech (folder `wav/real/`)

The Asterisk "core sounds" voice prompts, from the Debian packages
`asterisk-core-sounds-{{en,es,fr,it,ru}}-wav` (upstream: http://downloads.asterisk.org/pub/telephony/sounds/).

| speaker label | recorded by | languages | licence |
|---|---|---|---|
{rows}

Allison Smith's recordings: financial contributions by Digium, Inc. French translation by Clod Patry,
Kristopher Lalletti and June Wallack (contributions by Digium, Unlimitel, BGM Informatique). Italian translation
by Silvia Petrin. Licences: CC-BY-SA-3.0 (https://creativecommons.org/licenses/by-sa/3.0/) and CC-BY-3.0
(https://creativecommons.org/licenses/by/3.0/); full texts in `licenses/` (the packages' copyright files).

## Music (folder `musan_standin/music/asterisk-moh/`)

From the Debian package `asterisk-moh-opsound-wav`, CC-BY-SA-3.0 (distributed "through explicit permission
from their authors"):
{music}

## Changes made

The works were modified: selected, resampled to 8 kHz and to 16 kHz, trimmed of leading and trailing silence,
level-normalised{"; the music was cropped" if music_cropped else ""}. The modified files are distributed under the same licences.

## Synthetic speech

Generated with espeak-ng (GPL-3.0-or-later) and flite (BSD-style, CMU) from the Asterisk prompt transcripts
(packages `asterisk-core-sounds-{{en,es,fr,it,ru}}`, same licences as the recordings).
"""


# ----------------------------------------------------------------------------------------------------------
# The build
# ----------------------------------------------------------------------------------------------------------


def build_demo_corpus(cfg: DemoCorpusConfig, log=print) -> dict:
    """Build (or finish, or confirm) the demo corpus in ``cfg.out``.

    Returns:
        the content of ``corpus.json`` (settings, counts per split, seconds of audio, trials, tools), plus
        ``"skipped": True`` when a complete corpus with the same settings was already there.

    Raises:
        DemoCorpusUnavailable: packages or synthesisers cannot be obtained (the message says how to fix it).
    """
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    with _file_lock(out / ".lock"):
        if not cfg.force and corpus_is_complete(out, cfg):
            meta = json.loads((out / "corpus.json").read_text())
            log(f"Demo corpus in {out} is complete and built with the same settings: nothing to do.")
            return {**meta, "skipped": True}
        return _build(cfg, out, log)


def _build(cfg: DemoCorpusConfig, out: Path, log) -> dict:
    started = time.time()
    # The state file says "this folder is ours, built with these settings"; it outlives the build, so a later
    # run can tell a half-built (or damaged) corpus it may finish from a folder it must not touch.
    state_path = out / ".demo_corpus_state.json"
    state = None
    with contextlib.suppress(OSError, ValueError):
        state = json.loads(state_path.read_text())
    foreign = [n for n in ("wav", "musan_standin") if (out / n).exists()]
    if cfg.force or (state is not None and state.get("settings_hash") != cfg.fingerprint()):
        log(f"Demo corpus in {out}: {'--force' if cfg.force else 'settings changed'}; rebuilding from scratch.")
        _clean(out)
    elif state is None and foreign:
        raise FileExistsError(
            f"{out} holds {', '.join(foreign)} but no demo-corpus state file; refusing to mix. "
            "Use an empty folder or pass --force (which deletes the builder's files there)."
        )
    elif state is not None:
        log(f"Demo corpus in {out}: incomplete (interrupted build?); finishing it, finished files are kept.")
    with contextlib.suppress(FileNotFoundError):
        (out / "corpus.json").unlink()  # from here on the folder is "being built"
    for stale in out.rglob(".*.tmp"):
        stale.unlink()
    (out / ".build").mkdir(exist_ok=True)
    _write_text_atomic(
        state_path, json.dumps({"settings_hash": cfg.fingerprint(), **cfg.fingerprint_fields()}, indent=1) + "\n"
    )

    cache = Path(cfg.cache) if cfg.cache else default_cache_dir()
    packages = [*SPEECH_PACKAGES.values(), *TRANSCRIPT_PACKAGES.values(), MUSIC_PACKAGE]
    log(f"Fetching Debian packages into {cache} (cached after the first run) ...")
    folders = fetch_debian_packages(packages, cache)
    tools = find_speech_tools(cache, cfg.tools)
    log(f"espeak-ng: {tools.espeak} ({tools.espeak_version}); flite: {tools.flite}; source: {tools.source}")

    transcripts = {lang: _read_transcript(folders[pkg], lang) for lang, pkg in TRANSCRIPT_PACKAGES.items()}
    texts = {lang: _sentences(t) for lang, t in transcripts.items()}
    sounds = {}
    for lang, pkg in SPEECH_PACKAGES.items():
        found = sorted(folders[pkg].glob(f"usr/share/asterisk/sounds/{lang}_*"))
        if not found:
            raise DemoCorpusUnavailable(f"{folders[pkg]}: no usr/share/asterisk/sounds/{lang}_* folder")
        sounds[lang] = found[0]

    # One generator per part, so changing e.g. the number of trials does not change the audio.
    seeds = np.random.SeedSequence(cfg.seed).spawn(6)
    rng_voices, rng_synth, rng_real, rng_prosody, rng_trials, rng_music = (np.random.default_rng(s) for s in seeds)
    voices = _plan_voices(cfg, rng_voices, _shipped_variants(tools))

    train_jobs = [
        j for v in voices["train"] for j in _synth_jobs(v, cfg.train_utterances, "synth", texts, cfg, rng_synth)
    ]
    heldout_jobs = [
        j for v in voices["heldout"] for j in _synth_jobs(v, cfg.heldout_utterances, "synth", texts, cfg, rng_synth)
    ]
    prosody = [
        (v, job, label)
        for v in voices["prosody"]
        for job, label in _prosody_jobs(v, cfg.prosody_utterances, texts, cfg, rng_prosody)
    ]
    real = _real_jobs(sounds, transcripts, cfg, rng_real)
    music_src = sorted(folders[MUSIC_PACKAGE].glob("usr/share/asterisk/moh/*.wav"))
    music_jobs = [
        RenderJob(
            f"musan_standin/music/asterisk-moh/{p.name}",
            "file",
            float(rng_music.uniform(-12.0, -3.0)),
            source=str(p),
            trim=False,
            max_seconds=cfg.music_max_seconds,
        )
        for p in music_src
    ]

    variants = {v.params["variant"]: v.variant_file for g in ("train", "heldout") for v in voices[g] if v.variant_file}
    for v in voices["prosody"]:
        for label in PROSODY_LABELS:
            variants[f"{v.params['variant']}_{label}"] = _prosody_variant(v, label)
    all_jobs = train_jobs + heldout_jobs + [j for _, j, _ in prosody] + [j for j, _, _ in real] + music_jobs
    overlays = _espeak_overlays(tools, out / ".build" / "espeak", [j.variant for j in all_jobs if j.variant], variants)
    all_jobs = [
        dataclasses.replace(j, args=(f"--path={overlays[j.variant]}", *j.args)) if j.variant else j for j in all_jobs
    ]
    durations = _run_jobs(all_jobs, out, tools, cfg.workers, log)
    planned = {out / j.out for j in all_jobs}
    for folder in ("wav", "musan_standin"):  # leftovers of an older plan (e.g. another builder version)
        for path in (out / folder).rglob("*.wav"):
            if path not in planned:
                path.unlink()

    def speaker_of(job: RenderJob) -> str:
        return job.out.split("/")[2]

    lang_of = {v.voice_id: v.language for g in voices.values() for v in g}
    train_rows = [(j.out, speaker_of(j), durations[j.out]) for j in train_jobs]
    heldout_rows = [(j.out, speaker_of(j), durations[j.out], lang_of[speaker_of(j)]) for j in heldout_jobs]
    real_rows = [(j.out, spk, durations[j.out], lang) for j, spk, lang in real]
    n_ptrain = cfg.prosody_train_voices
    prosody_train_ids = {v.voice_id for v in voices["prosody"][:n_ptrain]}
    prosody_rows = {"train": [], "test": []}
    for v, j, label in prosody:
        prosody_rows["train" if v.voice_id in prosody_train_ids else "test"].append(
            (j.out, label, v.voice_id, durations[j.out])
        )

    _write_csv(out / "train.csv", ["path", "speaker", "duration"], train_rows)
    _write_csv(out / "heldout_synth.csv", ["path", "speaker", "duration", "language"], heldout_rows)
    _write_csv(out / "heldout_real.csv", ["path", "speaker", "duration", "language"], real_rows)
    _write_csv(out / "prosody_train.csv", ["path", "label", "speaker", "duration"], prosody_rows["train"])
    _write_csv(out / "prosody_test.csv", ["path", "label", "speaker", "duration"], prosody_rows["test"])

    def by_speaker(rows) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for row in sorted(rows):
            groups.setdefault(row[1], []).append(row[0])
        return groups

    real_by_spk = by_speaker(real_rows)
    trials = {
        "trials_real.txt": make_trials(real_by_spk, cfg.trials_real, rng_trials),
        "trials_synth.txt": make_trials(by_speaker(heldout_rows), cfg.trials_synth, rng_trials),
        "trials_real_crosslang.txt": make_crosslang_trials(
            sorted(r[0] for r in real_rows if r[1] == "allison_smith" and r[3] == "en"),
            sorted(r[0] for r in real_rows if r[1] == "allison_smith" and r[3] == "es"),
            {s: f for s, f in real_by_spk.items() if s != "allison_smith"},
            cfg.trials_crosslang,
            rng_trials,
        ),
    }
    for name, lst in trials.items():
        _write_trials(out / name, lst)

    licenses = out / "licenses"
    licenses.mkdir(exist_ok=True)
    for pkg in (SPEECH_PACKAGES["en"], MUSIC_PACKAGE):
        src = folders[pkg] / "usr" / "share" / "doc" / pkg / "copyright"
        if src.exists():
            shutil.copyfile(src, licenses / f"{pkg}.copyright")

    music_rows = [(j.out, "music", durations[j.out]) for j in music_jobs]
    counts = {
        "train": _split_stats(train_rows),
        "heldout_synth": _split_stats(heldout_rows),
        "heldout_real": _split_stats(real_rows),
        "prosody_train": _split_stats(prosody_rows["train"], speaker_col=2, duration_col=3),
        "prosody_test": _split_stats(prosody_rows["test"], speaker_col=2, duration_col=3),
        "musan_standin": {"files": len(music_rows), "seconds": round(sum(r[2] for r in music_rows), 1)},
        "trials": {
            n: {"target": sum(t[0] for t in lst), "nontarget": sum(1 - t[0] for t in lst)} for n, lst in trials.items()
        },
    }
    counts["total_seconds"] = round(sum(durations.values()), 1)
    voices_doc = {
        group: [
            {
                "speaker": v.voice_id,
                "engine": v.engine,
                "language": v.language,
                "text_language": v.text_language,
                **{k: v.params[k] for k in sorted(v.params)},
            }
            for v in lst
        ]
        for group, lst in voices.items()
    }
    _write_text_atomic(out / "voices.json", json.dumps(voices_doc, indent=1, ensure_ascii=False) + "\n")
    _write_text_atomic(out / "README.md", _readme(cfg, counts))
    _write_text_atomic(out / "ATTRIBUTION.md", _attribution(cfg.music_max_seconds is not None))

    meta = {
        "complete": True,
        "builder_version": BUILDER_VERSION,
        "settings": cfg.fingerprint_fields(),
        "settings_hash": cfg.fingerprint(),
        "counts": counts,
        "tools": {"espeak-ng": tools.espeak_version, "flite_voices": list(tools.flite_voices), "source": tools.source},
        "debian_packages": sorted(p.name for p in folders.values()),
        "build_seconds": round(time.time() - started, 1),
    }
    shutil.rmtree(out / ".build", ignore_errors=True)
    _write_text_atomic(out / "corpus.json", json.dumps(meta, indent=1) + "\n")  # last: marks the build complete
    log(
        f"Demo corpus ready in {out} ({meta['build_seconds']} s): train {counts['train']['files']} files / "
        f"{counts['train']['speakers']} voices, held-out synthetic {counts['heldout_synth']['files']} / "
        f"{counts['heldout_synth']['speakers']}, "
        f"real {counts['heldout_real']['files']} / {counts['heldout_real']['speakers']}, "
        f"prosody {counts['prosody_train']['files']} + {counts['prosody_test']['files']}, "
        f"{counts['total_seconds'] / 3600:.2f} h of audio."
    )
    return meta


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dino-speech demo-corpus",
        description="Assemble the offline demo corpus (real Asterisk voices + espeak-ng / flite voices).",
    )
    parser.add_argument("--out", default="data/demo", help="output folder (default: data/demo)")
    parser.add_argument(
        "--cache", default=None, help=f"folder for the Debian packages (default: {default_cache_dir()})"
    )
    parser.add_argument("--quick", action="store_true", help="tiny subset for tests (seconds to build)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="synthesis processes (default: 2)")
    parser.add_argument(
        "--tools",
        choices=("auto", "system", "local"),
        default="auto",
        help="espeak-ng/flite: system binaries if present (auto), only system, or fetched without root (local)",
    )
    parser.add_argument("--force", action="store_true", help="delete the builder's files in --out and rebuild")
    args = parser.parse_args(argv)
    make = DemoCorpusConfig.quick_preset if args.quick else DemoCorpusConfig
    cfg = make(out=args.out, cache=args.cache, seed=args.seed, workers=args.workers, tools=args.tools, force=args.force)
    try:
        build_demo_corpus(cfg)
    except DemoCorpusUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
