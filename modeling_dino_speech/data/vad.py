"""Energy voice activity detection: drop the silent frames of an utterance before cropping (as the paper).

A frame (25 ms window, 10 ms shift) is speech when its energy is within ``threshold_db`` of the loudest
frame of the utterance; decisions are then dilated by ``context`` frames on each side so word onsets and
offsets survive. Computed with one cumulative sum, O(N).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["EnergyVADConfig", "apply_energy_vad", "energy_vad_mask"]


@dataclass
class EnergyVADConfig:
    threshold_db: float = -35.0
    """Frames more than this many dB below the loudest frame are silence."""
    frame_ms: float = 25.0
    shift_ms: float = 10.0
    context: int = 2
    """Frames kept on each side of a speech frame."""
    min_speech_seconds: float = 0.5
    """If less speech than this is found, the utterance is returned unchanged (never emptied)."""

    def __post_init__(self) -> None:
        if self.threshold_db >= 0:
            raise ValueError(
                f"EnergyVADConfig.threshold_db must be negative (dB below the maximum), got {self.threshold_db}"
            )
        if self.frame_ms <= 0 or self.shift_ms <= 0 or self.context < 0:
            raise ValueError("EnergyVADConfig: frame_ms and shift_ms must be positive and context non-negative")


def energy_vad_mask(waveform: np.ndarray, sampling_rate: int, config: EnergyVADConfig | None = None) -> np.ndarray:
    """Frame-level speech decisions.

    Args:
        waveform: ``(N,)`` float.

    Returns:
        ``(F,)`` bool, one decision per ``shift_ms`` frame, ``F = max(1, 1 + (N - frame) // shift)``.
    """
    cfg = config or EnergyVADConfig()
    frame = max(1, int(round(cfg.frame_ms * sampling_rate / 1000)))
    shift = max(1, int(round(cfg.shift_ms * sampling_rate / 1000)))
    x = np.asarray(waveform, dtype=np.float64)
    num_frames = max(1, 1 + (len(x) - frame) // shift) if len(x) >= frame else 1
    cumulative = np.concatenate([[0.0], np.cumsum(x * x)])
    starts = np.arange(num_frames) * shift
    ends = np.minimum(starts + frame, len(x))
    energy = (cumulative[ends] - cumulative[starts]) / np.maximum(ends - starts, 1)
    log_energy = 10.0 * np.log10(energy + 1e-12)
    speech = log_energy > log_energy.max() + cfg.threshold_db
    if energy.max() <= 1e-12:  # digital silence: nothing is speech
        speech[:] = False
    if cfg.context and speech.any():
        kernel = np.ones(2 * cfg.context + 1)
        speech = np.convolve(speech.astype(np.float64), kernel, mode="same") > 0
    return speech


def apply_energy_vad(waveform: np.ndarray, sampling_rate: int, config: EnergyVADConfig | None = None) -> np.ndarray:
    """Remove silent frames.

    Args:
        waveform: ``(N,)`` float32.

    Returns:
        ``(M,)`` with ``M <= N``: the concatenated speech samples, or the input itself when less than
        ``min_speech_seconds`` of speech is found (so short or quiet utterances are never emptied).
    """
    cfg = config or EnergyVADConfig()
    speech = energy_vad_mask(waveform, sampling_rate, cfg)
    shift = max(1, int(round(cfg.shift_ms * sampling_rate / 1000)))
    # Sample s belongs to the frame whose shift-block contains it (the tail goes with the last frame).
    keep = speech[np.minimum(np.arange(len(waveform)) // shift, len(speech) - 1)]
    if keep.sum() < cfg.min_speech_seconds * sampling_rate:
        return waveform
    return waveform[keep]
