"""Band-limited sample-rate conversion with libsoxr (the `soxr` package), for the feature extractor and the data
pipeline alike, so that neither needs torchaudio. A flat module: a checkpoint's remote code carries it."""

from __future__ import annotations

import numpy as np
import soxr

__all__ = ["resample"]


def resample(waveform: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Resample float32 audio `(N,)` or `(channels, N)` from `orig_sr` to `new_sr` Hz.

    libsoxr's high-quality setting: linear phase, the pass band flat to 91% of the lower Nyquist frequency and
    everything above that Nyquist frequency attenuated by over 100 dB, so a rate change adds no aliases.

    Returns:
        float32 `(..., M)` with `M` = `N * new_sr / orig_sr` rounded; the input itself when the rates agree.
    """
    if int(orig_sr) <= 0 or int(new_sr) <= 0:
        raise ValueError(f"sampling rates must be positive, got {orig_sr} -> {new_sr}")
    if int(orig_sr) == int(new_sr):
        return waveform
    x = np.ascontiguousarray(waveform, dtype=np.float32)
    if x.ndim == 1:
        return soxr.resample(x, int(orig_sr), int(new_sr), quality="HQ")
    if x.ndim != 2:
        raise ValueError(f"expected (N,) or (channels, N) audio, got shape {x.shape}")
    # soxr takes (frames, channels)
    return np.ascontiguousarray(soxr.resample(np.ascontiguousarray(x.T), int(orig_sr), int(new_sr), quality="HQ").T)
