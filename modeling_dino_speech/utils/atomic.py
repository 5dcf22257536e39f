"""Files and folders that a reader, or a resumed run, sees whole or not at all.

New content is written to a hidden sibling, flushed to disk, and renamed over the target; the parent folder
is flushed too, so that the rename itself survives a power cut. A crash at any point leaves the previous
version (or nothing) in place, plus a hidden leftover that the next write of the same target removes.

Files: `atomic_path` (a temporary path to hand to any writer), `write_text_atomic`, `write_bytes_atomic`.
Folders: `write_folder_atomically` (fill a staging folder, then swap it in), or its two halves
`staging_folder` and `commit_folder` where several processes fill the folder between them (`staging_path`
tells the others where it is).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator, Union

__all__ = [
    "atomic_path",
    "commit_folder",
    "fsync_folder",
    "fsync_tree",
    "staging_folder",
    "staging_path",
    "write_bytes_atomic",
    "write_folder_atomically",
    "write_text_atomic",
]

PathLike = Union[str, os.PathLike]


def fsync_folder(folder: PathLike) -> None:
    """Flush a folder's entries (the renames done in it) to disk, where the platform allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open a folder
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a folder; the rename is still atomic there
        pass
    finally:
        os.close(fd)


def fsync_tree(folder: PathLike) -> None:
    """Flush every file below `folder`, and the subfolders' entries, to disk."""
    for path in Path(folder).rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        elif path.is_dir():
            fsync_folder(path)
    fsync_folder(folder)


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """A temporary path beside `path` for any writer; renamed over `path` when the block ends without an error,
    removed when it raises.

        with atomic_path(out / "embeddings.npy") as tmp:
            np.save(tmp, embeddings)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Hidden, named after the target and the process (concurrent writers never share one), and ending in the
    # target's suffix, which writers such as np.save and soundfile go by.
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_folder(path.parent)


def write_bytes_atomic(path: PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically; returns `path`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically; returns `path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)


def staging_path(target: PathLike) -> Path:
    """Where `staging_folder(target)` stages (for processes that write into it without creating it)."""
    target = Path(target)
    return target.parent / f".tmp-{target.name}"


def _moved_aside(target: Path) -> Path:
    return target.parent / f".old-{target.name}"


def staging_folder(target: PathLike) -> Path:
    """An empty hidden sibling of `target` to fill and then hand to `commit_folder`.

    What an interrupted earlier write left is undone first: a stale staging folder is removed, and a previous
    version moved aside by a `commit_folder` that crashed between its two renames is put back.
    """
    target = Path(target)
    tmp, old = staging_path(target), _moved_aside(target)
    if old.exists() and not target.exists():
        os.replace(old, target)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def commit_folder(staged: PathLike, target: PathLike) -> Path:
    """Flush the filled staging folder and rename it over `target`, whose previous version is then removed."""
    staged, target = Path(staged), Path(target)
    old = _moved_aside(target)
    fsync_tree(staged)
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(staged, target)
    fsync_folder(target.parent)
    shutil.rmtree(old, ignore_errors=True)
    return target


def write_folder_atomically(target: PathLike, fill: Callable[[Path], None]) -> Path:
    """Create or replace the folder `target` with what `fill(folder)` writes into a staging folder; returns
    `target`. If `fill` raises, `target` keeps its previous version."""
    staged = staging_folder(target)
    fill(staged)
    return commit_folder(staged, target)
