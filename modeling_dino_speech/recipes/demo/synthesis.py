"""The synthetic voices: espeak-ng and flite (system binaries or unpacked without root), the texts they read
(the Asterisk prompt transcripts), the voice plan (training pool, held-out voices, prosody voices, all
disjoint), random espeak-ng vocal tracts, the prosody-style renderings, and one job per utterance.
"""

from __future__ import annotations

import gzip
import itertools
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .debian import INSTALL_HINT, DemoCorpusUnavailable, default_cache_dir, local_prefix, run_tool
from .rendering import RenderJob

if TYPE_CHECKING:
    from .config import DemoCorpusConfig

__all__ = [
    "ESPEAK_LANGUAGES",
    "FLITE_HELDOUT_VOICES",
    "FLITE_TRAIN_VOICES",
    "PROSODY_LABELS",
    "TRANSCRIPT_PACKAGES",
    "SpeechTools",
    "Voice",
    "espeak_overlays",
    "find_speech_tools",
    "generated_variant",
    "plan_voices",
    "prosody_jobs",
    "prosody_variant",
    "read_transcript",
    "sentences",
    "shipped_variants",
    "synth_jobs",
    "synthesise",
]

#: The Asterisk prompt transcripts (``core-sounds-<lang>.txt``): the texts the synthetic voices read.
TRANSCRIPT_PACKAGES = {lang: f"asterisk-core-sounds-{lang}" for lang in ("en", "es", "fr", "it", "ru")}

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
        raise DemoCorpusUnavailable(f"{' and '.join(need)} not found on PATH.\n{INSTALL_HINT}")
    env = None
    paths = dict(system)
    if need:
        root, env = local_prefix(cache, need)
        for name in need:
            paths[name] = str(root / "usr" / "bin" / name)
    espeak_out = run_tool([paths["espeak-ng"], "--version"], env=env, what="espeak-ng")
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
    voices_out = run_tool([paths["flite"], "-lv"], env=env, what="flite")
    voices = tuple(voices_out.split(":", 1)[-1].split())
    missing = [v for v in (*FLITE_TRAIN_VOICES, *FLITE_HELDOUT_VOICES) if v not in voices]
    if missing:
        raise DemoCorpusUnavailable(f"flite lacks the voices {missing} (it has {voices}).\n{INSTALL_HINT}")
    version = espeak_out.strip().split("Data at")[0].strip()
    source = "system" if not need else ("local: " + ", ".join(need))
    return SpeechTools(paths["espeak-ng"], paths["flite"], espeak_data, env, version, voices, source)


#: espeak-ng lists at most 349 voices (languages + variants + mbrola voices) and silently drops the rest, so the
#: variants are spread over several data folders with this many each next to the ~130 languages.
_VARIANTS_PER_OVERLAY = 150


def espeak_overlays(
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


def shipped_variants(tools: SpeechTools) -> list[str]:
    folder = Path(tools.espeak_data) / "voices" / "!v"
    names = [p.name for p in folder.iterdir() if p.is_file() and " " not in p.name]
    return sorted(n for n in names if n not in _EXCLUDED_VARIANTS)


def read_transcript(folder: Path, lang: str) -> dict[str, str]:
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


def sentences(transcript: dict[str, str]) -> list[str]:
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


def generated_variant(name: str, rng: np.random.Generator, gender: str | None = None) -> tuple[str, dict]:
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
class Voice:
    voice_id: str
    engine: str
    language: str
    text_language: str
    params: dict = field(default_factory=dict)
    variant_file: str | None = None  # generated espeak-ng variant (file text) when not a shipped one


def plan_voices(cfg: DemoCorpusConfig, rng: np.random.Generator, shipped: list[str]) -> dict[str, list[Voice]]:
    """Voices of the training pool, the held-out synthetic set and the prosody task (all disjoint)."""
    languages = sorted(ESPEAK_LANGUAGES)
    counter = iter(range(1, 100000))
    # Shipped variants in random order without repeats (until all are used): as many distinct timbres as possible.
    shipped_cycle = itertools.cycle([shipped[i] for i in rng.permutation(len(shipped))])

    def espeak_voice(group: str, generated: bool, gender: str | None = None, pool: Sequence[str] = languages) -> Voice:
        idx = next(counter)
        lang = pool[int(rng.integers(len(pool)))]
        params = dict(pitch=int(rng.integers(30, 71)), speed=int(rng.integers(140, 201)), gap=int(rng.integers(0, 3)))
        if generated:
            name = f"dsv{idx:03d}"
            text, extra = generated_variant(name, rng, gender)
            params.update(variant=name, **extra)
            params["pitch"] = int(rng.integers(42, 59))  # the generated pitch line already varies
            vid = f"{group}{idx:03d}_espeak_{lang}_gen"
            return Voice(vid, "espeak", lang, ESPEAK_LANGUAGES[lang], params, text)
        variant = next(shipped_cycle)
        params.update(variant=variant)
        vid = f"{group}{idx:03d}_espeak_{lang}_{re.sub(r'[^A-Za-z0-9]', '', variant)}"
        return Voice(vid, "espeak", lang, ESPEAK_LANGUAGES[lang], params)

    def flite_voice(group: str, name: str) -> Voice:
        idx = next(counter)
        return Voice(f"{group}{idx:03d}_flite_{name}", "flite", "en", "en", dict(voice=name))

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


def synth_jobs(voice: Voice, n: int, folder: str, texts: dict[str, list[str]], cfg: DemoCorpusConfig,
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


def prosody_variant(voice: Voice, label: str) -> str:
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


def prosody_jobs(voice: Voice, n: int, texts: dict[str, list[str]], cfg: DemoCorpusConfig,
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


def synthesise(job: RenderJob, tools: SpeechTools, scratch: Path) -> tuple[np.ndarray, int]:
    """Run espeak-ng or flite for one job (in a private folder under ``scratch``); returns (audio, rate)."""
    from ...data.audio import AudioError, audio_info, load_audio

    work = Path(tempfile.mkdtemp(dir=scratch))
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
            return load_audio(wav_file, sampling_rate=None), audio_info(wav_file).sample_rate
        except AudioError as err:
            raise RuntimeError(
                f"{job.out}: the synthesiser produced no usable audio for {job.text!r} ({err.problem})"
            ) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
