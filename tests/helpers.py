"""Tiny generated corpora for end-to-end tests: 'speakers' are harmonic sources with their own pitch and
spectral envelope, so a model can tell them apart after a few steps."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import List, Tuple

import numpy as np
import soundfile as sf

SR = 16000


def synth_voice(speaker: int, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    f0 = 90 + 25 * speaker + 5 * rng.standard_normal()
    vibrato = 1 + 0.03 * np.sin(2 * np.pi * (3 + speaker % 3) * t)
    phase = 2 * np.pi * np.cumsum(f0 * vibrato) / SR
    tilt = 0.6 + 0.1 * (speaker % 4)
    wave = sum((tilt**h) * np.sin(h * phase) for h in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * (1.5 + 0.2 * speaker) * t) ** 2
    wave = wave * envelope + 0.02 * rng.standard_normal(t.size)
    return (0.3 * wave / np.abs(wave).max()).astype(np.float32)


def speech_like(rng: np.random.Generator, num: int = 3, length: int = SR) -> np.ndarray:
    """`(num, length)` amplitude-modulated harmonic signals: non-stationary like speech, cheap to make."""
    t = np.arange(length) / SR
    f0 = rng.uniform(100, 220, size=(num, 1))
    x = sum(np.sin(2 * np.pi * h * f0 * t) / h for h in range(1, 6))
    return (0.3 * x * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)


def make_corpus(
    root: Path,
    speakers: int = 4,
    per_speaker: int = 6,
    seconds: Tuple[float, float] = (1.5, 3.0),
    seed: int = 0,
    prefix: str = "spk",
) -> Path:
    """Write wavs and a manifest `train.csv` (path,speaker,duration); returns the manifest path."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows: List[Tuple[str, str, float]] = []
    for s in range(speakers):
        folder = root / f"{prefix}{s}"
        folder.mkdir(exist_ok=True)
        for u in range(per_speaker):
            dur = float(rng.uniform(*seconds))
            path = folder / f"utt{u}.wav"
            sf.write(path, synth_voice(s, dur, rng), SR, subtype="PCM_16")
            rows.append((str(path.relative_to(root)), f"{prefix}{s}", round(dur, 3)))
    manifest = root / "train.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "speaker", "duration"])
        writer.writerows(rows)
    return manifest


def write_trials(root: Path, manifest: Path, out: Path, seed: int = 0) -> Path:
    """Balanced target/non-target VoxCeleb-format trials over a manifest's files."""
    with open(manifest) as handle:
        rows = list(csv.DictReader(handle))
    rng = np.random.default_rng(seed)
    lines = []
    for i, a in enumerate(rows):
        for b in rows[i + 1 :]:
            lines.append(f"{int(a['speaker'] == b['speaker'])} {a['path']} {b['path']}")
    rng.shuffle(lines)
    out.write_text("\n".join(lines) + "\n")
    return out


def real_speech(min_seconds: float = 1.5, per_speaker: int = 4) -> dict:
    """Real recorded speech available offline, ``{speaker: [wav paths]}`` (at least two speakers), or {}:
    the demo corpus's real voices (after `make demo`), else the Asterisk prompts its builder keeps unpacked in the
    Debian-package cache (``$DINO_SPEECH_DEB_CACHE`` or ``~/.cache/dino-speech/debs``)."""
    import os

    root = Path(__file__).resolve().parents[1]
    folders = sorted(p for p in (root / "data" / "demo" / "wav" / "real").glob("*") if p.is_dir())
    if len(folders) < 2:
        cache = Path(os.environ.get("DINO_SPEECH_DEB_CACHE") or Path.home() / ".cache" / "dino-speech" / "debs")
        folders = sorted(cache.glob("extracted/asterisk-core-sounds-*-wav_*/usr/share/asterisk/sounds/*_*"))
    speakers = {}
    for folder in folders:
        files = []
        for path in sorted(folder.glob("*.wav")):
            if sf.info(str(path)).duration >= min_seconds:
                files.append(str(path))
            if len(files) == per_speaker:
                break
        if len(files) == per_speaker:
            speakers[folder.name] = files
    return speakers if len(speakers) >= 2 else {}
