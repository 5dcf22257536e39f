"""Kaldi-compatible log-mel filterbank features, computed for a whole batch at once."""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from transformers import BatchFeature, SequenceFeatureExtractor

from .pooling import has_padding, lengths_to_mask
from .resampling import resample

# Kaldi floors the mel energies at float32 machine epsilon before taking the log.
_LOG_FLOOR = float(torch.finfo(torch.float32).eps)
_PREEMPHASIS = 0.97
_POVEY_EXPONENT = 0.85
_CPU_CHUNK = 8
_MEL_GROUPS = 8
# A 2-D input is one multi-channel recording when one of its axes is at most this long (the channels).
_MAX_CHANNELS = 16
# Full scale of integer PCM: samples are divided by it to land in [-1, 1].
_PCM_SCALE = {np.dtype(np.int8): 128.0, np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2147483648.0}
# Below this RMS (dBFS, DC removed) a waveform is taken for silence: its features are the log floor.
SILENCE_DB = -70.0


class DegenerateAudioWarning(UserWarning):
    """Audio that carries no speaker information (silence, a constant/DC signal, too little speech): its
    embedding is not that of a voice, and two such inputs look alike."""


def silence_problem(waveform: np.ndarray) -> Optional[str]:
    """Why a float waveform cannot be told from any other silent one (None when it has a signal): constant
    (digital silence or DC only) or below `SILENCE_DB` once its mean is removed."""
    x = np.asarray(waveform, dtype=np.float64)
    if x.size == 0 or float(x.max() - x.min()) == 0.0:
        return "constant signal (digital silence or DC only)"
    rms = float(np.sqrt(np.mean(np.square(x - x.mean()))))
    if rms <= 10.0 ** (SILENCE_DB / 20.0):
        return f"silent (level {20.0 * np.log10(max(rms, 1e-12)):.0f} dBFS, DC removed)"
    return None


def _mel(freq: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log1p(np.asarray(freq, dtype=np.float64) / 700.0)


def kaldi_mel_filter_bank(
    num_mel_bins: int, num_fft_bins: int, sampling_rate: int, low_freq: float, high_freq: float
) -> np.ndarray:
    """Triangular filters equally spaced on Kaldi's mel scale, triangular in mel space.

    Returns:
        `np.ndarray` of shape `(num_fft_bins // 2 + 1, num_mel_bins)`; the Nyquist row is zero, as in Kaldi.
    """
    nyquist = 0.5 * sampling_rate
    if high_freq <= 0:
        high_freq += nyquist
    if not 0.0 <= low_freq < high_freq <= nyquist:
        raise ValueError(f"need 0 <= low_freq < high_freq <= {nyquist}, got low={low_freq} high={high_freq}")
    half = num_fft_bins // 2
    mel_low, mel_high = _mel(low_freq), _mel(high_freq)
    delta = (mel_high - mel_low) / (num_mel_bins + 1)
    edges = mel_low + delta * np.arange(num_mel_bins + 2)
    left, center, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    bin_mel = _mel(np.arange(half) * sampling_rate / num_fft_bins)[None, :]
    up = (bin_mel - left) / (center - left)
    down = (right - bin_mel) / (right - center)
    banks = np.clip(np.minimum(up, down), 0.0, None)
    return np.concatenate([banks, np.zeros((num_mel_bins, 1))], axis=1).T


class DinoSpeechFeatureExtractor(SequenceFeatureExtractor):
    r"""Log-mel filterbank features as Kaldi computes them, with mean normalisation and padding.

    Matches `torchaudio.compliance.kaldi.fbank(waveform * 32768, num_mel_bins=80, low_freq=20, high_freq=7600,
    dither=0)` (povey window, pre-emphasis 0.97, DC removal, power spectrum, `snip_edges=True`), but for a
    whole padded batch in a handful of tensor operations.

    Args:
        feature_size: number of mel bins.
        sampling_rate: rate the features are computed at; other rates are resampled to it.
        frame_length_ms, frame_shift_ms: analysis window and hop.
        low_freq, high_freq: band of the mel filters in Hz (`high_freq <= 0` is relative to Nyquist, as in Kaldi).
        mean_normalization: `"sliding"` (Kaldi's centred sliding-window CMN, the paper's short-time mean
            normalisation), `"utterance"` (subtract the utterance mean) or `None`.
        mean_normalization_window: window of the sliding normalisation, in frames.
        waveform_scale: waveforms in [-1, 1] are multiplied by this before the fbank (Kaldi works on 16-bit
            sample values; the log floor makes the scale matter slightly).
    """

    model_input_names = ["input_features", "attention_mask"]

    def __init__(
        self,
        feature_size: int = 80,
        sampling_rate: int = 16000,
        padding_value: float = 0.0,
        frame_length_ms: float = 25.0,
        frame_shift_ms: float = 10.0,
        low_freq: float = 20.0,
        high_freq: float = 7600.0,
        mean_normalization: Optional[str] = "sliding",
        mean_normalization_window: int = 150,
        waveform_scale: float = 32768.0,
        return_attention_mask: bool = True,
        **kwargs,
    ):
        super().__init__(
            feature_size=feature_size,
            sampling_rate=sampling_rate,
            padding_value=padding_value,
            return_attention_mask=return_attention_mask,
            **kwargs,
        )
        if mean_normalization not in ("sliding", "utterance", None):
            raise ValueError(f"mean_normalization must be 'sliding', 'utterance' or None, got {mean_normalization!r}")
        self.frame_length_ms = frame_length_ms
        self.frame_shift_ms = frame_shift_ms
        self.low_freq = low_freq
        self.high_freq = high_freq
        self.mean_normalization = mean_normalization
        self.mean_normalization_window = int(mean_normalization_window)
        self.waveform_scale = waveform_scale
        self._mel_cache: dict = {}

    # The cache holds tensors per device: keep it out of the saved JSON.
    def to_dict(self) -> dict:
        output = super().to_dict()
        output.pop("_mel_cache", None)
        return output

    @classmethod
    def from_model_config(cls, config) -> DinoSpeechFeatureExtractor:
        """Build the feature extractor that a [`DinoSpeechConfig`] was trained with."""
        return cls(**config.feature_extractor_kwargs)

    @property
    def win_length(self) -> int:
        return int(round(self.sampling_rate * self.frame_length_ms / 1000.0))

    @property
    def hop_length(self) -> int:
        return int(round(self.sampling_rate * self.frame_shift_ms / 1000.0))

    @property
    def n_fft(self) -> int:
        return 1 << (self.win_length - 1).bit_length()

    def num_frames(self, num_samples: Union[int, torch.Tensor]) -> Union[int, torch.Tensor]:
        """Frames Kaldi produces (`snip_edges=True`) for `num_samples` samples; 0 when shorter than a window."""
        if isinstance(num_samples, torch.Tensor):
            return torch.where(
                num_samples >= self.win_length,
                torch.div(num_samples - self.win_length, self.hop_length, rounding_mode="floor") + 1,
                torch.zeros_like(num_samples),
            )
        return 0 if num_samples < self.win_length else 1 + (num_samples - self.win_length) // self.hop_length

    def _constants(
        self, device: torch.device
    ) -> Tuple[torch.Tensor, torch.Tensor, slice, List[Tuple[int, int, torch.Tensor]]]:
        """Window, DC-removal window and mel filters, folded for `_log_mel` and cached per device.

        Returns `window` `(n_fft,)` (povey window times `waveform_scale`, zero past `win_length`); `dc_window`, what
        removing a frame mean of 1 before pre-emphasis subtracts from the windowed frame; `bins`, the FFT bins
        some filter covers; and the filters in `_MEL_GROUPS` groups of neighbouring bands, each as
        `(start, end, block)`: columns `start:end` of the squared spectrum over `bins`, real and imaginary parts
        interleaved, times `block` give the group's mel energies.
        """
        key = str(device)
        if key not in self._mel_cache:
            window = torch.zeros(self.n_fft, dtype=torch.float64)
            window[: self.win_length] = (
                torch.hann_window(self.win_length, periodic=False, dtype=torch.float64).pow(_POVEY_EXPONENT)
                * self.waveform_scale
            )
            banks = torch.from_numpy(
                kaldi_mel_filter_bank(self.feature_size, self.n_fft, self.sampling_rate, self.low_freq, self.high_freq)
            )
            used = banks.abs().sum(dim=1).nonzero().flatten()
            first_bin, end_bin = int(used.min()), int(used.max()) + 1
            # Each filter covers a few bins: one dense (bins x filters) product would spend 90% of its work on
            # zeros, a product per group of neighbouring filters only on the bins that group covers.
            groups = []
            edges = np.unique(np.linspace(0, self.feature_size, min(_MEL_GROUPS, self.feature_size) + 1).astype(int))
            for low, high in itertools.pairwise(edges):
                rows = banks[:, low:high].abs().sum(dim=1).nonzero().flatten()
                start, end = int(rows.min()), int(rows.max()) + 1
                block = banks[start:end, low:high].repeat_interleave(2, dim=0)
                groups.append(
                    (2 * (start - first_bin), 2 * (end - first_bin), block.to(device=device, dtype=torch.float32))
                )
            self._mel_cache[key] = (
                window.to(device=device, dtype=torch.float32),
                (window * -(1.0 - _PREEMPHASIS)).to(device=device, dtype=torch.float32),
                slice(first_bin, end_bin),
                groups,
            )
        return self._mel_cache[key]

    def compute_features(
        self, waveforms: torch.Tensor, lengths: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Fbank of a zero-padded batch, on whatever device `waveforms` lives.

        Args:
            waveforms: `(batch, samples)` float tensor in [-1, 1] at `self.sampling_rate`.
            lengths: `(batch,)` valid samples per row; `None` means every row is full length.

        Returns:
            `features` of shape `(batch, frames, feature_size)` (zero on padded frames) and `attention_mask`
            of shape `(batch, frames)` (int64, 1 on real frames).
        """
        if waveforms.dim() != 2:
            raise ValueError(f"waveforms must be (batch, samples), got shape {tuple(waveforms.shape)}")
        batch, total = waveforms.shape
        device = waveforms.device
        if lengths is None:
            lengths = torch.full((batch,), total, dtype=torch.long, device=device)
        lengths = lengths.to(device=device, dtype=torch.long)
        frame_counts = self.num_frames(lengths)
        max_frames = int(frame_counts.max().item()) if batch else 0
        if max_frames == 0:
            raise ValueError(
                f"every waveform is shorter than one {self.frame_length_ms} ms analysis window "
                f"({self.win_length} samples)"
            )
        span = (max_frames - 1) * self.hop_length + self.win_length
        mask = lengths_to_mask(frame_counts, max_frames)
        padded = has_padding(frame_counts, max_frames)
        features = waveforms.new_empty(batch, max_frames, self.feature_size, dtype=torch.float32)
        # Normalised chunk by chunk, while each chunk's log-mel energies are still in cache.
        for rows in self._log_mel(waveforms[:, :span].float(), features):
            chunk_mask = mask[rows] if padded else None
            self._normalize_mean(features[rows], chunk_mask, frame_counts[rows])
            if padded:
                features[rows] *= chunk_mask[..., None]
        return features, mask.long()

    def _log_mel(self, waveforms: torch.Tensor, out: torch.Tensor) -> Iterator[slice]:
        """Log-mel energies of `(B, samples)` waveforms into `out`, `(B, frames, feature_size)`, a chunk of rows at
        a time; yields each chunk's row slice once it is written.

        Kaldi's per-frame chain (remove the frame mean, pre-emphasise inside the frame, povey window, zero-pad to
        `n_fft`, |FFT|^2, mel, log) rearranged so that every step is one pass over a contiguous tensor:
        - pre-emphasis runs once on the waveform: it differs from Kaldi's in-frame version only at each frame's
          first sample, which the povey window multiplies by zero;
        - frames are cut `n_fft` long from a waveform padded at the end, so the window (zero past `win_length`)
          also does the zero-padding;
        - the frame mean, taken from block sums of the waveform, is removed from the windowed frame:
          (x - m) pre-emphasised is x pre-emphasised minus (1 - 0.97) m;
        - the power spectrum is never formed: the squared real and imaginary parts, interleaved, go straight
          into the mel products, one per group of neighbouring filters over only the bins the group covers;
        - all of it a chunk of utterances at a time, in buffers the chunks share.
        """
        window, dc_window, bins, mel_groups = self._constants(waveforms.device)
        batch, samples = waveforms.shape
        num_frames = out.shape[1]
        block = math.gcd(self.hop_length, self.win_length)
        usable = samples - samples % block
        # On CPU, a few utterances at a time keep the working tensors in cache, and the chunks share their buffers:
        # fresh multi-megabyte tensors per chunk cost page faults on the scale of the FFT (benchmarks/RESULTS.md).
        chunk = batch if waveforms.is_cuda else min(batch, _CPU_CHUNK)
        centred = waveforms.new_empty(chunk, samples)
        emphasised = waveforms.new_zeros(chunk, samples + self.n_fft - self.win_length)
        frames = waveforms.new_empty(chunk, num_frames, self.n_fft)
        spectrum = torch.empty(chunk, num_frames, self.n_fft // 2 + 1, dtype=torch.complex64, device=waveforms.device)
        for first in range(0, batch, chunk):
            rows = slice(first, min(first + chunk, batch))
            size = rows.stop - rows.start
            wave = waveforms[rows]
            # Any constant cancels in the frame-mean removal; taking out the row mean first keeps a DC offset from
            # costing float32 precision in the subtraction below (an offset frame must come out as silence).
            torch.sub(wave, wave.mean(dim=1, keepdim=True), out=centred[:size])
            torch.add(centred[:size, 1:], centred[:size, :-1], alpha=-_PREEMPHASIS, out=emphasised[:size, 1:samples])
            # Frame means from sums over blocks of gcd(hop, window) samples: one pass over the waveform.
            block_sums = centred[:size, :usable].reshape(size, -1, block).sum(dim=-1)
            frame_sums = block_sums.unfold(1, self.win_length // block, self.hop_length // block)[:, :num_frames]
            frame_means = frame_sums.sum(dim=-1, keepdim=True).div_(self.win_length)
            framed = emphasised[:size].unfold(1, self.n_fft, self.hop_length)[:, :num_frames]
            torch.mul(framed, window, out=frames[:size])
            frames[:size].addcmul_(frame_means, dc_window)
            torch.fft.rfft(frames[:size], out=spectrum[:size])
            interleaved = torch.view_as_real(spectrum[:size, :, bins]).flatten(-2).square_()
            torch.cat(
                [torch.matmul(interleaved[..., start:end], b) for start, end, b in mel_groups], dim=-1, out=out[rows]
            )
            out[rows].clamp_min_(_LOG_FLOOR).log_()
            yield rows

    def _normalize_mean(
        self, features: torch.Tensor, mask: Optional[torch.Tensor], frame_counts: torch.Tensor
    ) -> torch.Tensor:
        """Subtract the utterance or sliding-window mean from `features`, in place; `mask` is `None` when no row
        is padded."""
        if self.mean_normalization is None:
            return features
        masked = features if mask is None else features * mask[..., None]
        counts = frame_counts.clamp_min(1)
        # In place where the input is ours to change: every fresh (B, frames, bins) tensor costs page faults.
        if self.mean_normalization == "utterance":
            return features.sub_(masked.sum(dim=1, keepdim=True).div_(counts[:, None, None]))
        # Kaldi's apply-cmvn-sliding --center=true: a window of W frames centred on t, shifted to stay inside
        # the utterance and shortened only when the utterance itself is shorter than W.
        batch, num_frames, bins = features.shape
        cumulative = features.new_zeros(batch, num_frames + 1, bins)
        torch.cumsum(masked, dim=1, out=cumulative[:, 1:])
        t = torch.arange(num_frames, device=features.device)[None, :]
        start = t - self.mean_normalization_window // 2
        end = start + self.mean_normalization_window
        end = torch.where(start < 0, end - start, end)
        start = start.clamp_min(0)
        overshoot = (end - counts[:, None]).clamp_min(0)
        start = (start - overshoot).clamp_min(0)
        end = end - overshoot
        rows = torch.arange(batch, device=features.device)[:, None]
        window_mean = cumulative[rows, end].sub_(cumulative[rows, start])  # whole rows of features at once
        window_mean.div_((end - start).clamp_min(1)[..., None].to(features.dtype))
        return features.sub_(window_mean)

    def __call__(
        self,
        raw_speech: Union[np.ndarray, List[float], List[np.ndarray], List[torch.Tensor], torch.Tensor],
        sampling_rate: Optional[Union[int, Sequence[int]]] = None,
        return_tensors: Optional[str] = None,
        return_attention_mask: Optional[bool] = None,
        device: Optional[Union[str, torch.device]] = None,
        check_silence: bool = True,
        **kwargs,
    ) -> BatchFeature:
        """Featurise one waveform or a list of waveforms of different lengths (and rates, and channel counts).

        Args:
            raw_speech: a waveform or a list of them, as numpy arrays, tensors or lists of numbers. Floats are taken
                to be in [-1, 1]; integer PCM (int8, uint8, int16, int32) is scaled to it by its full scale.
                Multi-channel audio is averaged to mono: in a list, an item of shape `(samples, channels)` (as
                soundfile reads it) or `(channels, samples)`; at the top level only `(samples, channels)` and
                `(1, samples)`, since `(channels, samples)` reads as a batch there (pass a list for a batch).
            sampling_rate: the rate of `raw_speech` (an int), or one rate per waveform (a list); each is
                resampled to `self.sampling_rate`.
            return_tensors: `"pt"`, `"np"` or `None` (lists).
            device: where to compute (e.g. `"cuda"`); defaults to CPU.
            check_silence: warn ([`DegenerateAudioWarning`]) about silent or constant (DC only) waveforms, whose
                features are the log floor everywhere, so that every such input embeds alike.

        Returns:
            [`BatchFeature`] with `input_features` `(batch, frames, feature_size)` and `attention_mask`
            `(batch, frames)`.
        """
        items = self._as_waveform_list(raw_speech)
        rates = self._sampling_rates(sampling_rate, len(items))
        waveforms = [resample(w, rate, self.sampling_rate) for w, rate in zip(items, rates)]
        device = torch.device(device) if device is not None else torch.device("cpu")
        tensors = [torch.as_tensor(w, dtype=torch.float32, device=device) for w in waveforms]
        for i, w in enumerate(tensors):
            if w.numel() < self.win_length:
                raise ValueError(
                    f"waveform {i} has {w.numel()} samples at {self.sampling_rate} Hz, shorter than one "
                    f"{self.frame_length_ms} ms analysis window ({self.win_length} samples)"
                )
        if check_silence:
            for i, w in enumerate(waveforms):
                problem = silence_problem(w)
                if problem:
                    warnings.warn(
                        f"waveform {i}: {problem}; its features carry no speaker information (every such input "
                        "embeds alike)",
                        DegenerateAudioWarning,
                        stacklevel=2,
                    )
        lengths = torch.tensor([w.numel() for w in tensors], device=device)
        padded = torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True)
        features, mask = self.compute_features(padded, lengths)
        if self.padding_value:
            features = features.masked_fill(~mask.bool()[..., None], self.padding_value)
        data = {"input_features": features}
        if return_attention_mask if return_attention_mask is not None else self.return_attention_mask:
            data["attention_mask"] = mask
        if return_tensors != "pt":
            data = {k: v.cpu().numpy() for k, v in data.items()}
            if return_tensors is None:
                counts = mask.sum(dim=1).tolist()
                data = {k: [row[: int(n)] for row, n in zip(v, counts)] for k, v in data.items()}
        return BatchFeature(data, tensor_type=return_tensors)

    def _sampling_rates(self, sampling_rate, count: int) -> List[int]:
        """One positive int rate per waveform (a missing rate is assumed to be the model's, with a warning)."""
        if sampling_rate is None:
            warnings.warn(
                f"No sampling_rate given to {type(self).__name__}: assuming {self.sampling_rate} Hz. Pass it "
                "explicitly to avoid silent errors.",
                stacklevel=3,
            )
            sampling_rate = self.sampling_rate
        rates = list(sampling_rate) if isinstance(sampling_rate, (list, tuple, np.ndarray)) else [sampling_rate] * count
        if len(rates) != count:
            raise ValueError(f"{len(rates)} sampling rates for {count} waveforms: give one rate, or one per waveform")
        for rate in rates:
            if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
                raise TypeError(f"sampling_rate must be a positive int (Hz), got {rate!r} ({type(rate).__name__})")
        return [int(rate) for rate in rates]

    @staticmethod
    def _as_waveform_list(raw_speech) -> List[np.ndarray]:
        """The input as a list of finite float32 mono waveforms (see `__call__` for what is accepted)."""
        if isinstance(raw_speech, torch.Tensor):
            raw_speech = raw_speech.detach().cpu().numpy()
        if isinstance(raw_speech, np.ndarray):
            if raw_speech.ndim == 2 and not (raw_speech.shape[0] == 1 or _channels_last(raw_speech.shape)):
                raise ValueError(
                    f"expected one waveform, got a 2-D array of shape {raw_speech.shape}: pass a list of 1-D "
                    "waveforms for a batch; multi-channel audio as (samples, channels), as soundfile reads it, or "
                    "in a list (then (channels, samples) works too)"
                )
            items: Sequence = [raw_speech]
        elif isinstance(raw_speech, (list, tuple)):
            if len(raw_speech) == 0:
                raise ValueError("raw_speech is an empty list: nothing to featurise")
            items = [raw_speech] if np.isscalar(raw_speech[0]) else raw_speech
        else:
            raise TypeError(f"raw_speech must be an array or a list of arrays, got {type(raw_speech).__name__}")
        return [_mono_float(item, i) for i, item in enumerate(items)]


def _channels_last(shape: Tuple[int, ...]) -> bool:
    return shape[1] <= _MAX_CHANNELS < shape[0]


def _mono_float(item, index: int) -> np.ndarray:
    """One waveform as finite float32 mono: integer PCM scaled to [-1, 1], channels averaged."""
    if isinstance(item, torch.Tensor):
        item = item.detach().cpu().numpy()
    array = np.asarray(item)
    if array.dtype == np.uint8:  # 8-bit WAV is unsigned, centred on 128
        array = (array.astype(np.float32) - 128.0) / 128.0
    elif array.dtype in _PCM_SCALE:
        array = array.astype(np.float32) / _PCM_SCALE[array.dtype]
    elif array.dtype.kind in "iub":
        raise TypeError(
            f"waveform {index} has samples of type {array.dtype}, which is no PCM format: pass floats in [-1, 1] "
            "or int8/uint8/int16/int32 PCM"
        )
    else:
        array = array.astype(np.float32, copy=False)
    if array.ndim == 2 and min(array.shape) <= _MAX_CHANNELS < max(array.shape):
        array = array.mean(axis=1 if _channels_last(array.shape) else 0, dtype=np.float32)
    if array.ndim != 1:
        raise ValueError(
            f"waveform {index} has shape {array.shape}; expected mono (samples,) or multi-channel audio with at "
            f"most {_MAX_CHANNELS} channels"
        )
    if array.size == 0:
        raise ValueError(f"waveform {index} is empty")
    if not np.isfinite(array).all():
        raise ValueError(f"waveform {index} contains NaN or infinite samples")
    peak = float(np.abs(array).max())
    if peak > 2.0:
        warnings.warn(
            f"waveform {index} peaks at {peak:.4g}, far outside [-1, 1]: is it integer PCM stored as floats? "
            "(divide 16-bit samples by 32768)",
            stacklevel=4,
        )
    return np.ascontiguousarray(array, dtype=np.float32)


DinoSpeechFeatureExtractor.register_for_auto_class()
