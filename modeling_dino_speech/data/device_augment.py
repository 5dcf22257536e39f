"""Augmentation and fbank on the training device: the loader only decodes and crops.

The CPU path (``data.augment_on: cpu``, :class:`.augment.Augmenter` in the DataLoader workers) costs about 100
augmented crops/s per core (benchmarks/RESULTS.md), a tenth of what one GPU consumes at paper scale. With
``data.augment_on: device`` the work is split:

* **in the loader** (:class:`AugmentPlanner`, pickled into the workers): the crops are cut as before and shipped
  as int16 (exact for 16-bit PCM read at the model's rate), with every random decision the CPU path would make
  for them -- reverberation or not, which impulse response, noise category, SNR, which noise file and where in
  it, channel cut-offs and peaking bands, codec law, gain -- drawn from the item's generator **in the CPU path's
  order**. Where the CPU path draws a whole random signal (the white noise behind generated noise and behind a
  synthetic impulse response's tail) the planner draws one 63-bit seed instead, and the device draws the signal
  from a ``torch.Generator`` seeded with it. With file sources only (MUSAN noise/music/speech, RIRS_NOISES: the
  paper recipe) the decisions are therefore the CPU path's own for the same seed; with generated sources they
  follow the same distributions. Babble from the training pool (no MUSAN ``speech/``) is read and summed in the
  loader, exactly as the CPU path does, and shipped as float32.
* **on the device** (:class:`DeviceAugmenter`, once per process): the noise, music, speech and impulse-response
  files are read once into a :class:`SourceBank` (int16 when that is exact, on the device unless they would
  take more than a quarter of its memory, then in pinned host memory), and each micro-batch is augmented in
  one batched pass per crop length -- FFT convolution with the impulse responses, noise segments gathered from
  the bank and mixed at the planned SNRs, channel responses, G.711, gains -- then turned into fbank features
  by ``feature_extractor.compute_features`` for the whole multi-crop batch at once.

The same code runs on CPU (tests, the demo) and on CUDA. Every tensor function here mirrors a numpy one of
:mod:`.augment` / :mod:`.channel` and equals it for the same inputs to float rounding
(``tests/test_device_augment.py``), except G.711 away from 8 kHz, whose round trip to 8 kHz goes through a
windowed-sinc resampler (:func:`resample_torch`) instead of libsoxr. VAD stays in the loader: it decides which
samples are cropped.

Determinism: a crop's augmentation is a pure function of its plan, and the plan of the item's generator, i.e.
of ``(seed, epoch, index)`` -- the property exact resume relies on. Results on CPU and on CUDA differ in the
generated noise (their generators differ) and by float rounding.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .audio import AudioError, audio_info, load_audio
from .augment import _EPS, _WAVETABLE, _WAVETABLE_SIZE, CATEGORIES, AugmentConfig, Augmenter, _fast_len, _rms
from .channel import _A, _LEVELS, _MU, G711_RATE

__all__ = [
    "AugmentPlanner",
    "DeviceAugmenter",
    "SourceBank",
    "apply_responses_torch",
    "bank_device",
    "channel_responses_torch",
    "collate_plans",
    "g711_torch",
    "mix_at_snr_torch",
    "music_from_notes_torch",
    "resample_torch",
    "reverberate_torch",
    "rir_from_draws_torch",
    "shape_noise_torch",
    "to_int16",
]

logger = logging.getLogger(__name__)

# Where a noisy crop's noise comes from (plan["source"]).
NO_SOURCE, BANK, COLOURED, MUSIC, POOL_BABBLE = 0, 1, 2, 3, 4
_SEED_HIGH = 2**63 - 1
# Banks above this share of the device's memory stay in pinned host memory (segments are gathered there).
_BANK_DEVICE_SHARE = 0.25


def to_int16(waveforms: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] -> int16 sample values (exact for audio read from 16-bit PCM at its own rate)."""
    return np.clip(np.rint(np.asarray(waveforms, dtype=np.float32) * 32768.0), -32768, 32767).astype(np.int16)


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(_SEED_HIGH))


# --------------------------------------------------------------------------------------------- the planner


class AugmentPlanner(Augmenter):
    """Draws what :meth:`Augmenter.augment` would do to a set of crops, without doing it.

    Args:
        config, babble_pool, sampling_rate: as for :class:`Augmenter` (same file lists, same fallbacks).
        bad_files: files the :class:`SourceBank` could not use; the CPU path discovers them on first use and
            falls back from then on, the planner knows them up front (the bank reads everything once).
    """

    def __init__(
        self,
        config: AugmentConfig | None = None,
        babble_pool: Sequence[str] | None = None,
        *,
        sampling_rate: int,
        bad_files: Sequence[str] = (),
    ):
        super().__init__(config, babble_pool, sampling_rate=sampling_rate)
        self._bad = set(bad_files)
        self.bank_base = {
            "noise": 0,
            "music": len(self.noise_files),
            "speech": len(self.noise_files) + len(self.music_files),
        }

    def bank_files(self) -> list[str]:
        """The files of the segment bank, in bank order: noise, music, speech."""
        return [*self.noise_files, *self.music_files, *self.speech_files]

    def max_talkers(self) -> int:
        return max(1, int(self.config.babble_speakers[1]))

    def max_notes(self, length: int) -> int:
        return -(-length // max(1, int(0.12 * self.sampling_rate)))

    def empty_plan(self, num: int, length: int) -> dict[str, np.ndarray]:
        cfg = self.config
        bands = max(int(cfg.eq_bands[1]), 0)
        return {
            "reverb": np.zeros(num, bool),
            "rir_file": np.full(num, -1, np.int64),
            "rir_t60": np.zeros(num),
            "rir_seed": np.zeros(num, np.int64),
            "rir_first": np.zeros(num, np.int64),
            "rir_drr": np.zeros(num),
            "noisy": np.zeros(num, bool),
            "category": np.zeros(num, np.int64),
            "snr": np.zeros(num),
            "source": np.zeros(num, np.int64),
            "seg_file": np.full((num, self.max_talkers()), -1, np.int64),
            "seg_offset": np.zeros((num, self.max_talkers())),
            "slope": np.zeros(num),
            "noise_seed": np.zeros(num, np.int64),
            "note_len": np.ones(num, np.int64),
            "voices": np.zeros(num, np.int64),
            "midi": np.full((num, self.max_notes(length), 3), 69, np.int64),
            "decay": np.ones(num),
            "channel": np.zeros(num, bool),
            "ch_high": np.zeros(num),
            "ch_low": np.zeros(num),
            "ch_tilt": np.zeros(num),
            "ch_bands": np.zeros(num, np.int64),
            "ch_centre": np.zeros((num, bands)),
            "ch_width": np.ones((num, bands)),
            "ch_gain": np.zeros((num, bands)),
            "codec": np.zeros(num, bool),
            "law": np.zeros(num, np.int64),
            "gain": np.ones(num, np.float32),
            "babble_row": np.zeros(0, np.int64),
            "babble_wave": np.zeros((0, length), np.float32),
        }

    def plan(self, num: int, length: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """The augmentation of ``num`` crops of ``length`` samples, drawn from ``rng`` as :meth:`Augmenter.augment`
        draws it (see the module docstring for where the two part ways)."""
        cfg = self.config
        p = self.empty_plan(num, length)
        reverb = rng.random(num) < cfg.reverb_prob
        noisy = rng.random(num) < cfg.noise_prob
        weights = np.asarray(cfg.category_weights) / sum(cfg.category_weights)
        categories = rng.choice(len(CATEGORIES), size=num, p=weights)
        ranges = np.array([cfg.noise_snr, cfg.music_snr, cfg.babble_snr], dtype=np.float64)
        p["snr"] = rng.uniform(ranges[categories, 0], ranges[categories, 1])
        p["reverb"], p["noisy"], p["category"] = reverb, noisy, categories.astype(np.int64)
        for r in np.flatnonzero(reverb):
            self._plan_rir(p, r, rng)
        babble: list[tuple[int, np.ndarray]] = []
        for r in np.flatnonzero(noisy):
            self._plan_noise(p, r, CATEGORIES[categories[r]], length, rng, babble)
        if babble:
            p["babble_row"] = np.array([r for r, _ in babble], np.int64)
            p["babble_wave"] = np.stack([w for _, w in babble])
        if cfg.channel_prob > 0:
            rows = np.flatnonzero(rng.random(num) < cfg.channel_prob)
            if rows.size:
                drawn = self._channel_draws(rows.size, rng)
                p["channel"][rows] = True
                for key in ("high", "low", "tilt", "bands", "centre", "width", "gain"):
                    p[f"ch_{key}"][rows] = drawn[key]
        if cfg.codec_prob > 0:
            p["codec"] = rng.random(num) < cfg.codec_prob
            p["law"] = rng.integers(0, 2, size=num).astype(np.int64)
        if cfg.gain_db != (0.0, 0.0):
            p["gain"] = (10.0 ** (rng.uniform(*cfg.gain_db, size=num) / 20.0)).astype(np.float32)
        return p

    def _plan_rir(self, p: dict, r: int, rng: np.random.Generator) -> None:
        cfg = self.config
        if self.rir_files:
            i = int(rng.integers(len(self.rir_files)))
            if self.rir_files[i] not in self._bad:
                p["rir_file"][r] = i
                return
        # synthetic_rir's draws, with a seed where it draws the tail's white noise
        p["rir_t60"][r] = rng.uniform(*cfg.rt60)
        p["rir_seed"][r] = _seed(rng)
        p["rir_first"][r] = int(rng.uniform(0.001, 0.01) * self.sampling_rate)
        p["rir_drr"][r] = 10.0 ** (rng.uniform(*cfg.drr_db) / 10.0)

    def _plan_segment(self, p: dict, r: int, slot: int, kind: str, rng: np.random.Generator) -> bool:
        """``_segment``'s draws for a bank file; False when the file is unusable (the caller falls back)."""
        files = {"noise": self.noise_files, "music": self.music_files, "speech": self.speech_files}[kind]
        i = int(rng.integers(len(files)))
        offset = rng.random()
        if files[i] in self._bad:
            return False
        p["seg_file"][r, slot] = self.bank_base[kind] + i
        p["seg_offset"][r, slot] = offset
        return True

    def _plan_noise(self, p: dict, r: int, category: str, length: int, rng: np.random.Generator, babble: list) -> None:
        cfg, sr = self.config, self.sampling_rate
        found = False
        if category == "noise" and self.noise_files:
            found = self._plan_segment(p, r, 0, "noise", rng)
        elif category == "music":
            if self.music_files:
                found = self._plan_segment(p, r, 0, "music", rng)
            else:  # synthetic_music's draws
                note_len = max(1, int(rng.uniform(0.12, 0.6) * sr))
                voices = int(rng.integers(1, 4))
                midi = rng.integers(40, 84, size=(-(-length // note_len), voices))
                p["source"][r], p["note_len"][r], p["voices"][r] = MUSIC, note_len, voices
                p["midi"][r, : midi.shape[0], :voices] = midi
                p["decay"][r] = rng.uniform(0.1, 0.5)
                return
        elif category == "babble" and self.babble_files:
            talkers = int(rng.integers(cfg.babble_speakers[0], cfg.babble_speakers[1] + 1))
            if self.speech_files:
                found = any([self._plan_segment(p, r, t, "speech", rng) for t in range(talkers)])
            else:  # babble from the training pool: read and summed here, as the CPU path does
                parts = [self._segment(self.babble_files, length, rng) for _ in range(talkers)]
                parts = [part for part in parts if part is not None]
                if parts:
                    stack = np.stack(parts)
                    babble.append((r, (stack / (_rms(stack)[:, None] + _EPS)).sum(axis=0).astype(np.float32)))
                    p["source"][r] = POOL_BABBLE
                    return
        if found:
            p["source"][r] = BANK
            return
        # coloured_noise's draws, with a seed where it draws white noise
        p["slope"][r] = rng.uniform(*cfg.noise_slope)
        p["noise_seed"][r] = _seed(rng)
        p["source"][r] = COLOURED


def collate_plans(plans: Sequence[Mapping[str, np.ndarray]], count: int) -> dict[str, torch.Tensor]:
    """Per-item plans of ``count`` crops each -> one plan of ``count * len(plans)`` rows in view-major order
    (row ``v * B + b`` is view ``v`` of item ``b``, the order of the stacked crops)."""
    batch = len(plans)
    out: dict[str, torch.Tensor] = {}
    for key in plans[0]:
        if key in ("babble_row", "babble_wave"):
            continue
        stacked = np.stack([np.asarray(p[key]) for p in plans], axis=1)  # (count, B, ...)
        out[key] = torch.from_numpy(np.ascontiguousarray(stacked.reshape(count * batch, *stacked.shape[2:])))
    rows = [p["babble_row"] * batch + b for b, p in enumerate(plans)]
    out["babble_row"] = torch.from_numpy(np.concatenate(rows).astype(np.int64))
    waves = [p["babble_wave"] for p in plans]
    out["babble_wave"] = torch.from_numpy(np.concatenate(waves).astype(np.float32))
    return out


# --------------------------------------------------------------------------------------------- tensor ops


def _power_torch(x: torch.Tensor) -> torch.Tensor:
    """Mean square over the last axis, float64 (squares in x's precision, accumulated in float64)."""
    return torch.sum(x * x, dim=-1, dtype=torch.float64) / max(x.shape[-1], 1)


def _rms_torch(x: torch.Tensor) -> torch.Tensor:
    """RMS over the last axis, in float64 like :func:`.augment._rms`."""
    return torch.sqrt(_power_torch(x))


def reverberate_torch(waveforms: torch.Tensor, rirs: torch.Tensor) -> torch.Tensor:
    """:func:`.augment.reverberate` for ``(C, N)`` float32 crops and ``(C, L)`` zero-padded impulse responses."""
    length = waveforms.shape[-1]
    delays = rirs.abs().argmax(dim=1)
    n_fft = _fast_len(length + rirs.shape[-1] - 1)
    wet = torch.fft.irfft(torch.fft.rfft(waveforms, n_fft) * torch.fft.rfft(rirs, n_fft), n_fft)
    wet = torch.gather(wet, 1, delays[:, None] + torch.arange(length, device=wet.device)[None, :])
    return wet * (_rms_torch(waveforms) / (_rms_torch(wet) + _EPS)).float()[:, None]


def mix_at_snr_torch(waveforms: torch.Tensor, noises: torch.Tensor, snrs_db: torch.Tensor) -> torch.Tensor:
    """:func:`.augment.mix_at_snr`: noise scaled to ``snrs_db`` per row; silent rows left unchanged."""
    p_signal, p_noise = _power_torch(waveforms), _power_torch(noises)
    valid = (p_signal > _EPS) & (p_noise > _EPS)
    snrs = snrs_db.to(device=waveforms.device, dtype=torch.float64)
    scale = torch.sqrt(p_signal / p_noise.clamp_min(_EPS) / 10.0 ** (snrs / 10.0))
    scale = torch.where(valid, scale, torch.zeros_like(scale))
    return waveforms + scale.float()[:, None] * noises


def shape_noise_torch(white: torch.Tensor, slopes: torch.Tensor) -> torch.Tensor:
    """:func:`.augment.shape_noise`: ``(K, N)`` float32 white noise -> 1/f**slope spectrum, unit RMS."""
    length = white.shape[-1]
    spectrum = torch.fft.rfft(white.float())
    freqs = torch.arange(spectrum.shape[-1], dtype=torch.float32, device=white.device)
    freqs[0] = freqs[1] if len(freqs) > 1 else 1.0
    spectrum = spectrum * freqs[None, :] ** (-slopes.to(white.device, torch.float32)[:, None] / 2.0)
    noise = torch.fft.irfft(spectrum, n=length)
    return noise / (_rms_torch(noise) + _EPS).float()[:, None]


def music_from_notes_torch(
    length: int,
    sampling_rate: int,
    note_len: torch.Tensor,
    midi: torch.Tensor,
    voices: torch.Tensor,
    decay: torch.Tensor,
) -> torch.Tensor:
    """:func:`.augment.music_from_notes` for ``K`` signals: ``note_len``, ``voices``, ``decay`` ``(K,)``, ``midi``
    ``(K, notes, 3)`` (voices past ``voices`` ignored). Returns ``(K, length)`` float32."""
    device = midi.device
    table = torch.from_numpy(_WAVETABLE).to(device)
    f0 = (440.0 / sampling_rate) * 2.0 ** ((midi.double() - 69.0) / 12.0)  # (K, notes, 3)
    samples = torch.arange(length, device=device)
    note_idx = samples[None, :] // note_len[:, None]  # (K, L)
    per_sample = torch.gather(f0, 1, note_idx[..., None].expand(-1, -1, 3))  # (K, L, 3)
    phase = torch.cumsum(per_sample, dim=1)
    wave = table[(phase * _WAVETABLE_SIZE).long() & (_WAVETABLE_SIZE - 1)]
    used = (torch.arange(3, device=device)[None, :] < voices[:, None]).float()  # (K, 3)
    signal = (wave * used[:, None, :]).sum(dim=-1)
    t_in_note = (samples[None, :] - note_idx * note_len[:, None]).double() / sampling_rate
    envelope = (1.0 - torch.exp(-t_in_note / 0.005)) * torch.exp(-t_in_note / decay.double()[:, None])
    signal = (signal.double() * envelope).float()
    return (signal.double() / (_rms_torch(signal) + _EPS)[:, None]).float()


def rir_from_draws_torch(
    sampling_rate: int,
    t60: torch.Tensor,
    white: torch.Tensor,
    lengths: torch.Tensor,
    first: torch.Tensor,
    drr: torch.Tensor,
) -> torch.Tensor:
    """:func:`.augment.rir_from_draws` for ``K`` responses: ``white`` ``(K, L)`` (row ``k`` valid up to
    ``lengths[k]``), ``t60``, ``first`` (samples), ``drr`` (linear) ``(K,)``. Returns ``(K, L)`` float32, zero
    past each length."""
    device = white.device
    samples = torch.arange(white.shape[-1], device=device)
    t = samples.double() / sampling_rate
    valid = samples[None, :] < lengths[:, None]
    tail = white.double() * torch.exp(-6.907755 * t[None, :] / t60.double()[:, None]) * valid
    tail = torch.where(samples[None, :] < first.clamp_min(1)[:, None], torch.zeros_like(tail), tail)
    tail = tail * torch.sqrt(1.0 / (torch.sum(tail**2, dim=-1) * drr.double() + _EPS))[:, None]
    tail[:, 0] = 1.0
    return (tail / torch.sqrt(torch.sum(tail**2, dim=-1))[:, None]).float()


def _edge_torch(freqs: torch.Tensor, cutoff: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    x = torch.clamp((freqs[None, :] - cutoff[:, None]) / width[:, None] + 0.5, 0.0, 1.0)
    return 0.5 - 0.5 * torch.cos(math.pi * x)


def channel_responses_torch(params: Mapping[str, torch.Tensor], num_bins: int, sampling_rate: int) -> torch.Tensor:
    """:func:`.channel.channel_responses` from the same parameters (``high``, ``low``, ``tilt``, ``bands``,
    ``centre``, ``width``, ``gain``): ``(num, num_bins)`` float32 (numpy works in float64; here the shape is
    float32 and the band edges float64, which keeps the stop band as deep as numpy's)."""
    high = params["high"].float()
    device = high.device
    freqs64 = torch.linspace(0.0, 0.5 * sampling_rate, num_bins, dtype=torch.float64)
    speech = (freqs64 >= 300.0) & (freqs64 <= 3000.0)  # on the host: no device synchronisation to test it
    has_speech_band = bool(speech.any())
    freqs64, speech = freqs64.to(device), speech.to(device)
    freqs = freqs64.float()
    octaves = torch.log2(freqs.clamp_min(1.0) / 1000.0)
    response_db = params["tilt"].float()[:, None] * octaves[None, :]
    centre, width, gain = params["centre"].float(), params["width"].float(), params["gain"].float()
    width = torch.where(width > 0, width, torch.ones_like(width))  # unused bands: any width, their gain is 0
    for b in range(centre.shape[1]):  # bands in the numpy order, unused bands add zero
        used = (params["bands"] > b).float()
        bump = torch.exp(-0.5 * ((octaves[None, :] - centre[:, b, None]) / (0.5 * width[:, b, None])) ** 2)
        response_db = response_db + (used * gain[:, b])[:, None] * bump
    gains = torch.pow(10.0, response_db / 20.0).double()
    # The band edges in float64: in float32, 1 - (0.5 - 0.5 cos) leaves the stop band at ~1e-7 instead of ~0.
    high64 = params["high"].double()
    gains = gains * _edge_torch(freqs64, high64, torch.clamp(0.5 * high64, min=20.0))
    gains = gains * (1.0 - _edge_torch(freqs64, params["low"].double(), torch.full_like(high64, 400.0)))
    if has_speech_band:
        gains = gains / (torch.sqrt(torch.mean(torch.square(gains[:, speech]), dim=1, keepdim=True)) + _EPS)
    return gains.float()


def apply_responses_torch(waveforms: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """:func:`.channel.apply_responses`: zero-phase filtering of ``(C, N)`` by ``(C, N // 2 + 1)`` gains."""
    return torch.fft.irfft(torch.fft.rfft(waveforms) * gains, n=waveforms.shape[-1])


def _mu_law_torch(x: torch.Tensor) -> torch.Tensor:
    """:func:`.channel.mu_law` of float32 audio, in numpy's precisions (float32 up to the log, then float64)."""
    x = x.float().clamp(-1.0, 1.0)
    log_mu = math.log1p(_MU)
    compressed = (torch.sign(x) * torch.log1p(_MU * x.abs())).double() / log_mu
    quantised = torch.round(compressed * _LEVELS) / _LEVELS
    return torch.sign(quantised) * torch.expm1(quantised.abs() * log_mu) / _MU


def _a_law_torch(x: torch.Tensor) -> torch.Tensor:
    """:func:`.channel.a_law` of float32 audio, in numpy's precisions."""
    x = x.float().clamp(-1.0, 1.0)
    ax = x.abs()
    log_a = 1.0 + math.log(_A)
    linear = (_A * ax).double() / log_a
    logarithmic = (1.0 + torch.log(torch.clamp(_A * ax, min=1.0))).double() / log_a
    quantised = torch.round(torch.where(ax < 1.0 / _A, linear, logarithmic) * _LEVELS) / _LEVELS
    expanded = torch.where(quantised < 1.0 / log_a, quantised * log_a / _A, torch.exp(quantised * log_a - 1.0) / _A)
    return torch.sign(x).double() * expanded


_KERNELS: dict[tuple, torch.Tensor] = {}


def _sinc_kernels(up: int, down: int, device: torch.device, zeros: int = 24, beta: float = 8.0, rolloff: float = 0.94):
    """Kaiser-windowed sinc low-pass taps, one row per output phase, ``(up, 2 * half + 1)``, and ``half``.

    Row ``p`` weighs input samples ``base - half .. base + half`` for the output at ``base + p / up`` (in input
    samples); each row sums to one (unit gain at DC)."""
    key = (up, down, str(device))
    if key not in _KERNELS:
        cutoff = rolloff * min(1.0, up / down)  # as a fraction of the input's Nyquist frequency
        half = int(math.ceil(zeros / cutoff))
        j = torch.arange(-half, half + 1, dtype=torch.float64)
        t = torch.arange(up, dtype=torch.float64)[:, None] / up - j[None, :]  # output position minus input sample
        window = torch.special.i0(beta * torch.sqrt(torch.clamp(1.0 - (t / (half + 1)) ** 2, min=0.0)))
        taps = cutoff * torch.sinc(cutoff * t) * window
        _KERNELS[key] = (taps / taps.sum(dim=1, keepdim=True)).to(device=device, dtype=torch.float32)
    kernels = _KERNELS[key]
    return kernels, (kernels.shape[-1] - 1) // 2


def resample_torch(waveforms: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Band-limited rational resampling of ``(C, N)`` audio (polyphase Kaiser-windowed sinc, the pass band flat to
    about 90% of the lower Nyquist frequency). Returns ``(C, ceil(N * new_sr / orig_sr))`` in the input dtype.

    It stands in for libsoxr on the device; the two agree closely in the pass band, not to the last bit.
    """
    if orig_sr == new_sr:
        return waveforms
    g = math.gcd(int(orig_sr), int(new_sr))
    up, down = int(new_sr) // g, int(orig_sr) // g
    length = waveforms.shape[-1]
    out_len = -(-length * up // down)
    kernels, half = _sinc_kernels(up, down, waveforms.device)
    x = torch.nn.functional.pad(waveforms.float()[:, None, :], (half, half))
    if up == 1:
        y = torch.nn.functional.conv1d(x, kernels[:, None, :], stride=down)[:, 0]
        return y[:, :out_len].to(waveforms.dtype)
    z = torch.nn.functional.conv1d(x, kernels[:, None, :])  # (C, up, N): every phase at every input sample
    m = torch.arange(out_len, device=waveforms.device)
    base, phase = (m * down) // up, (m * down) % up
    return z[:, phase, base].to(waveforms.dtype)


def g711_torch(waveforms: torch.Tensor, laws: torch.Tensor, sampling_rate: int = G711_RATE) -> torch.Tensor:
    """:func:`.channel.g711` (``laws`` 0 mu-law, 1 A-law): peak-normalised, companded at 8 kHz (resampled there
    and back with :func:`resample_torch` at other rates), in float64 as numpy computes it."""
    length = waveforms.shape[-1]
    x = resample_torch(waveforms, sampling_rate, G711_RATE) if sampling_rate != G711_RATE else waveforms
    x = x.float()
    scale = 0.9 / x.abs().amax(dim=-1, keepdim=True).clamp_min(_EPS)
    scaled = x * scale
    coded = torch.where(laws.to(x.device)[:, None] == 0, _mu_law_torch(scaled), _a_law_torch(scaled)).float() / scale
    if sampling_rate != G711_RATE:
        coded = resample_torch(coded, G711_RATE, sampling_rate)
        coded = torch.nn.functional.pad(coded, (0, max(0, length - coded.shape[-1])))[:, :length]
    return coded.float()


# --------------------------------------------------------------------------------------------- the bank


def bank_device(nbytes: int, device: torch.device, total_memory: int | None = None) -> torch.device:
    """Where a bank of ``nbytes`` lives: on ``device``, unless that is an accelerator and the bank would take more
    than a quarter of its memory (``total_memory``, default: the device's); then in (pinned) host memory, from
    which the segments a batch needs are gathered and copied."""
    if device.type == "cpu":
        return device
    if total_memory is None:
        total_memory = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None
    if total_memory is not None and nbytes > _BANK_DEVICE_SHARE * total_memory:
        return torch.device("cpu")
    return device


class SourceBank:
    """The planner's noise, music and speech files and its impulse responses, read once per process.

    Each kind is one flat tensor (int16 when every file is exactly representable, else float32) with per-file
    offsets and lengths at the model's rate, plus the native frame counts and rates the CPU path bases its
    segment offsets on. Files that cannot be read are left out and listed in :attr:`bad` (the planner falls
    back for them as the CPU path does).
    """

    def __init__(self, planner: AugmentPlanner, device: torch.device | str = "cpu"):
        start = time.perf_counter()
        self.sampling_rate = sr = planner.sampling_rate
        self.bad: set[str] = set()
        max_rir = int(planner.config.max_rir_seconds * sr)
        self.segments = self._read(planner.bank_files(), sr, rir=None)
        self.rirs = self._read(planner.rir_files, sr, rir=max_rir)
        nbytes = sum(t.numel() * t.element_size() for t in (self.segments["audio"], self.rirs["audio"]))
        self.device = bank_device(nbytes, torch.device(device))
        if self.device != torch.device(device):
            logger.warning(
                "augmentation bank of %.1f GB stays in pinned host memory (over %d%% of the device's)",
                nbytes / 1e9,
                int(100 * _BANK_DEVICE_SHARE),
            )
        for bank in (self.segments, self.rirs):
            audio = bank["audio"]
            bank["audio"] = audio.to(self.device) if self.device.type != "cpu" else audio
            if self.device.type == "cpu" and torch.device(device).type == "cuda":
                bank["audio"] = audio.pin_memory()
        self.nbytes = nbytes
        if planner.bank_files() or planner.rir_files:
            logger.info(
                "augmentation bank: %d segment files, %d impulse responses, %.1f MB (%s) on %s, read in %.1f s",
                len(planner.bank_files()),
                len(planner.rir_files),
                nbytes / 1e6,
                str(self.segments["audio"].dtype).replace("torch.", ""),
                self.device,
                time.perf_counter() - start,
            )

    def _read(self, files: Sequence[str], sr: int, rir: int | None) -> dict[str, Any]:
        pieces, frames, rates, norms = [], [], [], []
        for path in files:
            try:
                native_frames, native_sr, _ = audio_info(path)
                wav = load_audio(path, sr, channel=0) if rir is not None else load_audio(path, sr)
                if rir is not None:
                    wav = wav[:rir]
                    norm = float(np.sqrt(np.sum(np.square(wav, dtype=np.float64))))
                    if norm <= _EPS:
                        raise AudioError(path, "impulse response is all zeros")
                    norms.append(norm)
            except AudioError as err:
                self.bad.add(path)
                logger.warning("augmentation source skipped: %s", err)
                wav, native_frames, native_sr = np.zeros(1, np.float32), 1, sr
                if rir is not None:
                    norms.append(1.0)
            pieces.append(wav)
            frames.append(native_frames)
            rates.append(native_sr)
        flat = np.concatenate(pieces) if pieces else np.zeros(1, np.float32)
        as_int = to_int16(flat)
        exact = np.array_equal(as_int.astype(np.float32) / 32768.0, flat)
        lengths = np.array([len(p) for p in pieces], np.int64)
        return {
            "audio": torch.from_numpy(as_int if exact else flat.astype(np.float32)),
            "offsets": torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)),
            "lengths": torch.from_numpy(lengths),
            "frames": torch.from_numpy(np.array(frames, np.int64)),
            "rates": torch.from_numpy(np.array(rates, np.int64)),
            "norms": torch.from_numpy(np.array(norms, np.float64)),
        }

    @staticmethod
    def _as_float(audio: torch.Tensor) -> torch.Tensor:
        return audio.float() / 32768.0 if audio.dtype == torch.int16 else audio.float()

    def segments_of(
        self, files: torch.Tensor, offsets: torch.Tensor, length: int, device: torch.device
    ) -> torch.Tensor:
        """``_segment`` for ``K`` bank files at relative offsets (CPU tensors): ``(K, length)`` float32 on
        ``device``.

        A file longer than the segment is cut at ``int(offset * (frames - need))`` native frames, as the CPU
        path reads it; a shorter one is repeated to fill the segment."""
        bank = self.segments
        frames, rates = bank["frames"][files], bank["rates"][files]
        need = -(-length * rates // self.sampling_rate) + 1
        native_start = (offsets.double() * (frames - need).double()).long()
        start = torch.where(rates == self.sampling_rate, native_start, (native_start * self.sampling_rate) // rates)
        start = torch.where(frames > need, start, torch.zeros_like(start))
        audio, file_len = bank["audio"], bank["lengths"][files]
        wraps = bool((start + length > file_len).any())  # files shorter than the segment are repeated
        first, file_len, start = (t.to(audio.device) for t in (bank["offsets"][files], file_len, start))
        within = start[:, None] + torch.arange(length, device=audio.device)[None, :]
        if wraps:
            within = within % file_len[:, None]
        index = first[:, None] + within
        return self._as_float(audio[index]).to(device, non_blocking=True)

    def rirs_of(self, files: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Unit-norm impulse responses ``(K, longest)`` float32 on ``device``, zero-padded."""
        bank = self.rirs
        audio = bank["audio"]
        lengths = bank["lengths"][files]
        taps = torch.arange(int(lengths.max()), device=audio.device)[None, :]
        first, lengths_on = bank["offsets"][files].to(audio.device), lengths.to(audio.device)
        raw = audio[first[:, None] + torch.minimum(taps, lengths_on[:, None] - 1)]
        raw = (self._as_float(raw) * (taps < lengths_on[:, None])).to(device, non_blocking=True)
        return (raw.double() / bank["norms"][files].to(device)[:, None]).float()


# --------------------------------------------------------------------------------------------- the augmenter


def _generator_noise(seeds: torch.Tensor, length: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(K, length)`` standard normal noise, row ``k`` from a generator seeded with ``seeds[k]`` on ``device``."""
    out = torch.empty(len(seeds), length, dtype=dtype, device=device)
    for k, seed in enumerate(seeds.tolist()):
        generator = torch.Generator(device=device).manual_seed(int(seed))
        out[k] = torch.randn(length, generator=generator, dtype=dtype, device=device)
    return out


class DeviceAugmenter:
    """The device half of ``data.augment_on: device``: banks, batched augmentation, features.

    Args:
        config: the augmentation (``None``: clean crops, features only).
        feature_extractor: the model's; its ``sampling_rate`` is the rate of crops and sources.
        device: where augmentation and features run (the training device).
        babble_pool: only for :meth:`planner` (the loader's babble fallback); the bank never holds it.
    """

    def __init__(self, config: AugmentConfig | None, feature_extractor: Any, device: torch.device | str = "cpu"):
        self.config = config
        self.feature_extractor = feature_extractor
        self.sampling_rate = int(feature_extractor.sampling_rate)
        self.device = torch.device(device)
        self.bank: SourceBank | None = None
        if config is not None:
            self.bank = SourceBank(AugmentPlanner(config, sampling_rate=self.sampling_rate), self.device)

    @property
    def bad_files(self) -> frozenset[str]:
        return frozenset(self.bank.bad) if self.bank is not None else frozenset()

    def planner(self, babble_pool: Sequence[str] | None = None) -> AugmentPlanner | None:
        """The loader's half, consistent with this bank (same file lists, same unusable files)."""
        if self.config is None:
            return None
        return AugmentPlanner(self.config, babble_pool, sampling_rate=self.sampling_rate, bad_files=self.bad_files)

    # -- one crop length ---------------------------------------------------------------------------------

    def augment(self, waveforms: torch.Tensor, plan: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Apply ``plan`` (CPU tensors, one row per crop) to ``(C, N)`` float32 crops on the device."""
        cfg, sr, device = self.config, self.sampling_rate, waveforms.device
        out = waveforms.float().clone()
        num, length = out.shape
        if num == 0 or cfg is None:
            return out

        def on(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, non_blocking=True)

        rows = torch.nonzero(plan["reverb"]).flatten()
        if rows.numel():
            out[on(rows)] = reverberate_torch(out[on(rows)], self._rirs(plan, rows, device))
        rows = torch.nonzero(plan["noisy"]).flatten()
        if rows.numel():
            out[on(rows)] = mix_at_snr_torch(out[on(rows)], self._noises(plan, rows, length, device), plan["snr"][rows])
        rows = torch.nonzero(plan["channel"]).flatten()
        if rows.numel():
            params = {k: on(plan[f"ch_{k}"][rows]) for k in ("high", "low", "tilt", "bands", "centre", "width", "gain")}
            out[on(rows)] = apply_responses_torch(out[on(rows)], channel_responses_torch(params, length // 2 + 1, sr))
        rows = torch.nonzero(plan["codec"]).flatten()
        if rows.numel():
            out[on(rows)] = g711_torch(out[on(rows)], on(plan["law"][rows]), sr)
        if cfg.gain_db != (0.0, 0.0):
            out *= on(plan["gain"].float())[:, None]
        return out

    def _rirs(self, plan: Mapping[str, torch.Tensor], rows: torch.Tensor, device: torch.device) -> torch.Tensor:
        files = plan["rir_file"][rows]
        from_bank = files >= 0
        parts: list[tuple[torch.Tensor, torch.Tensor]] = []
        if bool(from_bank.any()):
            parts.append((from_bank, self.bank.rirs_of(files[from_bank], device)))
        synthetic = ~from_bank
        if bool(synthetic.any()):
            sel = rows[synthetic]
            t60 = plan["rir_t60"][sel]
            lengths = torch.clamp(
                (torch.clamp(t60, max=self.config.max_rir_seconds) * self.sampling_rate).long(), min=2
            )
            white = _generator_noise(plan["rir_seed"][sel], int(lengths.max()), device, torch.float64)
            rirs = rir_from_draws_torch(
                self.sampling_rate,
                t60.to(device),
                white,
                lengths.to(device),
                plan["rir_first"][sel].to(device),
                plan["rir_drr"][sel].to(device),
            )
            parts.append((synthetic, rirs))
        longest = max(r.shape[-1] for _, r in parts)
        out = torch.zeros(len(rows), longest, device=device)
        for mask, rirs in parts:
            out[mask.to(device)] = torch.nn.functional.pad(rirs, (0, longest - rirs.shape[-1]))
        return out

    def _noises(
        self, plan: Mapping[str, torch.Tensor], rows: torch.Tensor, length: int, device: torch.device
    ) -> torch.Tensor:
        source = plan["source"][rows]
        noises = torch.zeros(len(rows), length, device=device)
        from_bank = source == BANK
        babble = plan["category"][rows] == CATEGORIES.index("babble")
        single = torch.nonzero(from_bank & ~babble).flatten()
        if single.numel():  # noise and music: the segment as it is
            sel = rows[single]
            noises[single.to(device)] = self.bank.segments_of(
                plan["seg_file"][sel, 0], plan["seg_offset"][sel, 0], length, device
            )
        talking = torch.nonzero(from_bank & babble).flatten()
        if talking.numel():  # babble: the talkers at equal level (unit RMS each), summed in their order
            files, offsets = plan["seg_file"][rows[talking]], plan["seg_offset"][rows[talking]]  # (K, talkers)
            used = files >= 0
            talkers = self.bank.segments_of(files[used], offsets[used], length, device)
            talkers = talkers / (_rms_torch(talkers) + _EPS).float()[:, None]
            segs = torch.zeros(*files.shape, length, device=device)
            segs[used.to(device)] = talkers
            noises[talking.to(device)] = segs.sum(dim=1)  # in talker order, deterministic on every device
        coloured = torch.nonzero(source == COLOURED).flatten()
        if coloured.numel():
            sel = rows[coloured]
            white = _generator_noise(plan["noise_seed"][sel], length, device, torch.float32)
            noises[coloured.to(device)] = shape_noise_torch(white, plan["slope"][sel])
        music = torch.nonzero(source == MUSIC).flatten()
        if music.numel():
            sel = rows[music]
            noises[music.to(device)] = music_from_notes_torch(
                length,
                self.sampling_rate,
                plan["note_len"][sel].to(device),
                plan["midi"][sel].to(device),
                plan["voices"][sel].to(device),
                plan["decay"][sel].to(device),
            )
        pool = torch.nonzero(source == POOL_BABBLE).flatten()
        if pool.numel():
            # the shipped babble signals, by crop row
            where = {int(r): k for k, r in enumerate(plan["babble_row"].tolist())}
            picks = torch.tensor([where[int(r)] for r in rows[pool].tolist()], dtype=torch.long)
            noises[pool.to(device)] = plan["babble_wave"][picks].to(device, non_blocking=True)
        return noises

    # -- a multi-crop batch ------------------------------------------------------------------------------

    def features(self, crops: torch.Tensor, plan: Mapping[str, torch.Tensor] | None) -> torch.Tensor:
        """Raw crops ``(V, B, N)`` (int16 or float) and their plan -> fbank features ``(V, B, T, F)`` on the
        device, augmented and featurised in one pass for all ``V * B`` crops."""
        fe = self.feature_extractor
        count, batch, samples = crops.shape
        if count * batch == 0:
            return torch.zeros(count, batch, int(fe.num_frames(samples)), int(fe.feature_size), device=self.device)
        waves = crops.to(self.device, non_blocking=True).reshape(count * batch, samples)
        waves = waves.float() / 32768.0 if waves.dtype == torch.int16 else waves.float()
        if plan is not None:
            waves = self.augment(waves, plan)
        features, _ = fe.compute_features(waves)
        return features.reshape(count, batch, features.shape[1], features.shape[2]).float()

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """A raw multi-crop batch (:class:`.multicrop.MultiCropRawCollator`) -> the same batch with
        ``global_features`` and ``local_features`` on the device, as the CPU collator gives them."""
        out = {k: v for k, v in batch.items() if k not in ("global_crops", "local_crops", "global_plan", "local_plan")}
        out["global_features"] = self.features(batch["global_crops"], batch.get("global_plan"))
        out["local_features"] = self.features(batch["local_crops"], batch.get("local_plan"))
        return out
