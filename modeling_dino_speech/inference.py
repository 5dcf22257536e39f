"""Utterance embeddings for any audio: ``dino-speech embed --model DIR --input FILE_DIR_OR_MANIFEST --out FILE``.

Utterances are embedded with the public Hugging Face API (``AutoFeatureExtractor`` + ``AutoModel``), in batches
of similar length (sorted by duration, so padding stays small; the attention mask keeps padding out of the
pooling), under ``torch.inference_mode`` on CUDA when available. :func:`embed_sources` is the one embedding
routine of the project: verification, the verifier, emotion recognition and pseudo-labelling all call it
(through :func:`embed_files` for lists of files).

Long audio is embedded in windows (``--window`` seconds every ``--hop`` seconds, read from the file one batch of
windows at a time), and the windows' embeddings are merged into one: their average as unit vectors, each weighted
by its speech frames (energy VAD), scaled back to their mean length. Memory then stays bounded whatever the
duration (``benchmarks/RESULTS.md``, long audio); files up to ``--max-whole`` seconds are embedded whole, as the
evaluation protocol does.

Output: ``.parquet`` (the input's columns -- path, speaker/label, duration -- plus an ``embedding`` list
column) or ``.npy`` (the (N, D) float32 matrix) with the columns in a ``.csv`` of the same stem. Files that
cannot be embedded (unreadable, NaN samples) are left out of the output and listed; the others are kept.

``--model`` also takes the training-free baselines ``fbank-stats`` and ``random-init:<checkpoint dir>``
(see ``modeling_dino_speech.baselines``). A checkpoint whose model type this installation does not know runs
its own Python code only with ``--trust-remote-code``.
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

__all__ = [
    "DEFAULT_HOP_SECONDS",
    "DEFAULT_MAX_WHOLE_SECONDS",
    "DEFAULT_WINDOW_SECONDS",
    "EmbeddingError",
    "EmbeddingResult",
    "add_window_arguments",
    "embed_files",
    "embed_sources",
    "embedding_outputs",
    "load_audio_list",
    "load_model",
    "looks_like_local_path",
    "main",
    "read_embeddings",
    "resolve_device",
    "window_options",
    "window_starts",
    "write_embeddings",
]

#: Long audio: windows of this many seconds, one every DEFAULT_HOP_SECONDS.
DEFAULT_WINDOW_SECONDS = 10.0
DEFAULT_HOP_SECONDS = 5.0
#: Audio up to this long is embedded whole (the evaluation protocol); longer audio in windows.
DEFAULT_MAX_WHOLE_SECONDS = 30.0

#: A waveform in memory at the model's rate, or an audio file.
Source = Union[str, np.ndarray]


def resolve_device(device: Optional[str | torch.device] = "auto") -> torch.device:
    """``"auto"``/None -> CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_model(
    spec: str | os.PathLike,
    device: Optional[str | torch.device] = "auto",
    seed: int = 0,
    trust_remote_code: bool = False,
) -> Tuple[nn.Module, Any]:
    """Model and feature extractor for a checkpoint folder (or Hub id), or a baseline name.

    The package is imported first so that its Auto classes are registered. A checkpoint whose model type neither
    transformers nor this package knows can still load through the Python code saved with it, but only with
    ``trust_remote_code=True``: that code runs on this machine.

    Args:
        spec: a folder written by ``save_pretrained``, a Hub id (``org/name``), ``"fbank-stats"`` or
            ``"random-init:<folder>"``. A local-looking spec (``./x``, ``a/b/c``, ``~/x``, or ``tiny/fnal`` next to
            a folder ``tiny``) that does not exist fails at once, without asking the Hub.
        device: where to put the model (``"auto"``: CUDA when available).
        seed: weight initialisation of ``random-init``.
        trust_remote_code: allow the checkpoint's own code to run when its model type is unknown here.

    Returns:
        ``(model, feature_extractor)``, the model in eval mode on ``device``, in float32.
    """
    from modeling_dino_speech.baselines import FBANK_STATS, RANDOM_INIT_PREFIX, fbank_statistics, random_init

    spec = os.fspath(spec)
    if spec == FBANK_STATS:
        model, feature_extractor = fbank_statistics()
    elif spec.startswith(RANDOM_INIT_PREFIX):
        model, feature_extractor = random_init(_require_checkpoint(spec[len(RANDOM_INIT_PREFIX) :]), seed=seed)
    else:
        model, feature_extractor = _from_pretrained(spec, trust_remote_code)
    return model.float().to(resolve_device(device)).eval(), feature_extractor


_HUB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def looks_like_local_path(spec: str | os.PathLike) -> bool:
    """Whether ``spec`` names a local folder rather than a Hub id: it exists, or it cannot be a Hub id
    (``./x``, ``/x``, ``~/x``, ``x/``, a bare name, more than one ``/``), or its first part is a folder here
    (``tiny/fnal`` beside ``tiny/``: a mistyped path, not the Hub repository ``fnal`` of user ``tiny``)."""
    spec = os.fspath(spec)
    if os.path.exists(spec) or spec.startswith((".", "/", "~")) or spec.endswith("/") or "\\" in spec:
        return True
    parts = spec.split("/")
    if len(parts) != 2 or not all(_HUB_NAME.fullmatch(p) for p in parts):
        return True
    return os.path.isdir(parts[0])


def _require_checkpoint(path: str) -> str:
    path = os.path.expanduser(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: model folder does not exist")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"{path}: not a model folder (no config.json; expected a save_pretrained output)")
    return path


def _from_pretrained(spec: str, trust_remote_code: bool) -> Tuple[nn.Module, Any]:
    from transformers import AutoFeatureExtractor, AutoModel

    if looks_like_local_path(spec):
        spec = _require_checkpoint(spec)
    # This package's Auto classes are registered (its __init__ has run): a dino_speech checkpoint never needs
    # its saved code here. Only a model type unknown to this environment does, and only when allowed.
    try:
        return (
            AutoModel.from_pretrained(spec, trust_remote_code=False),
            AutoFeatureExtractor.from_pretrained(spec, trust_remote_code=False),
        )
    except ValueError as err:
        if "trust_remote_code" not in str(err):
            raise
        if not trust_remote_code:
            raise ValueError(
                f"{spec}: its model type is unknown to this installation and the checkpoint carries Python code "
                "to load it (auto_map); that code runs only if you allow it: --trust-remote-code on the command "
                "line, trust_remote_code=True in Python"
            ) from None
    return (
        AutoModel.from_pretrained(spec, trust_remote_code=True),
        AutoFeatureExtractor.from_pretrained(spec, trust_remote_code=True),
    )


def window_starts(num_samples: int, window: int, hop: int) -> List[int]:
    """Start samples of the windows over ``num_samples``: every ``hop`` samples, the last one moved back to end at
    the last sample, so that every window is ``window`` long (one window from 0 when the audio is shorter)."""
    if window <= 0 or hop <= 0:
        raise ValueError(f"window and hop must be positive, got {window} and {hop} samples")
    if num_samples <= window:
        return [0]
    starts = list(range(0, num_samples - window + 1, hop))
    if starts[-1] + window < num_samples:
        starts.append(num_samples - window)
    return starts


@dataclass
class EmbeddingResult:
    """What :func:`embed_sources` measured for N inputs.

    Attributes:
        embeddings: ``(N, D)`` float32; NaN rows for the inputs in ``failures``.
        failures: input index -> problem, for inputs that could not be embedded (unreadable, NaN samples,
            shorter than one analysis window).
        durations: ``(N,)`` seconds of audio (NaN where unknown).
        speech_seconds: ``(N,)`` seconds of speech by an energy VAD (frames within 35 dB of the loudest frame
            of their window, signal mean removed); 0 for silent inputs.
        signal_problems: input index -> why its signal carries no speaker information (silence, DC only), for
            inputs whose every window is so.
        windows: ``(N,)`` windows each input was embedded in (1: whole).
    """

    embeddings: np.ndarray
    failures: Dict[int, str] = field(default_factory=dict)
    durations: np.ndarray = field(default_factory=lambda: np.zeros(0))
    speech_seconds: np.ndarray = field(default_factory=lambda: np.zeros(0))
    signal_problems: Dict[int, str] = field(default_factory=dict)
    windows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


class EmbeddingError(ValueError):
    """Some inputs could not be embedded. ``result`` holds what was embedded (the other rows), ``failures`` maps
    each failed input's name to its problem."""

    def __init__(self, failures: Dict[str, str], result: EmbeddingResult):
        self.failures = failures
        self.result = result
        shown = "\n  ".join(f"{name}: {problem}" for name, problem in list(failures.items())[:50])
        more = f"\n  ... and {len(failures) - 50} more" if len(failures) > 50 else ""
        super().__init__(f"{len(failures)} input(s) could not be embedded:\n  {shown}{more}")


@dataclass
class _Job:
    """One forward pass of one input: the whole of it, or one window (``start``/``frames`` in the input's own
    samples: native-rate frames of a file, model-rate samples of an array)."""

    item: int
    seconds: float
    start: Optional[int] = None
    frames: Optional[int] = None


class _JobAudio(torch.utils.data.Dataset):
    """Decodes (or slices) each job's audio and measures its signal: ``(job, waveform or None, problem, silence
    problem, speech seconds)``."""

    def __init__(self, sources: Sequence[Source], jobs: Sequence[_Job], sampling_rate: int, vad: bool, min_ms: float):
        self.sources = sources
        self.jobs = jobs
        self.sampling_rate = sampling_rate
        self.vad = vad
        self.min_ms = min_ms

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int):
        from modeling_dino_speech.data.audio import AudioError, load_audio
        from modeling_dino_speech.data.vad import EnergyVADConfig, apply_energy_vad, energy_vad_mask
        from modeling_dino_speech.feature_extraction_dino_speech import silence_problem

        job = self.jobs[index]
        source = self.sources[job.item]
        try:
            if isinstance(source, str):
                wave = load_audio(source, self.sampling_rate, start=job.start, frames=job.frames)
            elif job.start is None:
                wave = source
            else:
                wave = source[job.start : job.start + job.frames]
        except AudioError as err:
            return index, None, err.problem, None, 0.0
        rate = self.sampling_rate
        if wave.shape[0] < int(round(self.min_ms * rate / 1000.0)):
            problem = f"{wave.shape[0] / rate * 1000:.1f} ms, shorter than one {self.min_ms:g} ms analysis window"
            return index, None, problem, None, 0.0
        silent = silence_problem(wave)
        speech = 0.0
        if silent is None:
            vad = EnergyVADConfig()
            speech = float(energy_vad_mask(wave - wave.mean(), rate, vad).sum()) * vad.shift_ms / 1000.0
            if self.vad:
                wave = apply_energy_vad(wave, rate, vad)
        return index, wave, None, silent, min(speech, wave.shape[0] / rate)


def _collate(items):
    return items


def _sampling_rate(feature_extractor: Any) -> int:
    """The rate a model's features are computed at: files are decoded and resampled to it."""
    rate = getattr(feature_extractor, "sampling_rate", None)
    if not isinstance(rate, (int, np.integer)) or isinstance(rate, bool) or rate <= 0:
        raise TypeError(
            f"{type(feature_extractor).__name__} has no sampling_rate (got {rate!r}): embedding needs the rate "
            "the model's features are computed at"
        )
    return int(rate)


def _length_batches(durations: np.ndarray, batch_size: int, max_batch_seconds: float) -> List[List[int]]:
    """Indices grouped longest first, at most ``batch_size`` files and ``max_batch_seconds`` of padded audio."""
    order = np.argsort(-durations, kind="stable")
    batches: List[List[int]] = []
    current: List[int] = []
    for index in order.tolist():
        # Sorted descending: the first file of a batch is its longest, so padded = count * first.
        if current and (len(current) >= batch_size or (len(current) + 1) * durations[current[0]] > max_batch_seconds):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def _embeddings_of(output: Any) -> torch.Tensor:
    """Utterance embeddings from a model output: ``embeddings`` (dino-speech, x-vector models), else the
    pooler output, else the mean over time of the last hidden state (other Hugging Face audio encoders)."""
    for name in ("embeddings", "pooler_output"):
        value = getattr(output, name, None)
        if value is not None:
            return value
    hidden = getattr(output, "last_hidden_state", None)
    if hidden is None:
        raise TypeError(
            f"cannot find utterance embeddings in a {type(output).__name__} (no embeddings, "
            "pooler_output or last_hidden_state)"
        )
    return hidden.mean(dim=1)


def _model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _plan_jobs(
    sources: Sequence[Source],
    rate: int,
    durations: Optional[Sequence[Optional[float]]],
    window_seconds: Optional[float],
    hop_seconds: float,
    max_whole_seconds: Optional[float],
    failures: Dict[int, str],
) -> Tuple[List[_Job], np.ndarray]:
    """The forward passes for every input (whole, or windows when longer than ``max_whole_seconds``), and the
    inputs' durations; inputs whose header cannot be read go to ``failures`` before any audio is decoded."""
    from modeling_dino_speech.data.audio import AudioError, audio_info

    seconds = np.full(len(sources), np.nan)
    jobs: List[_Job] = []
    paths = [i for i, s in enumerate(sources) if isinstance(s, str)]
    if durations is None and paths:
        from modeling_dino_speech.data.corpora import compute_durations

        found, _ = compute_durations([sources[i] for i in paths], on_error="skip", source="embedding input")
        known: Dict[int, Optional[float]] = dict(zip(paths, found))
    else:
        known = dict(enumerate(durations)) if durations is not None else {}
    threshold = max_whole_seconds if max_whole_seconds is not None else window_seconds
    for i, source in enumerate(sources):
        length = source.shape[0] / rate if not isinstance(source, str) else known.get(i)
        if length is None or not np.isfinite(length):
            try:
                length = audio_info(source).duration
            except AudioError as err:
                failures[i] = err.problem
                continue
        seconds[i] = float(length)
        if window_seconds is None or threshold is None or length <= threshold:
            jobs.append(_Job(i, float(length)))
            continue
        if isinstance(source, str):
            try:
                info = audio_info(source)
            except AudioError as err:
                failures[i] = err.problem
                continue
            native, total = info.sample_rate, info.num_frames
        else:
            native, total = rate, source.shape[0]
        window, hop = int(round(window_seconds * native)), int(round(hop_seconds * native))
        jobs += [_Job(i, min(window, total) / native, start, window) for start in window_starts(total, window, hop)]
    return jobs, seconds


def embed_sources(
    model: nn.Module,
    feature_extractor: Any,
    sources: Sequence[Source],
    *,
    batch_size: int = 32,
    max_batch_seconds: float = 600.0,
    device: Optional[str | torch.device] = None,
    num_workers: int = 0,
    durations: Optional[Sequence[Optional[float]]] = None,
    window_seconds: Optional[float] = None,
    hop_seconds: Optional[float] = None,
    max_whole_seconds: Optional[float] = None,
    vad: bool = False,
    progress: bool = True,
    desc: str = "embedding",
) -> EmbeddingResult:
    """Embed audio files and waveforms, keeping going past the ones that cannot be embedded.

    Args:
        model: an embedding model (``DinoSpeechModel``, ``DinoSpeechForXVector``, a baseline, or any Hugging
            Face audio encoder); its train/eval mode is restored afterwards.
        feature_extractor: its feature extractor (``DinoSpeechFeatureExtractor``; any HF one works): files are
            decoded at its ``sampling_rate``.
        sources: audio file paths (any format soundfile reads, any rate: resampled to the feature extractor's),
            or mono float32 waveforms already at that rate.
        batch_size: forward passes per batch at most.
        max_batch_seconds: padded audio per batch at most (long files get smaller batches).
        device: where to run; None keeps the model where it is (``"auto"``: CUDA when available).
        num_workers: audio-decoding worker processes (0: decode in this process).
        durations: the inputs' durations in seconds if known (else read from the headers).
        window_seconds, hop_seconds: embed inputs longer than ``max_whole_seconds`` (default: ``window_seconds``)
            in windows of ``window_seconds`` every ``hop_seconds`` (default: half a window), read one batch at a
            time, and merge the windows' embeddings (see the module docstring); None: every input whole.
        vad: drop the silent frames (energy VAD) of each window before embedding it.
        progress: show a progress bar.

    Returns:
        an :class:`EmbeddingResult` (embeddings in the order of ``sources``).
    """
    if len(sources) == 0:
        raise ValueError("no audio to embed")
    sources = [os.fspath(s) if isinstance(s, (str, os.PathLike)) else np.asarray(s, dtype=np.float32) for s in sources]
    rate = _sampling_rate(feature_extractor)
    if window_seconds is not None and window_seconds <= 0:
        raise ValueError(f"window_seconds must be positive, got {window_seconds}")
    hop = hop_seconds if hop_seconds is not None else (window_seconds or 0.0) / 2
    if window_seconds is not None and hop <= 0:
        raise ValueError(f"hop_seconds must be positive, got {hop}")
    failures: Dict[int, str] = {}
    jobs, seconds = _plan_jobs(sources, rate, durations, window_seconds, hop, max_whole_seconds, failures)
    job_embeddings: Dict[int, np.ndarray] = {}
    job_speech = np.zeros(len(jobs))
    job_silent: Dict[int, str] = {}

    device = _model_device(model) if device is None else resolve_device(device)
    model.to(device)
    takes_device = "device" in inspect.signature(feature_extractor.__call__).parameters
    takes_check = "check_silence" in inspect.signature(feature_extractor.__call__).parameters
    batches = _length_batches(np.array([j.seconds for j in jobs]), batch_size, max_batch_seconds) if jobs else []
    loader = torch.utils.data.DataLoader(
        _JobAudio(sources, jobs, rate, vad, float(getattr(feature_extractor, "frame_length_ms", 25.0))),
        batch_sampler=batches,
        collate_fn=_collate,
        num_workers=num_workers,
    )
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), tqdm(total=len(jobs), desc=desc, unit="pass", disable=not progress) as bar:
            for items in loader:
                good = []
                for index, wave, problem, silent, speech in items:
                    if wave is None:
                        failures.setdefault(jobs[index].item, problem)
                        continue
                    job_speech[index] = speech
                    if silent:
                        job_silent[index] = silent
                    good.append((index, wave))
                bar.update(len(items))
                if not good:
                    continue
                waveforms = [w for _, w in good]
                kwargs = {"check_silence": False} if takes_check else {}
                if takes_device:  # dino-speech computes the fbank on the model's device
                    batch = feature_extractor(
                        waveforms, sampling_rate=rate, return_tensors="pt", device=device, **kwargs
                    )
                else:
                    batch = feature_extractor(waveforms, sampling_rate=rate, return_tensors="pt", padding=True)
                batch = {k: v.to(device) for k, v in batch.items()}
                embeddings = _embeddings_of(model(**batch)).float().cpu().numpy()
                for (index, _), embedding in zip(good, embeddings):
                    job_embeddings[index] = embedding
    finally:
        model.train(was_training)
    return _merge_jobs(len(sources), jobs, job_embeddings, job_speech, job_silent, failures, seconds)


def _merge_jobs(
    count: int,
    jobs: Sequence[_Job],
    job_embeddings: Dict[int, np.ndarray],
    job_speech: np.ndarray,
    job_silent: Dict[int, str],
    failures: Dict[int, str],
    seconds: np.ndarray,
) -> EmbeddingResult:
    """One embedding per input: a whole input's own, or its windows' merged (unit vectors averaged with weights
    by speech seconds, the mean weighted equally when no window has speech, scaled to the windows' mean norm)."""
    dim = next(iter(job_embeddings.values())).shape[0] if job_embeddings else 0
    embeddings = np.full((count, dim), np.nan, dtype=np.float32)
    speech = np.zeros(count)
    windows = np.zeros(count, dtype=np.int64)
    by_item: Dict[int, List[int]] = {}
    for index, job in enumerate(jobs):
        by_item.setdefault(job.item, []).append(index)
    signal_problems: Dict[int, str] = {}
    for item, indices in by_item.items():
        if item in failures:
            continue
        stacked = np.stack([job_embeddings[j] for j in indices]).astype(np.float64)
        windows[item] = len(indices)
        covered = sum(jobs[j].seconds for j in indices)
        speech[item] = job_speech[indices].sum() * (seconds[item] / covered if covered > 0 else 1.0)
        silent = [job_silent[j] for j in indices if j in job_silent]
        if len(silent) == len(indices):
            signal_problems[item] = silent[0]
        if len(indices) == 1:
            embeddings[item] = stacked[0]
            continue
        norms = np.linalg.norm(stacked, axis=1)
        weights = job_speech[indices] if job_speech[indices].sum() > 0 else np.ones(len(indices))
        unit = stacked / np.maximum(norms, 1e-12)[:, None]
        merged = (weights[:, None] * unit).sum(axis=0)
        embeddings[item] = merged / max(np.linalg.norm(merged), 1e-12) * norms.mean()
    return EmbeddingResult(embeddings, dict(sorted(failures.items())), seconds, speech, signal_problems, windows)


def embed_files(
    model: nn.Module,
    feature_extractor: Any,
    paths: Sequence[str],
    *,
    batch_size: int = 32,
    max_batch_seconds: float = 600.0,
    device: Optional[str | torch.device] = None,
    num_workers: int = 0,
    durations: Optional[Sequence[float]] = None,
    progress: bool = True,
    desc: str = "embedding",
    **window: Any,
) -> np.ndarray:
    """Embed audio files (whole, unless ``window_seconds`` etc. are given: see :func:`embed_sources`).

    Returns:
        (N, D) float32 embeddings in the order of ``paths``.

    Raises:
        ValueError: files shorter than one analysis window (every one named, before any work).
        EmbeddingError: files that could not be embedded (unreadable, NaN samples; every one named). All the
            other files are embedded first, and the error carries them (``err.result``).
    """
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise ValueError("no audio files to embed")
    if durations is None:
        from modeling_dino_speech.data.corpora import compute_durations

        durations, _ = compute_durations(paths, on_error="raise", source="embedding input")
    durations = np.asarray(durations, dtype=np.float64)
    window_s = float(getattr(feature_extractor, "frame_length_ms", 25.0)) / 1000.0
    short = [f"{p}: {d * 1000:.1f} ms" for p, d in zip(paths, durations) if d < window_s]
    if short:
        raise ValueError(
            f"{len(short)} file(s) shorter than one {window_s * 1000:.0f} ms analysis window "
            "cannot be embedded:\n  " + "\n  ".join(short[:50])
        )
    result = embed_sources(
        model,
        feature_extractor,
        paths,
        batch_size=batch_size,
        max_batch_seconds=max_batch_seconds,
        device=device,
        num_workers=num_workers,
        durations=durations,
        progress=progress,
        desc=desc,
        **window,
    )
    if result.failures:
        raise EmbeddingError({paths[i]: problem for i, problem in result.failures.items()}, result)
    return result.embeddings


def write_embeddings(path: str | os.PathLike, embeddings: np.ndarray, table: Any) -> None:
    """Save ``embeddings`` (N, D) with its per-file columns (a pandas DataFrame with N rows, e.g. ``path``).

    ``.parquet``: one file, the columns plus ``embedding`` (list of float32). ``.npy``: the matrix, and the
    columns as ``<stem>.csv`` next to it.
    """
    import pandas as pd

    path = Path(path)
    table = pd.DataFrame(table).reset_index(drop=True)
    if len(table) != embeddings.shape[0]:
        raise ValueError(f"{path}: {embeddings.shape[0]} embeddings but {len(table)} table rows")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        table = table.assign(embedding=list(np.asarray(embeddings, dtype=np.float32)))
        table.to_parquet(path, index=False)
    elif path.suffix == ".npy":
        np.save(path, np.asarray(embeddings, dtype=np.float32))
        table.to_csv(path.with_suffix(".csv"), index=False)
    else:
        raise ValueError(f"{path}: output must end in .parquet or .npy")


def read_embeddings(path: str | os.PathLike) -> Tuple[np.ndarray, Any]:
    """Inverse of :func:`write_embeddings`: ``(embeddings (N, D) float32, DataFrame of the other columns)``."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: embeddings file does not exist")
    if path.suffix == ".parquet":
        table = pd.read_parquet(path)
        if "embedding" not in table.columns:
            raise ValueError(f"{path}: no 'embedding' column (not written by dino-speech embed?)")
        matrix = np.stack(table.pop("embedding").to_numpy()).astype(np.float32)
        return matrix, table
    if path.suffix == ".npy":
        matrix = np.load(path, allow_pickle=False).astype(np.float32)
        index = path.with_suffix(".csv")
        table = pd.read_csv(index) if index.is_file() else pd.DataFrame(index=range(matrix.shape[0]))
        return matrix, table
    raise ValueError(f"{path}: expected a .parquet or .npy embeddings file")


def load_audio_list(source: str | os.PathLike, label_from_parent: bool = False) -> Any:
    """An audio file, a folder of audio (recursively) or a manifest CSV, as a ``datasets.Dataset`` with ``path``
    and ``duration`` (and, with ``label_from_parent``, a folder's ``label`` from each file's parent folder)."""
    from modeling_dino_speech.data.corpora import AUDIO_EXTENSIONS, load_audio_folder, load_manifest

    source = os.path.expanduser(os.fspath(source))
    if os.path.isdir(source):
        return load_audio_folder(source, label_from_parent=label_from_parent)
    if source.endswith(".csv"):
        return load_manifest(source)
    if os.path.splitext(source)[1].lower() in AUDIO_EXTENSIONS:
        import datasets

        from modeling_dino_speech.data.audio import audio_info

        return datasets.Dataset.from_dict({"path": [source], "duration": [audio_info(source).duration]})
    if not os.path.exists(source):
        raise FileNotFoundError(f"{source}: does not exist (expected an audio file, a folder or a manifest .csv)")
    raise ValueError(f"{source}: expected an audio file, a folder of audio files or a manifest .csv")


def embedding_outputs(out: str | os.PathLike) -> List[str]:
    """The files :func:`write_embeddings` writes for ``out`` (a ``.npy`` has its ``.csv`` beside it)."""
    out = os.fspath(out)
    return [out, os.fspath(Path(out).with_suffix(".csv"))] if out.endswith(".npy") else [out]


def add_window_arguments(parser: argparse.ArgumentParser) -> None:
    """``--window``, ``--hop``, ``--max-whole`` and ``--vad``, as every command that embeds files takes them."""
    group = parser.add_argument_group("long audio")
    group.add_argument(
        "--window",
        type=float,
        default=DEFAULT_WINDOW_SECONDS,
        help=f"window seconds for audio longer than --max-whole (default {DEFAULT_WINDOW_SECONDS:g}; 0: whole)",
    )
    group.add_argument("--hop", type=float, default=DEFAULT_HOP_SECONDS, help="seconds between window starts")
    group.add_argument(
        "--max-whole",
        type=float,
        default=DEFAULT_MAX_WHOLE_SECONDS,
        help=f"audio up to this many seconds is embedded whole (default {DEFAULT_MAX_WHOLE_SECONDS:g})",
    )
    group.add_argument("--vad", action="store_true", help="drop silent frames (energy VAD) before embedding")


def window_options(args: argparse.Namespace) -> Dict[str, Any]:
    """The :func:`embed_sources` keywords of :func:`add_window_arguments`' options."""
    whole = not args.window
    return {
        "window_seconds": None if whole else args.window,
        "hop_seconds": None if whole else args.hop,
        "max_whole_seconds": None if whole else args.max_whole,
        "vad": args.vad,
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dino-speech embed", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="checkpoint folder, 'fbank-stats' or 'random-init:<folder>'")
    parser.add_argument(
        "--input", required=True, help="an audio file, a folder of audio files (recursive) or a manifest CSV"
    )
    parser.add_argument("--out", required=True, help="embeddings.parquet or embeddings.npy")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-batch-seconds", type=float, default=600.0)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow a checkpoint's own code to run")
    add_window_arguments(parser)
    args = parser.parse_args(argv)
    if not args.out.endswith((".parquet", ".npy")):
        parser.error(f"--out must end in .parquet or .npy, got {args.out}")
    from modeling_dino_speech.utils.paths import check_outputs_spare_inputs

    outputs = embedding_outputs(args.out)
    check_outputs_spare_inputs(outputs, [args.input], "embeddings")
    files = load_audio_list(args.input)
    check_outputs_spare_inputs(outputs, files["path"], "embeddings")
    model, feature_extractor = load_model(args.model, device=args.device, trust_remote_code=args.trust_remote_code)
    result = embed_sources(
        model,
        feature_extractor,
        list(files["path"]),
        durations=files["duration"],
        batch_size=args.batch_size,
        max_batch_seconds=args.max_batch_seconds,
        num_workers=args.num_workers,
        **window_options(args),
    )
    table = files.to_pandas().assign(speech_seconds=np.round(result.speech_seconds, 2))
    keep = np.array([i not in result.failures for i in range(len(table))])
    if keep.any():
        write_embeddings(args.out, result.embeddings[keep], table[keep])
        print(f"{int(keep.sum())} embeddings of dimension {result.embeddings.shape[1]} -> {args.out}")
    quiet = [(table["path"][i], p) for i, p in result.signal_problems.items()]
    if quiet:
        print(
            f"warning: {len(quiet)} file(s) carry no speech signal: " + "; ".join(f"{p}: {q}" for p, q in quiet[:20]),
            file=sys.stderr,
        )
    if result.failures:
        listing = "\n  ".join(f"{table['path'][i]}: {problem}" for i, problem in list(result.failures.items())[:50])
        print(f"{len(result.failures)} file(s) could not be embedded and are left out:\n  {listing}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
