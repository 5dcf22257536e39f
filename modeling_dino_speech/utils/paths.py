"""Guards for commands that write files: an output must never be one of the command's own inputs."""

from __future__ import annotations

import os
from typing import Iterable, Optional, Union

__all__ = ["check_outputs_spare_inputs"]

PathLike = Union[str, os.PathLike]


def _key(path: PathLike) -> str:
    return os.path.normcase(os.path.realpath(os.path.expanduser(os.fspath(path))))


def check_outputs_spare_inputs(
    outputs: Iterable[Optional[PathLike]], inputs: Iterable[Optional[PathLike]], what: str = "output"
) -> None:
    """Raise before any work when an output path is an input path (both resolved: symbolic links, ``..``, ``~``).

    Args:
        outputs: every file the command will write (side files included, e.g. the ``.csv`` beside a ``.npy``).
        inputs: every file or folder it reads (None entries are skipped).

    Raises:
        ValueError: ``"<output>: would overwrite the input <input>; write the <what> elsewhere"``.
    """
    sources = {}
    for path in inputs:
        if path is not None:
            sources.setdefault(_key(path), os.fspath(path))
    for output in outputs:
        if output is None:
            continue
        key = _key(output)
        if key in sources:
            raise ValueError(
                f"{os.fspath(output)}: would overwrite the input {sources[key]}; write the {what} elsewhere"
            )
