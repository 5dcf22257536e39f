"""The corpus's files: written atomically (through :mod:`modeling_dino_speech.utils.atomic`), so a file that
exists is complete, and an advisory lock, so two builders (tests and ``make demo``) sharing a cache or an output
folder do not collide."""

from __future__ import annotations

import contextlib
import csv
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from ...utils.atomic import atomic_path

__all__ = ["STALE_PATTERN", "file_lock", "write_csv_atomic", "write_wav_atomic"]

#: What a write killed half-way leaves behind (``atomic_path``'s hidden temporary files).
STALE_PATTERN = ".*.tmp*"


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
