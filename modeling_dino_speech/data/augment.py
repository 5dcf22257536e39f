"""Per-crop data augmentation as in the DINO speech recipe: reverberation and additive noise, plus channels.

Each crop is, independently, reverberated with probability ``reverb_prob`` (convolution with a room impulse
response) and then, with probability ``noise_prob``, mixed with one noise category at a random SNR:
``noise`` 0-18 dB, ``music`` 3-18 dB or ``babble`` (3-7 simultaneous talkers) 3-18 dB. Beyond the paper, a
crop can then go through a random channel (``channel_prob``: band edges, tilt, peaking bands) and the G.711
telephone codec (``codec_prob``), see :mod:`.channel`, and get a random gain.

Sources, in order of preference:

* MUSAN (``musan/{noise,music,speech}/**/*.wav``) when ``musan_root`` is given, and any folder of music
  (``music_root``);
* RIRS_NOISES (``RIRS_NOISES/simulated_rirs/*/Room*/*.wav`` and the ``*rir*`` files of
  ``RIRS_NOISES/real_rirs_isotropic_noises``) when ``rir_root`` is given;
* an offline fallback for every missing category: generated coloured noise (random spectral slope between
  white and brown), synthetic music (harmonic note sequences), babble summed from other utterances of the
  training pool, and synthetic room impulse responses (direct path + exponentially decaying noise tail with
  a random RT60 and direct-to-reverberant ratio).

All randomness comes from the ``np.random.Generator`` passed to :meth:`Augmenter.augment`, so a crop's
augmentation is a pure function of that generator's seed (see ``multicrop`` for how seeds are derived).
"""

from __future__ import annotations

import glob
import logging
import math
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..utils.checks import SettingError
from .audio import AudioError, audio_info, load_audio
from .channel import apply_responses, channel_responses, draw_channel_parameters, g711

__all__ = [
    "AugmentConfig",
    "Augmenter",
    "coloured_noise",
    "mix_at_snr",
    "reverberate",
    "snr_db",
    "synthetic_music",
    "synthetic_rir",
]

logger = logging.getLogger(__name__)

CATEGORIES = ("noise", "music", "babble")
_EPS = 1e-10


@dataclass
class AugmentConfig:
    """Augmentation settings (defaults: the paper's recipe)."""

    reverb_prob: float = 0.45
    noise_prob: float = 0.7
    noise_snr: tuple[float, float] = (0.0, 18.0)
    music_snr: tuple[float, float] = (3.0, 18.0)
    babble_snr: tuple[float, float] = (3.0, 18.0)
    babble_speakers: tuple[int, int] = (3, 7)
    """Inclusive range of the number of talkers summed into one babble signal."""
    category_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Relative probability of (noise, music, babble) when a crop gets additive noise."""
    musan_root: str | None = None
    """The ``musan`` folder (holding ``noise/``, ``music/``, ``speech/``); missing categories fall back."""
    rir_root: str | None = None
    """The ``RIRS_NOISES`` folder; ``None`` uses synthetic impulse responses."""
    music_root: str | None = None
    """Any folder of music files, used when MUSAN's ``music/`` is not available."""
    noise_slope: tuple[float, float] = (0.0, 2.0)
    """Generated noise has power ~ 1/f**slope: 0 white, 1 pink, 2 brown."""
    rt60: tuple[float, float] = (0.2, 1.0)
    """Reverberation time (s) of synthetic impulse responses."""
    drr_db: tuple[float, float] = (0.0, 15.0)
    """Direct-to-reverberant energy ratio (dB) of synthetic impulse responses."""
    max_rir_seconds: float = 1.5
    channel_prob: float = 0.0
    """Probability that a crop goes through a random channel (frequency response; see :mod:`.channel`)."""
    highpass_hz: tuple[float, float] = (50.0, 300.0)
    """Range of the random channel's high-pass cutoff."""
    lowpass_hz: tuple[float, float] = (3000.0, 3900.0)
    """Range of the random channel's low-pass cutoff (clipped below the Nyquist frequency)."""
    tilt_db_per_octave: tuple[float, float] = (-3.0, 3.0)
    eq_bands: tuple[int, int] = (0, 3)
    """Inclusive range of the number of random peaking bands of a channel."""
    eq_gain_db: tuple[float, float] = (-8.0, 8.0)
    codec_prob: float = 0.0
    """Probability that a crop goes through G.711 (mu-law or A-law, equally likely)."""
    gain_db: tuple[float, float] = (0.0, 0.0)
    """Random gain per crop (dB), applied last. Without mean normalisation in the features, crops of one
    utterance otherwise share their level and the model may learn the level instead of the voice."""

    def __post_init__(self) -> None:
        for name in ("reverb_prob", "noise_prob", "channel_prob", "codec_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise SettingError(name, value, "in [0, 1] (a probability)")
        for name in (
            "noise_snr",
            "music_snr",
            "babble_snr",
            "babble_speakers",
            "noise_slope",
            "rt60",
            "drr_db",
            "gain_db",
            "highpass_hz",
            "lowpass_hz",
            "tilt_db_per_octave",
            "eq_bands",
            "eq_gain_db",
        ):
            value = tuple(getattr(self, name))
            if len(value) != 2 or not all(math.isfinite(v) for v in value) or value[0] > value[1]:
                raise SettingError(name, value, "a [low, high] pair of finite numbers with low <= high")
            setattr(self, name, value)
        if self.babble_speakers[0] < 1:
            raise SettingError("babble_speakers", self.babble_speakers, "a [low, high] pair with low >= 1")
        if self.rt60[0] <= 0:
            raise SettingError("rt60", self.rt60, "a [low, high] pair of seconds with low > 0")
        if not self.max_rir_seconds > 0:
            raise SettingError("max_rir_seconds", self.max_rir_seconds, "a number of seconds > 0")
        weights = tuple(float(w) for w in self.category_weights)
        if len(weights) != 3 or min(weights) < 0 or not 0 < sum(weights) < math.inf:
            raise SettingError(
                "category_weights",
                self.category_weights,
                "3 non-negative weights (noise, music, babble) with a positive sum",
            )
        self.category_weights = weights


# ----------------------------------------------------------------------------------------------- signals


def _fast_len(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n (FFT sizes that pocketfft handles fastest)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            candidate = p35
            while candidate < n:
                candidate <<= 1
            best = min(best, candidate)
            p35 *= 3
        p5 *= 5
    return best


def _rms(x: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean(np.square(x, dtype=np.float64), axis=-1))


def snr_db(signal: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Measured SNR (dB) between signal and noise, over the last axis."""
    return 10.0 * np.log10(
        np.mean(np.square(signal, dtype=np.float64), axis=-1) / np.mean(np.square(noise, dtype=np.float64), axis=-1)
    )


def coloured_noise(num: int, length: int, slopes: np.ndarray | float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1/f**slope, unit RMS.

    Returns:
        ``(num, length)`` float32.
    """
    return shape_noise(rng.standard_normal((num, length), dtype=np.float32), slopes)


def shape_noise(white: np.ndarray, slopes: np.ndarray | float) -> np.ndarray:
    """White noise ``(num, length)`` float32 -> power spectrum ~ 1/f**slope, unit RMS (:func:`coloured_noise`)."""
    num, length = white.shape
    slopes = np.broadcast_to(np.asarray(slopes, dtype=np.float32), (num,))
    spectrum = np.fft.rfft(white, axis=-1)
    freqs = np.arange(spectrum.shape[-1], dtype=np.float32)
    freqs[0] = freqs[1] if len(freqs) > 1 else 1.0
    spectrum *= freqs[None, :] ** (-slopes[:, None] / 2.0)
    noise = np.fft.irfft(spectrum, n=length, axis=-1)
    noise /= _rms(noise)[:, None] + _EPS
    return noise.astype(np.float32)


_WAVETABLE_SIZE = 4096
# One period of a 3-harmonic tone (1/h amplitudes): a lookup replaces three sin() calls per sample.
_WAVETABLE = sum(np.sin(2 * np.pi * h * np.arange(_WAVETABLE_SIZE) / _WAVETABLE_SIZE) / h for h in (1, 2, 3)).astype(
    np.float32
)


def synthetic_music(length: int, sampling_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A music-like signal: a sequence of decaying harmonic chords (1-3 notes, 3 harmonics), unit RMS.

    Returns:
        ``(length,)`` float32.
    """
    note_len = max(1, int(rng.uniform(0.12, 0.6) * sampling_rate))
    num_notes = -(-length // note_len)
    voices = int(rng.integers(1, 4))
    midi = rng.integers(40, 84, size=(num_notes, voices))
    return music_from_notes(length, sampling_rate, note_len, midi, rng.uniform(0.1, 0.5))


def music_from_notes(length: int, sampling_rate: int, note_len: int, midi: np.ndarray, decay: float) -> np.ndarray:
    """:func:`synthetic_music` from its draws: notes of ``note_len`` samples, MIDI pitches ``(notes, voices)``
    and the notes' decay time (s)."""
    f0 = (440.0 / sampling_rate) * 2.0 ** ((midi - 69) / 12.0)  # cycles per sample, (notes, voices)
    note_idx = np.arange(length) // note_len
    # Continuous phase across note changes (no clicks), wrapped into the wavetable.
    phase = np.cumsum(f0[note_idx], axis=0)
    signal = _WAVETABLE[(phase * _WAVETABLE_SIZE).astype(np.int64) & (_WAVETABLE_SIZE - 1)].sum(axis=1)
    t_in_note = (np.arange(length) - note_idx * note_len) / sampling_rate
    signal *= (1.0 - np.exp(-t_in_note / 0.005)) * np.exp(-t_in_note / decay)
    signal /= _rms(signal) + _EPS
    return signal.astype(np.float32)


def synthetic_rir(
    sampling_rate: int,
    rng: np.random.Generator,
    rt60: tuple[float, float] = (0.2, 1.0),
    drr_db: tuple[float, float] = (0.0, 15.0),
    max_seconds: float = 1.5,
) -> np.ndarray:
    """A room impulse response: unit direct path at t=0, then a Gaussian tail decaying 60 dB in RT60 seconds,
    starting after a random first-reflection delay, scaled to a random direct-to-reverberant ratio.

    Returns:
        ``(L,)`` float32 with unit L2 norm, ``L = min(RT60, max_seconds) * sampling_rate``.
    """
    t60 = rng.uniform(*rt60)
    white = rng.standard_normal(rir_length(t60, sampling_rate, max_seconds))
    first_reflection = int(rng.uniform(0.001, 0.01) * sampling_rate)
    drr = 10.0 ** (rng.uniform(*drr_db) / 10.0)
    return rir_from_draws(sampling_rate, t60, white, first_reflection, drr)


def rir_length(t60: float, sampling_rate: int, max_seconds: float) -> int:
    """Samples of a synthetic impulse response of reverberation time ``t60``."""
    return max(2, int(min(t60, max_seconds) * sampling_rate))


def rir_from_draws(sampling_rate: int, t60: float, white: np.ndarray, first_reflection: int, drr: float) -> np.ndarray:
    """:func:`synthetic_rir` from its draws: the tail's white noise ``(L,)``, the first reflection (samples) and
    the linear direct-to-reverberant ratio."""
    t = np.arange(len(white)) / sampling_rate
    tail = white * np.exp(-6.907755 * t / t60)  # ln(1000) = 60 dB in amplitude
    tail[: max(1, first_reflection)] = 0.0
    tail *= np.sqrt(1.0 / (np.sum(tail**2) * drr + _EPS))
    tail[0] = 1.0
    return (tail / np.sqrt(np.sum(tail**2))).astype(np.float32)


def reverberate(waveforms: np.ndarray, rirs: Sequence[np.ndarray]) -> np.ndarray:
    """Convolve each row with its impulse response (one batched FFT), aligned on the direct path and
    rescaled to the dry signal's RMS, so reverberation changes the sound but not the level or timing.

    Args:
        waveforms: ``(C, N)`` float32.
        rirs: C impulse responses of any lengths.

    Returns:
        ``(C, N)`` float32.
    """
    num, length = waveforms.shape
    rir_len = max(len(r) for r in rirs)
    padded = np.zeros((num, rir_len), dtype=np.float32)
    for i, rir in enumerate(rirs):
        padded[i, : len(rir)] = rir
    delays = np.abs(padded).argmax(axis=1)
    n_fft = _fast_len(length + rir_len - 1)
    wet = np.fft.irfft(np.fft.rfft(waveforms, n_fft, axis=-1) * np.fft.rfft(padded, n_fft, axis=-1), n_fft, axis=-1)
    wet = np.take_along_axis(wet, delays[:, None] + np.arange(length)[None, :], axis=1)
    wet *= (_rms(waveforms) / (_rms(wet) + _EPS))[:, None]
    return wet.astype(np.float32)


def mix_at_snr(waveforms: np.ndarray, noises: np.ndarray, snrs_db: np.ndarray) -> np.ndarray:
    """Add ``noises`` scaled so that 10*log10(P_signal / P_noise) equals ``snrs_db`` for every row.

    Rows whose signal or noise is silent are returned unchanged (an SNR is undefined there).

    Args:
        waveforms, noises: ``(C, N)``; snrs_db: ``(C,)``.

    Returns:
        ``(C, N)`` float32.
    """
    p_signal = np.mean(np.square(waveforms, dtype=np.float64), axis=-1)
    p_noise = np.mean(np.square(noises, dtype=np.float64), axis=-1)
    valid = (p_signal > _EPS) & (p_noise > _EPS)
    scale = np.where(valid, np.sqrt(p_signal / np.maximum(p_noise, _EPS) / 10.0 ** (np.asarray(snrs_db) / 10.0)), 0.0)
    return (waveforms + scale[:, None] * noises).astype(np.float32)


# ----------------------------------------------------------------------------------------------- augmenter


def _audio_files(folder: str) -> list[str]:
    files = []
    for ext in ("wav", "flac", "ogg", "mp3"):
        files.extend(glob.glob(os.path.join(folder, "**", f"*.{ext}"), recursive=True))
    return sorted(files)


class Augmenter:
    """Applies :class:`AugmentConfig` to batches of equal-length crops.

    Args:
        config: the settings.
        babble_pool: paths of other training utterances, used for babble when MUSAN ``speech/`` is absent.
        sampling_rate: the crops' rate (the model's, from its feature extractor); noise, music, speech and
            impulse-response files at other rates are resampled to it as they are read, and the generated
            sources are made at it.

    The file lists are scanned once here (cheap to pickle into DataLoader workers); audio is read lazily,
    one random segment per use, so MUSAN's ~100 h never have to fit in memory.
    """

    def __init__(
        self, config: AugmentConfig | None = None, babble_pool: Sequence[str] | None = None, *, sampling_rate: int
    ):
        self.config = config or AugmentConfig()
        self.sampling_rate = int(sampling_rate)
        cfg = self.config
        self.noise_files: list[str] = []
        self.music_files: list[str] = []
        self.speech_files: list[str] = []
        self.rir_files: list[str] = []
        if cfg.musan_root is not None:
            if not os.path.isdir(cfg.musan_root):
                raise FileNotFoundError(f"{cfg.musan_root}: MUSAN folder (AugmentConfig.musan_root) does not exist")
            for category, target in (
                ("noise", self.noise_files),
                ("music", self.music_files),
                ("speech", self.speech_files),
            ):
                folder = os.path.join(cfg.musan_root, category)
                if os.path.isdir(folder):
                    target.extend(_audio_files(folder))
        if cfg.music_root is not None:
            if not os.path.isdir(cfg.music_root):
                raise FileNotFoundError(f"{cfg.music_root}: music folder (AugmentConfig.music_root) does not exist")
            self.music_files.extend(_audio_files(cfg.music_root))
        if cfg.rir_root is not None:
            if not os.path.isdir(cfg.rir_root):
                raise FileNotFoundError(f"{cfg.rir_root}: RIRS_NOISES folder (AugmentConfig.rir_root) does not exist")
            self.rir_files.extend(
                sorted(glob.glob(os.path.join(cfg.rir_root, "simulated_rirs", "*", "Room*", "*.wav")))
            )
            real = glob.glob(os.path.join(cfg.rir_root, "real_rirs_isotropic_noises", "*.wav"))
            self.rir_files.extend(sorted(f for f in real if "rir" in os.path.basename(f).lower()))
        self.babble_files: list[str] = self.speech_files or list(babble_pool or [])
        # Per-instance (so per-worker) caches: header facts of files already used, and files that failed.
        self._info: dict[str, tuple[int, int]] = {}
        self._bad: set[str] = set()
        logger.info("augmentation sources: %s", self.describe())

    def describe(self) -> dict[str, str]:
        """Where each category comes from (files found, or the generated fallback)."""

        def src(files, fallback):
            return f"{len(files)} files" if files else fallback

        babble = (
            f"{len(self.speech_files)} MUSAN speech files"
            if self.speech_files
            else f"{len(self.babble_files)} training utterances"
            if self.babble_files
            else "unavailable (coloured noise instead)"
        )
        return {
            "noise": src(self.noise_files, "generated coloured noise"),
            "music": src(self.music_files, "synthetic music"),
            "babble": babble,
            "reverb": src(self.rir_files, "synthetic room impulse responses"),
        }

    # -- sources ------------------------------------------------------------------------------------------

    def _segment(self, files: list[str], length: int, rng: np.random.Generator) -> np.ndarray | None:
        """A random ``length``-sample segment of a random file, tiled if the file is shorter; None on error."""
        path = files[int(rng.integers(len(files)))]
        offset_draw = rng.random()  # drawn even on failure so later draws do not depend on file health
        if path in self._bad:
            return None
        sr = self.sampling_rate
        try:
            if path not in self._info:
                frames, native_sr, _ = audio_info(path)
                self._info[path] = (frames, native_sr)
            frames, native_sr = self._info[path]
            need = -(-length * native_sr // sr) + 1
            if frames > need:
                start = int(offset_draw * (frames - need))
                seg = load_audio(path, sr, start=start, frames=need)
            else:
                seg = load_audio(path, sr)
        except AudioError as err:
            self._bad.add(path)
            logger.warning("augmentation source skipped: %s", err)
            return None
        if len(seg) < length:
            seg = np.resize(seg, length)  # repeat the segment to fill the crop
        return seg[:length]

    def _rir(self, rng: np.random.Generator) -> np.ndarray:
        cfg = self.config
        if self.rir_files:
            path = self.rir_files[int(rng.integers(len(self.rir_files)))]
            if path not in self._bad:
                try:
                    rir = load_audio(path, self.sampling_rate, channel=0)[
                        : int(cfg.max_rir_seconds * self.sampling_rate)
                    ]
                    norm = np.sqrt(np.sum(np.square(rir, dtype=np.float64)))
                    if norm > _EPS:
                        return (rir / norm).astype(np.float32)
                    raise AudioError(path, "impulse response is all zeros")
                except AudioError as err:
                    self._bad.add(path)
                    logger.warning("impulse response skipped: %s", err)
        return synthetic_rir(self.sampling_rate, rng, cfg.rt60, cfg.drr_db, cfg.max_rir_seconds)

    def _noise(self, category: str, length: int, rng: np.random.Generator) -> np.ndarray:
        cfg = self.config
        seg = None
        if category == "noise" and self.noise_files:
            seg = self._segment(self.noise_files, length, rng)
        elif category == "music":
            seg = (
                self._segment(self.music_files, length, rng)
                if self.music_files
                else synthetic_music(length, self.sampling_rate, rng)
            )
        elif category == "babble" and self.babble_files:
            talkers = int(rng.integers(cfg.babble_speakers[0], cfg.babble_speakers[1] + 1))
            parts = [self._segment(self.babble_files, length, rng) for _ in range(talkers)]
            parts = [p for p in parts if p is not None]
            if parts:
                stack = np.stack(parts)
                # Equal-level talkers, so no single voice dominates the babble.
                seg = (stack / (_rms(stack)[:, None] + _EPS)).sum(axis=0).astype(np.float32)
        if seg is None:
            seg = coloured_noise(1, length, rng.uniform(*cfg.noise_slope), rng)[0]
        return seg

    def _channel_draws(self, num: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """The random channels of ``num`` crops (:func:`.channel.draw_channel_parameters` with this config)."""
        cfg = self.config
        return draw_channel_parameters(
            num,
            self.sampling_rate,
            rng,
            cfg.highpass_hz,
            cfg.lowpass_hz,
            cfg.tilt_db_per_octave,
            cfg.eq_bands,
            cfg.eq_gain_db,
        )

    # -- the transform ------------------------------------------------------------------------------------

    def augment(self, waveforms: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augment each crop independently.

        Args:
            waveforms: ``(C, N)`` (or ``(N,)``) float32 crops of equal length at ``sampling_rate``.
            rng: the only source of randomness; the same generator state gives the same output.

        Returns:
            array of the input's shape, float32.
        """
        cfg = self.config
        single = waveforms.ndim == 1
        out = np.array(waveforms[None] if single else waveforms, dtype=np.float32, copy=True)
        num, length = out.shape
        # All decisions are drawn up front, in a fixed order, so they do not depend on the audio content.
        reverb = rng.random(num) < cfg.reverb_prob
        noisy = rng.random(num) < cfg.noise_prob
        weights = np.asarray(cfg.category_weights) / sum(cfg.category_weights)
        categories = rng.choice(len(CATEGORIES), size=num, p=weights)
        ranges = np.array([cfg.noise_snr, cfg.music_snr, cfg.babble_snr], dtype=np.float64)
        snrs = rng.uniform(ranges[categories, 0], ranges[categories, 1])

        if reverb.any():
            rows = np.flatnonzero(reverb)
            out[rows] = reverberate(out[rows], [self._rir(rng) for _ in rows])
        if noisy.any():
            rows = np.flatnonzero(noisy)
            noises = np.stack([self._noise(CATEGORIES[categories[r]], length, rng) for r in rows])
            out[rows] = mix_at_snr(out[rows], noises, snrs[rows])
        # Channel draws come after the acoustic ones and only when enabled, so recipes without channels keep
        # their exact augmentations.
        if cfg.channel_prob > 0:
            rows = np.flatnonzero(rng.random(num) < cfg.channel_prob)
            if rows.size:
                gains = channel_responses(self._channel_draws(rows.size, rng), length // 2 + 1, self.sampling_rate)
                out[rows] = apply_responses(out[rows], gains)
        if cfg.codec_prob > 0:
            coded = rng.random(num) < cfg.codec_prob
            laws = rng.integers(0, 2, size=num)
            if coded.any():
                rows = np.flatnonzero(coded)
                out[rows] = g711(out[rows], laws[rows], self.sampling_rate)
        if cfg.gain_db != (0.0, 0.0):  # drawn last, so the other draws do not depend on this setting
            out *= (10.0 ** (rng.uniform(*cfg.gain_db, size=num) / 20.0)).astype(np.float32)[:, None]
        return out[0] if single else out

    __call__ = augment
