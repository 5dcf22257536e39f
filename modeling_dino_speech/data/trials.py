"""Speaker-verification trial lists (VoxCeleb1-O/E/H, original and cleaned, and the demo corpus lists).

Accepted line formats (whitespace separated, one trial per line; blank lines and ``#`` comments skipped):

* official VoxCeleb: ``<label> <enroll> <test>`` with label ``1`` (same speaker) or ``0``, e.g.
  ``1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav`` (``veri_test.txt``, ``veri_test2.txt``,
  ``list_test_all(2).txt``, ``list_test_hard(2).txt``);
* Kaldi / wespeaker style: ``<enroll> <test> <target|nontarget>`` (the cleaned lists as redistributed by
  several toolkits).
"""

from __future__ import annotations

import os
from typing import Iterable, NamedTuple

__all__ = ["Trial", "read_trials", "trial_files", "write_trials"]

_LABELS = {"1": 1, "0": 0, "target": 1, "nontarget": 0, "tgt": 1, "imp": 0, "true": 1, "false": 0}


class Trial(NamedTuple):
    """One verification trial: ``label`` is 1 for a same-speaker (target) pair, 0 otherwise."""

    label: int
    enroll: str
    test: str


def _parse_line(line: str, source: str, lineno: int) -> Trial:
    fields = line.split()
    if len(fields) != 3:
        raise ValueError(
            f"{source}:{lineno}: expected 3 fields '<label> <enroll> <test>' or '<enroll> <test> <target|nontarget>', "
            f"got {len(fields)}: {line.strip()!r}"
        )
    first, last = fields[0].lower(), fields[2].lower()
    if first in ("0", "1"):
        return Trial(_LABELS[first], fields[1], fields[2])
    if last in _LABELS:
        return Trial(_LABELS[last], fields[0], fields[1])
    raise ValueError(
        f"{source}:{lineno}: no trial label found (first field must be 0/1, or last field target/nontarget): "
        f"{line.strip()!r}"
    )


def read_trials(
    path: str | os.PathLike,
    audio_root: str | os.PathLike | None = None,
    check_files: bool = False,
) -> list[Trial]:
    """Parse a trial list.

    Args:
        path: the list file.
        audio_root: folder the trial paths are relative to (VoxCeleb: the ``wav/`` folder). When given, the
            returned ``enroll``/``test`` are ``os.path.join(audio_root, <as written>)``; otherwise they are
            returned exactly as written (useful as keys).
        check_files: verify, before returning, that every referenced file exists. All missing files are
            reported together in one ``FileNotFoundError``. Relative paths are resolved against
            ``audio_root``, or against the list's own folder when ``audio_root`` is None.

    Returns:
        list of :class:`Trial` in file order.

    Raises:
        FileNotFoundError: the list itself is missing, or (``check_files``) referenced audio is missing.
        ValueError: a malformed line (message ``<file>:<line>: <problem>``) or a list without trials.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: trial list does not exist")
    trials: list[Trial] = []
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            trials.append(_parse_line(stripped, path, lineno))
    if not trials:
        raise ValueError(f"{path}: no trials found")

    if audio_root is not None:
        root = os.fspath(audio_root)
        trials = [Trial(t.label, os.path.join(root, t.enroll), os.path.join(root, t.test)) for t in trials]
    if check_files:
        # With audio_root the paths are already joined; otherwise they are relative to the list's folder.
        base = os.fspath(audio_root) if audio_root is not None else os.path.dirname(os.path.abspath(path))
        here = "" if audio_root is not None else base
        missing = [f for f in trial_files(trials) if not os.path.isfile(os.path.join(here, f))]
        if missing:
            shown = "\n  ".join(missing[:50])
            more = f"\n  ... and {len(missing) - 50} more" if len(missing) > 50 else ""
            raise FileNotFoundError(
                f"{path}: {len(missing)} audio file(s) referenced by the trials are missing "
                f"(looked under {base}):\n  {shown}{more}"
            )
    return trials


def trial_files(trials: Iterable[Trial]) -> list[str]:
    """The distinct files a trial list references, sorted (embed each once, then score all pairs)."""
    files = set()
    for trial in trials:
        files.add(trial.enroll)
        files.add(trial.test)
    return sorted(files)


def write_trials(path: str | os.PathLike, trials: Iterable[Trial]) -> None:
    """Write trials in the official VoxCeleb format ``<label> <enroll> <test>``."""
    with open(path, "w", encoding="utf-8") as handle:
        for trial in trials:
            if trial.label not in (0, 1):
                raise ValueError(f"{os.fspath(path)}: trial label must be 0 or 1, got {trial.label!r}")
            handle.write(f"{trial.label} {trial.enroll} {trial.test}\n")
