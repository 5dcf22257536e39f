"""Files in, scores out: speaker verification and identification with a dino-speech checkpoint.

    from modeling_dino_speech import DinoSpeechVerifier
    verifier = DinoSpeechVerifier.from_pretrained("runs/demo/dino/final")
    score, same_speaker = verifier.verify_files("a.wav", "b.wav")

Inputs are audio files, or waveforms (numpy arrays, tensors, ``(waveform, sampling_rate)`` pairs, or
``{"array": ..., "sampling_rate": ...}`` as ``datasets`` decodes audio), each at its own sampling rate;
multi-channel audio is averaged to mono and integer PCM scaled to [-1, 1] (the feature extractor's rules).
Many inputs are embedded in batches of similar length; audio longer than ``max_whole_seconds`` in windows
(``window_seconds`` every ``hop_seconds``, read a batch of windows at a time, merged into one embedding), so
memory stays bounded on hour-long recordings.

**Degenerate input.** Silence, a constant (DC) signal, or less than ``min_speech_seconds`` of speech (energy
VAD) carries no speaker: two such inputs would otherwise score as one and the same speaker. They are flagged with
a :class:`DegenerateAudioWarning` that names them, their embedding is NaN, and so is any score that involves
them, with no decision (``on_degenerate="raise"`` makes it an error, ``"ignore"`` embeds them anyway).

**The decision threshold** is the one the checkpoint was calibrated with at export (the EER threshold on its
evaluation trials, in ``config.json`` and the model card: :mod:`modeling_dino_speech.calibration`), another of
its operating points (``operating_point="min_dcf_0.01"``), or ``threshold=`` given here. It holds for data like
the calibration trials; score a labelled sample of your own data (``dino-speech score``) to calibrate for it.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .feature_extraction_dino_speech import DegenerateAudioWarning, _mono_float
from .inference import (
    DEFAULT_HOP_SECONDS,
    DEFAULT_MAX_WHOLE_SECONDS,
    DEFAULT_WINDOW_SECONDS,
    EmbeddingResult,
    embed_sources,
    load_model,
)
from .resampling import resample

__all__ = [
    "DegenerateAudioWarning",
    "DinoSpeechVerifier",
    "Identification",
    "SpeakerGallery",
    "VerificationResult",
]

#: Less speech than this (energy VAD) and an input is too little to tell a speaker by.
DEFAULT_MIN_SPEECH_SECONDS = 0.5

PathLike = Union[str, os.PathLike]


class VerificationResult(NamedTuple):
    """``score``: cosine similarity (NaN for degenerate input); ``same_speaker``: the decision at the threshold
    (None when there is no threshold, or no score). Unpacks as ``score, same_speaker = ...``."""

    score: float
    same_speaker: Optional[bool]


class Identification(NamedTuple):
    """One gallery speaker for a query: ``speaker`` and its cosine ``score`` against the speaker's centroid."""

    speaker: str
    score: float


@dataclass
class SpeakerGallery:
    """Enrolled speakers: one centroid per speaker (the mean of its utterances' unit embeddings, normalised).

    Attributes:
        speakers: ``(S,)`` names.
        centroids: ``(S, D)`` unit vectors.
        counts: ``(S,)`` utterances enrolled per speaker.
        model: the checkpoint the embeddings come from (a gallery only compares with its own model's embeddings).
    """

    speakers: List[str]
    centroids: np.ndarray
    counts: np.ndarray
    model: str = ""

    def identify(self, embeddings: np.ndarray, top_k: int = 5) -> List[List[Identification]]:
        """The ``top_k`` best-scoring speakers for each row of ``embeddings`` ``(N, D)``, best first (an empty
        list for a NaN row: a degenerate query)."""
        embeddings = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
        if embeddings.shape[1] != self.centroids.shape[1]:
            raise ValueError(
                f"queries have dimension {embeddings.shape[1]} but the gallery {self.centroids.shape[1]}: "
                f"embed them with the gallery's model ({self.model or 'unknown'})"
            )
        k = max(1, min(int(top_k), len(self.speakers)))
        results = []
        for row in embeddings:
            if not np.isfinite(row).all():
                results.append([])
                continue
            scores = self.centroids @ (row / max(float(np.linalg.norm(row)), 1e-12))
            best = np.argsort(-scores, kind="stable")[:k]
            results.append([Identification(self.speakers[i], float(scores[i])) for i in best])
        return results

    def save(self, path: PathLike) -> Path:
        """Write the gallery as ``.npz`` (speakers, centroids, counts, model)."""
        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"{path}: a gallery file must end in .npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            path,
            speakers=np.array(self.speakers, dtype=str),
            centroids=self.centroids.astype(np.float32),
            counts=self.counts.astype(np.int64),
            model=np.array(self.model),
        )
        return path

    @classmethod
    def load(cls, path: PathLike) -> SpeakerGallery:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: gallery file does not exist (write one with dino-speech enroll)")
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls(
                    [str(s) for s in data["speakers"]],
                    data["centroids"].astype(np.float32),
                    data["counts"],
                    str(data["model"]),
                )
        except (KeyError, ValueError, OSError) as err:
            raise ValueError(f"{path}: not a gallery written by dino-speech enroll ({err})") from None


def _is_rate(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_single(inputs: Any) -> bool:
    """One input (a path, a waveform, a (waveform, rate) pair, a datasets audio dict) rather than a list."""
    if isinstance(inputs, (str, os.PathLike, np.ndarray, torch.Tensor, Mapping)):
        return True
    return isinstance(inputs, tuple) and len(inputs) == 2 and _is_rate(inputs[1]) and not isinstance(inputs[0], str)


class DinoSpeechVerifier:
    """Speaker verification and identification with a dino-speech model (see the module docstring).

    Args:
        model, feature_extractor: as :func:`modeling_dino_speech.inference.load_model` returns them.
        threshold: decide at this cosine score (default: the checkpoint's calibrated threshold).
        operating_point: which of the checkpoint's calibrated thresholds to decide at when ``threshold`` is
            None: ``"eer"`` (what it records by default), ``"min_dcf_0.01"`` or ``"min_dcf_0.05"``.
        window_seconds, hop_seconds, max_whole_seconds: inputs longer than ``max_whole_seconds`` are embedded
            in windows of ``window_seconds`` every ``hop_seconds`` (``window_seconds=None``: always whole).
        vad: drop silent frames (energy VAD) before embedding.
        min_speech_seconds: less speech than this makes an input degenerate.
        on_degenerate: ``"warn"`` (NaN embedding and scores, a warning), ``"raise"`` or ``"ignore"``.
        batch_size, max_batch_seconds: batching of the forward passes.
        name: what messages call the model.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        feature_extractor: Any,
        *,
        threshold: Optional[float] = None,
        operating_point: Optional[str] = None,
        window_seconds: Optional[float] = DEFAULT_WINDOW_SECONDS,
        hop_seconds: float = DEFAULT_HOP_SECONDS,
        max_whole_seconds: float = DEFAULT_MAX_WHOLE_SECONDS,
        vad: bool = False,
        min_speech_seconds: float = DEFAULT_MIN_SPEECH_SECONDS,
        on_degenerate: str = "warn",
        batch_size: int = 16,
        max_batch_seconds: float = 320.0,
        name: Optional[str] = None,
    ):
        from .calibration import read_calibration, threshold_of

        if on_degenerate not in ("warn", "raise", "ignore"):
            raise ValueError(f"on_degenerate must be 'warn', 'raise' or 'ignore', got {on_degenerate!r}")
        self.model = model.eval()
        self.feature_extractor = feature_extractor
        self.sampling_rate = int(feature_extractor.sampling_rate)
        self.window_seconds = window_seconds
        self.hop_seconds = hop_seconds
        self.max_whole_seconds = max_whole_seconds
        self.vad = vad
        self.min_speech_seconds = float(min_speech_seconds)
        self.on_degenerate = on_degenerate
        self.batch_size = batch_size
        self.max_batch_seconds = max_batch_seconds
        self.name = name or getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
        self.calibration = read_calibration(getattr(model, "config", {})) if hasattr(model, "config") else None
        if threshold is not None:
            self.threshold: Optional[float] = float(threshold)
            self.threshold_source = "given"
        elif self.calibration is not None:
            self.threshold = threshold_of(self.calibration, operating_point)
            point = operating_point or self.calibration.get("operating_point", "eer")
            self.threshold_source = f"calibrated at export: {point} on {self.calibration.get('trials', 'unknown')}"
        else:
            self.threshold = None
            self.threshold_source = "none"

    @classmethod
    def from_pretrained(
        cls,
        model: PathLike,
        *,
        device: Optional[Union[str, torch.device]] = "auto",
        trust_remote_code: bool = False,
        **kwargs: Any,
    ) -> DinoSpeechVerifier:
        """A verifier for a checkpoint folder or Hub id (``trust_remote_code``: see ``inference.load_model``);
        ``kwargs`` are the constructor's (``threshold``, ``window_seconds``, ...)."""
        loaded, feature_extractor = load_model(model, device=device, trust_remote_code=trust_remote_code)
        return cls(loaded, feature_extractor, name=kwargs.pop("name", os.fspath(model)), **kwargs)

    # ------------------------------------------------------------------------------------------- inputs

    def _source(self, item: Any, sampling_rate: Optional[int], index: int) -> Tuple[Union[str, np.ndarray], str]:
        """``(path or mono float32 waveform at the model's rate, name for messages)``."""
        if isinstance(item, (str, os.PathLike)):
            path = os.path.expanduser(os.fspath(item))
            return path, path
        name = f"input {index}"
        rate = sampling_rate
        if isinstance(item, Mapping):
            if "array" not in item:
                raise ValueError(f"{name}: a dict input needs 'array' and 'sampling_rate' (as datasets' Audio)")
            name = str(item.get("path") or name)
            item, rate = item["array"], item.get("sampling_rate", rate)
        elif isinstance(item, tuple) and len(item) == 2 and _is_rate(item[1]):
            item, rate = item
        if rate is None:
            raise ValueError(
                f"{name}: a waveform needs its sampling rate: pass (waveform, rate), or sampling_rate=, "
                f"(the model runs at {self.sampling_rate} Hz)"
            )
        if not _is_rate(rate) or rate <= 0:
            raise TypeError(f"{name}: sampling rate must be a positive int (Hz), got {rate!r}")
        try:
            wave = _mono_float(item, index)
        except (TypeError, ValueError) as err:
            raise type(err)(f"{name}: {err}") from None
        return resample(wave, int(rate), self.sampling_rate), name

    def embed_report(
        self, inputs: Sequence[Any], sampling_rate: Optional[Union[int, Sequence[int]]] = None, progress: bool = False
    ) -> Tuple[np.ndarray, Dict[int, str], Dict[int, str]]:
        """Embed a list of inputs without stopping at bad ones.

        Returns:
            ``(embeddings (N, D), failures, degenerate)``: NaN rows for the inputs in either dict; ``failures``
            maps an input that cannot be read to ``"<name>: <problem>"``, ``degenerate`` one that carries no speaker
            (unless ``on_degenerate="ignore"``) to ``"<name>: <why>"``.
        """
        items = list(inputs)
        if not items:
            raise ValueError("no inputs to embed")
        rates = list(sampling_rate) if isinstance(sampling_rate, (list, tuple)) else [sampling_rate] * len(items)
        if len(rates) != len(items):
            raise ValueError(f"{len(rates)} sampling rates for {len(items)} inputs")
        sources, names = zip(*(self._source(item, rate, i) for i, (item, rate) in enumerate(zip(items, rates))))
        result = embed_sources(
            self.model,
            self.feature_extractor,
            list(sources),
            batch_size=self.batch_size,
            max_batch_seconds=self.max_batch_seconds,
            window_seconds=self.window_seconds,
            hop_seconds=self.hop_seconds,
            max_whole_seconds=self.max_whole_seconds,
            vad=self.vad,
            progress=progress,
        )
        embeddings = result.embeddings
        failures = {i: f"{names[i]}: {problem}" for i, problem in result.failures.items()}
        degenerate = {}
        if self.on_degenerate != "ignore":
            for i in range(len(items)):
                problem = None if i in failures else self.degenerate(result, i)
                if problem:
                    degenerate[i] = f"{names[i]}: {problem}"
                    embeddings[i] = np.nan
        return embeddings, failures, degenerate

    def degenerate(self, result: EmbeddingResult, index: int) -> Optional[str]:
        """Why input ``index`` of an embedding result carries no speaker (None when it does)."""
        if index in result.signal_problems:
            return result.signal_problems[index]
        speech = float(result.speech_seconds[index])
        if speech < self.min_speech_seconds:
            return (
                f"too little speech: {speech:.2f} s active in {float(result.durations[index]):.2f} s "
                f"(energy VAD; at least {self.min_speech_seconds:g} s needed)"
            )
        return None

    def embed(self, inputs: Any, sampling_rate: Optional[Union[int, Sequence[int]]] = None) -> np.ndarray:
        """Utterance embeddings: ``(D,)`` for one input, ``(N, D)`` for a list (float32, as the model gives them;
        compare them by cosine). Degenerate inputs give NaN rows (see the module docstring).

        Args:
            inputs: a path, a waveform, ``(waveform, rate)``, ``{"array", "sampling_rate"}``, or a list of them.
            sampling_rate: the rate of waveforms given without one (an int, or one per input).

        Raises:
            ValueError: an input that cannot be read (its name and the problem), or, with
                ``on_degenerate="raise"``, a degenerate one.
        """
        single = _is_single(inputs)
        embeddings, failures, degenerate = self.embed_report([inputs] if single else list(inputs), sampling_rate)
        if failures:
            lines = list(failures.values())
            if len(lines) == 1:
                raise ValueError(lines[0])
            raise ValueError(f"{len(lines)} inputs cannot be embedded:\n  " + "\n  ".join(lines))
        for message in degenerate.values():
            message += "; it carries no speaker information, so no score is given for it"
            if self.on_degenerate == "raise":
                raise ValueError(message)
            warnings.warn(message, DegenerateAudioWarning, stacklevel=2)
        return embeddings[0] if single else embeddings

    # ------------------------------------------------------------------------------------------ scoring

    @staticmethod
    def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Cosine of rows of ``a`` and ``b`` (``(D,)`` or ``(N, D)``, broadcast); NaN where either is NaN."""
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        dot = (a * b).sum(axis=-1)
        norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
        return dot / np.maximum(norms, 1e-12)

    def similarity(self, a: Any, b: Any, sampling_rate: Optional[int] = None) -> float:
        """Cosine similarity of two inputs' embeddings (higher: more likely one speaker); NaN, with a
        warning, when either is degenerate."""
        embeddings = self.embed([a, b], sampling_rate=sampling_rate)
        return float(self.cosine(embeddings[0], embeddings[1]))

    def decide(self, score: float, threshold: Optional[float] = None) -> Optional[bool]:
        """``score >= threshold`` (the verifier's own threshold by default); None without a threshold or score."""
        threshold = self.threshold if threshold is None else threshold
        if threshold is None or not np.isfinite(score):
            return None
        return bool(score >= threshold)

    def verify_files(
        self, a: Any, b: Any, threshold: Optional[float] = None, sampling_rate: Optional[int] = None
    ) -> VerificationResult:
        """``(score, same_speaker)`` for two inputs (files or waveforms). ``same_speaker`` is None, with a
        warning, when there is no threshold (neither given nor calibrated in the checkpoint) and when the score is
        NaN (degenerate input)."""
        score = self.similarity(a, b, sampling_rate=sampling_rate)
        if threshold is None and self.threshold is None:
            warnings.warn(
                f"{self.name}: no decision threshold (the checkpoint records no calibration); pass threshold=, "
                "or calibrate on labelled pairs (dino-speech score)",
                UserWarning,
                stacklevel=2,
            )
        return VerificationResult(score, self.decide(score, threshold))

    # --------------------------------------------------------------------------- enrolment, identification

    def enroll(self, labelled: Union[Mapping[str, Sequence[Any]], Iterable[Tuple[str, Any]]]) -> SpeakerGallery:
        """A gallery from labelled inputs: ``{speaker: [inputs]}`` or ``[(speaker, input), ...]``. Degenerate
        inputs are left out (with their warning); a speaker with none left is an error."""
        pairs = (
            [(speaker, x) for speaker, xs in labelled.items() for x in xs]
            if isinstance(labelled, Mapping)
            else list(labelled)
        )
        if not pairs:
            raise ValueError("nothing to enroll")
        embeddings = self.embed([x for _, x in pairs])
        unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        speakers: Dict[str, List[np.ndarray]] = {}
        for (speaker, _), row in zip(pairs, unit):
            speakers.setdefault(str(speaker), [])
            if np.isfinite(row).all():
                speakers[str(speaker)].append(row)
        empty = [s for s, rows in speakers.items() if not rows]
        if empty:
            raise ValueError(f"no usable audio left to enroll speaker(s) {', '.join(empty)} (all degenerate)")
        names = sorted(speakers)
        centroids = np.stack([np.mean(speakers[s], axis=0) for s in names])
        centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        counts = np.array([len(speakers[s]) for s in names])
        return SpeakerGallery(names, centroids.astype(np.float32), counts, self.name)

    def identify(self, queries: Any, gallery: SpeakerGallery, top_k: int = 5) -> Any:
        """The ``top_k`` gallery speakers closest to each query, best first (a list of :class:`Identification`
        for one query, a list of such lists for several; empty for a degenerate query)."""
        single = _is_single(queries)
        results = gallery.identify(np.atleast_2d(self.embed(queries)), top_k=top_k)
        return results[0] if single else results
