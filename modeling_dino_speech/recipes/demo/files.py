"""Atomic writes and advisory locks: a file of the demo corpus that exists is complete, and two builders (tests
and ``make demo``) sharing a cache or an output folder do not collide."""

from __future__ import annotations

import contextlib
import csv
import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

__all__ = ["atomic_path", "file_lock", "write_csv_atomic", "write_text_atomic", "write_wav_atomic"]


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``path`` (created if missing), held for the ``with`` block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            import fcntl
        except ImportError:  # non-POSIX: no locking, builds there must not run concurrently
            yield
            return
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A hidden temporary name next to ``path`` to write to; renamed to ``path`` when the block succeeds, removed
    when it fails. (A killed process leaves a ``.<name>.<pid>.tmp`` that the next build deletes.)"""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_wav_atomic(path: Path, waveform: np.ndarray, sampling_rate: int) -> None:
    """Mono 16-bit PCM WAV."""
    import soundfile as sf

    with atomic_path(path) as tmp:
        sf.write(tmp, waveform, sampling_rate, subtype="PCM_16", format="WAV")


def write_csv_atomic(path: Path, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    """A manifest: ``header`` then the rows sorted by their first column, floats with 3 decimals."""
    rows = sorted(rows, key=lambda r: r[0])
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow([f"{v:.3f}" if isinstance(v, float) else v for v in row])
