"""Channel augmentation: what a telephone line, a codec and a cheap microphone do to a voice.

Real recordings of one speaker share a channel, and recordings of two speakers usually do not: a model that
learns the channel instead of the voice scores well within one source and badly across sources. Each crop
can therefore be sent through a random channel:

* a random frequency response: band edges (a high-pass between ~50 and ~300 Hz, a low-pass between ~3 and
  ~3.9 kHz, each a raised-cosine transition), a spectral tilt in dB per octave and a few random peaking bands
  (microphone and line colouring), applied as one zero-phase multiplication in the frequency domain;
* G.711 companding (ITU-T G.711 mu-law or A-law, 8 bits per sample), the telephone network's codec: a
  signal-dependent quantisation noise floor.

Both are pure functions of the ``np.random.Generator`` they are given, like the rest of ``augment``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "a_law",
    "apply_responses",
    "channel_responses",
    "draw_channel_parameters",
    "g711",
    "mu_law",
    "random_channel_responses",
]

_EPS = 1e-10
_MU = 255.0
_A = 87.6
#: 8-bit G.711: a sign bit and 7 bits of companded magnitude.
_LEVELS = 127.0
#: G.711 is a codec of the 8 kHz telephone network.
G711_RATE = 8000


def _edge(freqs: np.ndarray, cutoff: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Raised-cosine step from 0 (below cutoff - width/2) to 1 (above cutoff + width/2): `(C, F)`."""
    x = np.clip((freqs[None, :] - cutoff[:, None]) / width[:, None] + 0.5, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * x)


def draw_channel_parameters(
    num: int,
    sampling_rate: int,
    rng: np.random.Generator,
    highpass_hz: tuple[float, float] = (50.0, 300.0),
    lowpass_hz: tuple[float, float] = (3000.0, 3900.0),
    tilt_db_per_octave: tuple[float, float] = (-3.0, 3.0),
    eq_bands: tuple[int, int] = (0, 3),
    eq_gain_db: tuple[float, float] = (-8.0, 8.0),
) -> dict[str, np.ndarray]:
    """The random draws behind `num` channels, in the order :func:`random_channel_responses` makes them.

    Returns:
        ``high``, ``low``, ``tilt`` ``(num,)``; ``bands`` ``(num,)`` int; ``centre`` (log2 of kHz), ``width``
        (octaves) and ``gain`` (dB) ``(num, eq_bands[1])``, the unused bands of a channel zero.
    """
    nyquist = 0.5 * sampling_rate
    high = rng.uniform(*highpass_hz, size=num)
    low = np.minimum(rng.uniform(*lowpass_hz, size=num), 0.98 * nyquist)
    tilt = rng.uniform(*tilt_db_per_octave, size=num)
    bands = rng.integers(eq_bands[0], eq_bands[1] + 1, size=num)
    most = max(int(eq_bands[1]), 0)
    centre, width, gain = np.zeros((num, most)), np.zeros((num, most)), np.zeros((num, most))
    for i in range(num):
        for b in range(int(bands[i])):
            centre[i, b] = np.log2(rng.uniform(200.0, min(3500.0, 0.9 * nyquist)) / 1000.0)
            width[i, b] = rng.uniform(0.3, 1.5)  # octaves
            gain[i, b] = rng.uniform(*eq_gain_db)
    return {"high": high, "low": low, "tilt": tilt, "bands": bands, "centre": centre, "width": width, "gain": gain}


def channel_responses(params: dict[str, np.ndarray], num_bins: int, sampling_rate: int) -> np.ndarray:
    """Magnitude responses of the channels :func:`draw_channel_parameters` described, on `num_bins` rfft bins.

    Returns:
        `(num, num_bins)` float32 linear gains, normalised so that each response has unit mean power over the
        speech band (300-3000 Hz): the channel colours the voice without changing its level.
    """
    high, low, tilt = params["high"], params["low"], params["tilt"]
    num = len(high)
    freqs = np.linspace(0.0, 0.5 * sampling_rate, num_bins)
    octaves = np.log2(np.maximum(freqs, 1.0) / 1000.0)
    response_db = tilt[:, None] * octaves[None, :]
    for i in range(num):
        for b in range(int(params["bands"][i])):
            centre, width = params["centre"][i, b], params["width"][i, b]
            response_db[i] += params["gain"][i, b] * np.exp(-0.5 * ((octaves - centre) / (0.5 * width)) ** 2)
    gains = 10.0 ** (response_db / 20.0)
    gains *= _edge(freqs, high, np.maximum(0.5 * high, 20.0))
    gains *= 1.0 - _edge(freqs, low, np.full(num, 400.0))
    speech = (freqs >= 300.0) & (freqs <= 3000.0)
    if speech.any():
        gains /= np.sqrt(np.mean(np.square(gains[:, speech]), axis=1, keepdims=True)) + _EPS
    return gains.astype(np.float32)


def random_channel_responses(
    num: int, num_bins: int, sampling_rate: int, rng: np.random.Generator, **ranges: Any
) -> np.ndarray:
    """Magnitude responses of `num` random channels on the `num_bins` bins of an rfft
    (:func:`draw_channel_parameters` with its `ranges`, then :func:`channel_responses`).

    Returns:
        `(num, num_bins)` float32 linear gains, unit mean power over the speech band (300-3000 Hz).
    """
    return channel_responses(draw_channel_parameters(num, sampling_rate, rng, **ranges), num_bins, sampling_rate)


def apply_responses(waveforms: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """Filter each row of `(C, N)` float32 audio by its zero-phase magnitude response `(C, N // 2 + 1)`."""
    length = waveforms.shape[-1]
    spectrum = np.fft.rfft(waveforms, axis=-1)
    return np.fft.irfft(spectrum * gains, n=length, axis=-1).astype(np.float32)


def mu_law(x: np.ndarray) -> np.ndarray:
    """G.711 mu-law round trip of float audio in [-1, 1]: compress, quantise to 8 bits, expand."""
    x = np.clip(x, -1.0, 1.0)
    compressed = np.sign(x) * np.log1p(_MU * np.abs(x)) / np.log1p(_MU)
    quantised = np.round(compressed * _LEVELS) / _LEVELS
    return (np.sign(quantised) * np.expm1(np.abs(quantised) * np.log1p(_MU)) / _MU).astype(np.float32)


def a_law(x: np.ndarray) -> np.ndarray:
    """G.711 A-law round trip of float audio in [-1, 1]: compress, quantise to 8 bits, expand."""
    x = np.clip(x, -1.0, 1.0)
    ax = np.abs(x)
    log_a = 1.0 + np.log(_A)
    small = ax < 1.0 / _A
    compressed = np.where(small, _A * ax / log_a, (1.0 + np.log(np.maximum(_A * ax, 1.0))) / log_a)
    quantised = np.round(compressed * _LEVELS) / _LEVELS
    expanded = np.where(quantised < 1.0 / log_a, quantised * log_a / _A, np.exp(quantised * log_a - 1.0) / _A)
    return (np.sign(x) * expanded).astype(np.float32)


def g711(waveforms: np.ndarray, laws: np.ndarray, sampling_rate: int = G711_RATE) -> np.ndarray:
    """G.711 round trip of each row of `(C, N)` float32 audio: `laws[i]` is 0 for mu-law, 1 for A-law.

    The codec runs at 8 kHz: audio at another rate is resampled there and back, so the quantisation noise stays
    in the telephone band. Rows are scaled to a peak of 0.9 first (what a line's level control does) and back
    after, so the noise sits where it would on a line, not where a quiet file's level puts it.
    """
    from ..resampling import resample

    length = waveforms.shape[-1]
    x = resample(waveforms, sampling_rate, G711_RATE) if sampling_rate != G711_RATE else waveforms
    peak = np.max(np.abs(x), axis=-1, keepdims=True)
    scale = 0.9 / np.maximum(peak, _EPS)
    scaled = x * scale
    coded = np.where(np.asarray(laws)[:, None] == 0, mu_law(scaled), a_law(scaled)) / scale
    if sampling_rate != G711_RATE:
        coded = resample(coded, G711_RATE, sampling_rate)
        coded = np.pad(coded, ((0, 0), (0, max(0, length - coded.shape[-1]))))[:, :length]
    return np.ascontiguousarray(coded, dtype=np.float32)
