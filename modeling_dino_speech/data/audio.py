"""The one way to read audio in dino-speech.

Every audio file the package touches goes through :func:`load_audio` (samples) or :func:`audio_info`
(header only). Both return float32 mono data and raise :class:`AudioError`, whose message names the file and
the problem, for anything that would otherwise surface later as a shape error or a NaN loss. The caller names
the rate it wants: the model's, which its feature extractor carries (``feature_extractor.sampling_rate``).

Policy for damaged or unusual input:

========================  =========================================================================
missing file              ``AudioError`` (a broken symlink or a symlink loop named as such)
unreadable / unsupported  ``AudioError`` (e.g. m4a: convert to wav or flac first)
truncated WAV             ``AudioError`` (the header announces more data than the file holds)
zero-length               ``AudioError``
NaN / Inf samples         ``AudioError``
all-silence               allowed; :func:`is_silent` flags it (callers such as the multi-crop
                          pipeline decide whether to drop it; SNR mixing skips silent speech)
clipped                   allowed (it is real-world data)
multi-channel             averaged to mono
other sampling rates      resampled with libsoxr (:func:`modeling_dino_speech.resampling.resample`)
========================  =========================================================================
"""

from __future__ import annotations

import errno
import os
import re
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np
import soundfile as sf
import torch

from ..resampling import resample

__all__ = [
    "AudioError",
    "AudioInfo",
    "audio_info",
    "is_silent",
    "load_audio",
    "load_segments",
    "missing_reason",
    "resample",
    "usability_problem",
]

# libsndfile reports in its log "data : <declared> (should be <actual>)" when a WAV data chunk is shorter
# than its header says. 0 and 0xFFFFFFFF are the placeholders written by streaming encoders, not damage.
_DATA_CHUNK_RE = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_STREAMING_PLACEHOLDERS = {0, 0xFFFFFFFF, 0x7FFFFFFF}


class AudioError(ValueError):
    """A file that cannot be used as audio. ``str(err)`` is ``"<path>: <problem>"``.

    Attributes:
        path: the offending file, as given.
        problem: a short human-readable description of what is wrong.
    """

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):
        # Default pickling re-calls __init__ with the formatted message only; DataLoader workers and
        # datasets' multiprocessing need the two-argument form back.
        return (self.__class__, (self.path, self.problem))


class AudioInfo(NamedTuple):
    """Header facts of an audio file (unpacks as ``num_frames, sample_rate, duration``)."""

    num_frames: int
    """Frames at the file's native rate (one frame = one sample per channel)."""
    sample_rate: int
    """Native sampling rate in Hz."""
    duration: float
    """Length in seconds."""


def missing_reason(path: str | os.PathLike) -> str:
    """Why a path that does not resolve to a file is not there: a symlink loop, a broken symlink, a permission
    denied on the way, or plainly no such file."""
    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "symlink loop (the link resolves to itself, directly or through others)"
        if os.path.islink(path):
            return f"broken symlink (it points to {os.readlink(path)}, which does not exist)"
        if err.errno == errno.EACCES:
            return "permission denied"
        return "file does not exist"
    return "file does not exist" if not os.path.isdir(path) else "is a directory, not a file"


def _open(path: str) -> sf.SoundFile:
    if not os.path.exists(path):
        raise AudioError(path, missing_reason(path))
    if os.path.isdir(path):
        raise AudioError(path, "is a directory, not an audio file")
    try:
        handle = sf.SoundFile(path)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        size = os.path.getsize(path)
        if size == 0:
            raise AudioError(path, "empty file (0 bytes)") from None
        ext = os.path.splitext(path)[1].lower() or "(no extension)"
        raise AudioError(
            path,
            f"unreadable or unsupported audio format {ext} ({err}); "
            "supported: wav, flac, ogg, mp3 and other libsndfile formats (convert m4a/aac to wav or flac)",
        ) from None
    try:
        _check_header(path, handle)
    except AudioError:
        handle.close()
        raise
    return handle


def _check_header(path: str, handle: sf.SoundFile) -> None:
    if handle.samplerate <= 0:
        raise AudioError(path, f"invalid sampling rate {handle.samplerate}")
    if handle.frames <= 0:
        raise AudioError(path, "zero-length audio (no samples)")
    if handle.format in ("WAV", "WAVEX", "RF64"):
        match = _DATA_CHUNK_RE.search(handle.extra_info)
        if match:
            declared, actual = int(match.group(1)), int(match.group(2))
            if declared not in _STREAMING_PLACEHOLDERS and declared > actual:
                raise AudioError(
                    path,
                    f"truncated file: header announces {declared} bytes of audio data but only {actual} are present",
                )


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Read only the header of ``path``.

    Returns:
        ``AudioInfo(num_frames, sample_rate, duration)``; unpacks like a 3-tuple.

    Raises:
        AudioError: missing, unreadable, unsupported, truncated or zero-length file.
    """
    path = os.fspath(path)
    with _open(path) as handle:
        return AudioInfo(int(handle.frames), int(handle.samplerate), handle.frames / handle.samplerate)


def load_audio(
    path: str | os.PathLike,
    sampling_rate: int | None,
    start: int | None = None,
    frames: int | None = None,
    channel: int | None = None,
) -> np.ndarray:
    """Decode ``path`` to a mono float32 waveform at ``sampling_rate``.

    Args:
        path: audio file (wav, flac, ogg, mp3, ...; anything libsndfile reads).
        sampling_rate: output rate in Hz; ``None`` keeps the native rate.
        start: first frame to read, counted at the file's NATIVE rate (see :func:`audio_info`). Only this part
            of the file is decoded, which is what makes random crops of long files cheap.
        frames: number of native-rate frames to read from ``start``; ``None`` reads to the end. A request that
            runs past the end of the file returns the frames that exist (a shorter array), it is not padded.
        channel: keep only this channel instead of averaging all of them (e.g. one microphone of a
            multi-channel room impulse response).

    Returns:
        ``np.ndarray`` of shape ``(N,)``, float32, values nominally in [-1, 1] (clipped input is kept as is).

    Raises:
        AudioError: missing / unreadable / unsupported / truncated / zero-length file, ``start`` beyond the end,
            or NaN/Inf samples.
    """
    return load_segments(path, [(start, frames)], sampling_rate, channel)[0]


Segments = Sequence[tuple[Optional[int], Optional[int]]]


def load_segments(
    path: str | os.PathLike,
    segments: Segments | Callable[[int, int], Segments],
    sampling_rate: int | None,
    channel: int | None = None,
) -> list[np.ndarray]:
    """Read several ``(start, frames)`` segments (native-rate frames) of one file, opening it once.

    Same semantics and errors as :func:`load_audio`, segment by segment; used to cut several random crops
    from one utterance without re-opening and re-parsing the file for each.

    Args:
        segments: the ``(start, frames)`` pairs, or a function ``(num_frames, native_rate) -> pairs`` called
            once the header is read (so crops can be placed without a separate :func:`audio_info` call).

    Returns:
        one ``(N_i,)`` float32 array per segment, mono, at ``sampling_rate``.
    """
    path = os.fspath(path)
    out = []
    with _open(path) as handle:
        native_sr = int(handle.samplerate)
        total = int(handle.frames)
        if callable(segments):
            segments = segments(total, native_sr)
        if channel is not None and not 0 <= channel < handle.channels:
            raise AudioError(path, f"channel {channel} requested but the file has {handle.channels} channel(s)")
        # Header-less streams (raw GSM 6.10 prompts) cannot seek: decode them once and cut the segments from that.
        whole = None if handle.seekable() else _read(handle, path, total, 0, None)
        for start, frames in segments:
            if whole is None:
                data = _read(handle, path, total, start, frames)
            else:
                data = _slice(whole, path, total, start, frames)
            if channel is not None:
                wav = data[:, channel]
            elif data.shape[1] == 1:
                wav = data[:, 0]
            else:
                wav = data.mean(axis=1, dtype=np.float32)
            wav = np.ascontiguousarray(wav, dtype=np.float32)
            if sampling_rate is not None and sampling_rate != native_sr:
                wav = resample(wav, native_sr, int(sampling_rate))
            out.append(wav)
    return out


def _segment_bounds(path: str, total: int, start: int | None, frames: int | None) -> tuple[int, int]:
    """`(first frame, count)` of a requested segment (count -1: to the end), checked against the file."""
    first = 0 if start is None else int(start)
    if first < 0:
        raise AudioError(path, f"negative start frame {first}")
    if first >= total:
        raise AudioError(path, f"start frame {first} is beyond the end of the file ({total} frames)")
    count = -1 if frames is None else int(frames)
    if frames is not None and count <= 0:
        raise AudioError(path, f"requested {count} frames; must be positive")
    return first, count


def _slice(whole: np.ndarray, path: str, total: int, start: int | None, frames: int | None) -> np.ndarray:
    first, count = _segment_bounds(path, total, start, frames)
    return whole[first:] if count < 0 else whole[first : first + count]


def _read(handle: sf.SoundFile, path: str, total: int, start: int | None, frames: int | None) -> np.ndarray:
    first, count = _segment_bounds(path, total, start, frames)
    try:
        if handle.seekable():
            handle.seek(first)
        # a stream that cannot seek cannot be read "to the end" either: ask for the frames its header gives
        data = handle.read(count if count >= 0 else total - first, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(path, f"decoding failed ({err})") from None
    if data.shape[0] == 0:
        raise AudioError(path, "no samples could be decoded (corrupt or truncated file)")
    # Float-coded files can carry NaN/Inf; one vectorised scan is far cheaper than a NaN loss hours later.
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise AudioError(path, f"{bad} NaN/Inf sample(s) in the audio")
    return data


def usability_problem(
    path: str | os.PathLike, sampling_rate: int, min_seconds: float = 0.0, drop_silent: bool = False
) -> Optional[str]:
    """What makes ``path`` unusable as a whole utterance (decoded entirely), or None: unreadable, NaN/Inf
    samples, shorter than ``min_seconds``, or (``drop_silent``) silent by :func:`is_silent`."""
    try:
        wav = load_audio(path, sampling_rate)
    except AudioError as err:
        return err.problem
    seconds = len(wav) / sampling_rate
    if seconds < min_seconds:
        return f"too short: {seconds * 1000:.1f} ms (less than {min_seconds * 1000:.1f} ms)"
    if drop_silent and is_silent(wav):
        return "silent (below -60 dBFS)"
    return None


def is_silent(waveform: np.ndarray | torch.Tensor, threshold_db: float = -60.0) -> bool:
    """True when the waveform's RMS level is below ``threshold_db`` dBFS (all-zero or near-silent audio).

    Silent audio is legal input to :func:`load_audio`; this flag lets training pipelines drop it, since it
    carries no speaker information and breaks SNR-based mixing.
    """
    x = waveform.detach().cpu().numpy() if isinstance(waveform, torch.Tensor) else np.asarray(waveform)
    if x.size == 0:
        return True
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return rms <= 10.0 ** (threshold_db / 20.0)
