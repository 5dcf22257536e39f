"""Signal processing shared by every file of the demo corpus: reading a recording to mono, the telephone band,
light trimming, joining short recordings into one utterance, length fitting and the output level.

Every output file is mono float32 at 16 kHz that went through 8 kHz (:func:`telephone_band`): the recorded
voices are partly 8 kHz telephone audio, and without the same band limit everywhere, bandwidth alone would
tell one source (or synthetic from real speech) apart.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

__all__ = [
    "SAMPLING_RATE",
    "TELEPHONE_RATE",
    "fit_length",
    "join_recordings",
    "join_with_gaps",
    "read_part",
    "read_recording",
    "set_peak_level",
    "telephone_band",
    "trim_silence",
]

SAMPLING_RATE = 16000
TELEPHONE_RATE = 8000

#: A channel whose energy is this far (-30 dB) below the loudest one's is treated as empty when downmixing.
_EMPTY_CHANNEL = 1e-3


def read_recording(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode a recording to mono float32 at its native rate; returns ``(waveform, rate)``.

    Downmixing averages only the channels that carry signal (some stereo files have a silent channel, which a
    plain mean would turn into a 6 dB drop), and a file whose decoded peak exceeds full scale (lossy codecs
    mastered at 0 dBFS overshoot) is scaled down to a peak of 1.

    Raises:
        modeling_dino_speech.data.audio.AudioError: missing, unreadable, empty or damaged file.
    """
    import soundfile as sf

    from ...data.audio import audio_info, load_audio

    path = os.fspath(path)
    audio_info(path)  # a missing, unreadable, empty or truncated file raises the AudioError that names it
    with sf.SoundFile(path) as handle:
        channels, rate = handle.channels, int(handle.samplerate)
    parts = [load_audio(path, sampling_rate=None, channel=c if channels > 1 else None) for c in range(channels)]
    if len(parts) > 1:
        energy = np.array([float(np.mean(np.square(p, dtype=np.float64))) for p in parts])
        parts = [p for p, e in zip(parts, energy) if e >= _EMPTY_CHANNEL * energy.max()]
    wav = parts[0] if len(parts) == 1 else np.mean(parts, axis=0, dtype=np.float32)
    wav = np.ascontiguousarray(wav, dtype=np.float32)
    peak = float(np.abs(wav).max())
    if peak > 1.0:
        wav = wav / np.float32(peak)
    return wav, rate


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


def join_with_gaps(parts: Sequence[np.ndarray], sampling_rate: int, gap_s: float) -> np.ndarray:
    """Concatenate ``parts`` with ``gap_s`` of digital silence between consecutive ones (none at the ends)."""
    gap = np.zeros(int(round(gap_s * sampling_rate)), dtype=np.float32)
    pieces: list[np.ndarray] = []
    for i, part in enumerate(parts):
        if i:
            pieces.append(gap)
        pieces.append(np.asarray(part, dtype=np.float32))
    return np.concatenate(pieces)


def fit_length(waveform: np.ndarray, max_seconds: float | None, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """Cut to ``max_seconds`` with a 30 ms fade-out (unchanged when shorter or ``max_seconds`` is None)."""
    if max_seconds is None or len(waveform) <= int(max_seconds * sampling_rate):
        return waveform
    out = waveform[: int(max_seconds * sampling_rate)].copy()
    fade = int(0.03 * sampling_rate)
    out[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return out


def set_peak_level(waveform: np.ndarray, level_db: float, what: str = "") -> np.ndarray:
    """Scale to a peak of ``level_db`` dBFS.

    Raises:
        RuntimeError: the waveform is silent (peak below -80 dBFS), naming ``what``.
    """
    peak = float(np.abs(waveform).max()) if len(waveform) else 0.0
    if peak < 1e-4:
        raise RuntimeError(f"{what}: silent output (peak {peak:.2e})")
    return (waveform * (10.0 ** (level_db / 20.0) / peak)).astype(np.float32)


def read_part(path: str | os.PathLike) -> np.ndarray:
    """A recording as one part of a joined utterance: :func:`read_recording`, 16 kHz, :func:`trim_silence`."""
    from ...resampling import resample

    wav, rate = read_recording(path)
    return trim_silence(resample(wav, rate, SAMPLING_RATE), SAMPLING_RATE)


def join_recordings(paths: Sequence[str | os.PathLike], gap_s: float, part_peak: float = 0.5) -> np.ndarray:
    """Read each recording with :func:`read_part`, bring each to the same peak level when there are several
    (single words of one speaker are recorded at quite different levels) and join them with ``gap_s`` of
    silence. Returns 16 kHz audio of ``sum(len(parts)) + (len(parts) - 1) * gap`` samples."""
    parts = [read_part(p) for p in paths]
    if len(parts) > 1:
        parts = [p * np.float32(part_peak / max(float(np.abs(p).max()), 1e-9)) for p in parts]
    return join_with_gaps(parts, SAMPLING_RATE, gap_s)
