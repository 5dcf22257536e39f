"""Utterance embeddings for any audio: ``dino-speech embed --model DIR --input DIR_OR_MANIFEST --out FILE``.

Whole utterances are embedded with the public Hugging Face API (``AutoFeatureExtractor`` + ``AutoModel``),
in batches of similar length (sorted by duration, so padding stays small; the attention mask keeps padding
out of the pooling), under ``torch.inference_mode`` on CUDA when available. :func:`embed_files` is the one
embedding routine of the project: verification, emotion recognition and pseudo-labelling all call it.

Output: ``.parquet`` (the input's columns -- path, speaker/label, duration -- plus an ``embedding`` list
column) or ``.npy`` (the (N, D) float32 matrix) with the columns in a ``.csv`` of the same stem.

``--model`` also takes the training-free baselines ``fbank-stats`` and ``random-init:<checkpoint dir>``
(see ``modeling_dino_speech.baselines``).
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

__all__ = ["embed_files", "load_model", "main", "read_embeddings", "resolve_device", "write_embeddings"]


def resolve_device(device: Optional[str | torch.device] = "auto") -> torch.device:
    """``"auto"``/None -> CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_model(
    spec: str | os.PathLike, device: Optional[str | torch.device] = "auto", seed: int = 0
) -> Tuple[nn.Module, Any]:
    """Model and feature extractor for a checkpoint folder (or Hub id), or a baseline name.

    The package is imported first so that its Auto classes are registered; a checkpoint of another
    version (or without the package installed) loads through its own code with ``trust_remote_code``.

    Args:
        spec: a folder written by ``save_pretrained``, ``"fbank-stats"`` or ``"random-init:<folder>"``.
        device: where to put the model (``"auto"``: CUDA when available).
        seed: weight initialisation of ``random-init``.

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
        model, feature_extractor = _from_pretrained(spec)
    return model.float().to(resolve_device(device)).eval(), feature_extractor


def _require_checkpoint(path: str) -> str:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: model folder does not exist")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"{path}: not a model folder (no config.json; expected a save_pretrained output)")
    return path


def _from_pretrained(path: str) -> Tuple[nn.Module, Any]:
    from transformers import AutoFeatureExtractor, AutoModel

    if os.path.exists(path) or path.count("/") != 1:  # "org/name" without such a folder is a Hub id
        _require_checkpoint(path)

    # This package's Auto classes are registered: its own __init__ has run.
    try:
        return AutoModel.from_pretrained(path), AutoFeatureExtractor.from_pretrained(path)
    except ValueError:  # model type unknown to this environment: use the code saved with the checkpoint
        return (
            AutoModel.from_pretrained(path, trust_remote_code=True),
            AutoFeatureExtractor.from_pretrained(path, trust_remote_code=True),
        )


class _AudioFiles(torch.utils.data.Dataset):
    def __init__(self, paths: Sequence[str], sampling_rate: int):
        self.paths = list(paths)
        self.sampling_rate = sampling_rate

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tuple[int, np.ndarray]:
        from modeling_dino_speech.data.audio import load_audio

        return index, load_audio(self.paths[index], sampling_rate=self.sampling_rate)


def _sampling_rate(feature_extractor: Any) -> int:
    """The rate a model's features are computed at: files are decoded and resampled to it."""
    rate = getattr(feature_extractor, "sampling_rate", None)
    if not isinstance(rate, (int, np.integer)) or isinstance(rate, bool) or rate <= 0:
        raise TypeError(
            f"{type(feature_extractor).__name__} has no sampling_rate (got {rate!r}): embed_files needs the rate "
            "the model's features are computed at"
        )
    return int(rate)


def _collate(items: List[Tuple[int, np.ndarray]]) -> Tuple[List[int], List[np.ndarray]]:
    return [i for i, _ in items], [w for _, w in items]


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
) -> np.ndarray:
    """Embed whole audio files.

    Args:
        model: an embedding model (``DinoSpeechModel``, ``DinoSpeechForXVector``, a baseline, or any Hugging
            Face audio encoder); its train/eval mode is restored afterwards.
        feature_extractor: its feature extractor (``DinoSpeechFeatureExtractor``; any HF one works): files are
            decoded at its ``sampling_rate``.
        paths: audio files (any format soundfile reads, any rate: resampled to the feature extractor's).
        batch_size: files per batch at most.
        max_batch_seconds: padded audio per batch at most (long files get smaller batches).
        device: where to run; None keeps the model where it is (``"auto"``: CUDA when available).
        num_workers: audio-decoding worker processes (0: decode in this process).
        durations: the files' durations in seconds if known (else read from the headers).
        progress: show a progress bar.

    Returns:
        (N, D) float32 embeddings in the order of ``paths``.

    Raises:
        ValueError: unreadable files or files shorter than one analysis window (every one named).
    """
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise ValueError("no audio files to embed")
    rate = _sampling_rate(feature_extractor)
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

    device = _model_device(model) if device is None else resolve_device(device)
    model.to(device)
    takes_device = "device" in inspect.signature(feature_extractor.__call__).parameters
    batches = _length_batches(durations, batch_size, max_batch_seconds)
    loader = torch.utils.data.DataLoader(
        _AudioFiles(paths, rate),
        batch_sampler=batches,
        collate_fn=_collate,
        num_workers=num_workers,
    )
    from tqdm.auto import tqdm

    result: Optional[np.ndarray] = None
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), tqdm(total=len(paths), desc=desc, unit="file", disable=not progress) as bar:
            for indices, waveforms in loader:
                if takes_device:  # dino-speech computes the fbank on the model's device
                    batch = feature_extractor(waveforms, sampling_rate=rate, return_tensors="pt", device=device)
                else:
                    batch = feature_extractor(waveforms, sampling_rate=rate, return_tensors="pt", padding=True)
                batch = {k: v.to(device) for k, v in batch.items()}
                embeddings = _embeddings_of(model(**batch)).float().cpu().numpy()
                if result is None:
                    result = np.empty((len(paths), embeddings.shape[1]), dtype=np.float32)
                result[indices] = embeddings
                bar.update(len(indices))
    finally:
        model.train(was_training)
    return result


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


def load_audio_list(source: str | os.PathLike) -> Any:
    """A folder of audio (recursively) or a manifest CSV, as a ``datasets.Dataset`` with ``path`` and ``duration``."""
    from modeling_dino_speech.data.corpora import load_audio_folder, load_manifest

    source = os.fspath(source)
    if os.path.isdir(source):
        return load_audio_folder(source)
    if source.endswith(".csv"):
        return load_manifest(source)
    raise ValueError(f"{source}: expected a folder of audio files or a manifest .csv")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dino-speech embed", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="checkpoint folder, 'fbank-stats' or 'random-init:<folder>'")
    parser.add_argument("--input", required=True, help="folder of audio files (recursive) or manifest CSV")
    parser.add_argument("--out", required=True, help="embeddings.parquet or embeddings.npy")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-batch-seconds", type=float, default=600.0)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    if not args.out.endswith((".parquet", ".npy")):
        parser.error(f"--out must end in .parquet or .npy, got {args.out}")

    files = load_audio_list(args.input)
    model, feature_extractor = load_model(args.model, device=args.device)
    embeddings = embed_files(
        model,
        feature_extractor,
        files["path"],
        durations=files["duration"],
        batch_size=args.batch_size,
        max_batch_seconds=args.max_batch_seconds,
        num_workers=args.num_workers,
    )
    write_embeddings(args.out, embeddings, files.to_pandas())
    print(f"{embeddings.shape[0]} embeddings of dimension {embeddings.shape[1]} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
