"""Speaker-verification trial lists (VoxCeleb1-O/E/H, original and cleaned, and the demo corpus lists).

Accepted line formats (whitespace separated, one trial per line; blank lines and ``#`` comments skipped):

* official VoxCeleb: ``<label> <enroll> <test>`` with label ``1`` (same speaker) or ``0``, e.g.
  ``1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav`` (``veri_test.txt``, ``veri_test2.txt``,
  ``list_test_all(2).txt``, ``list_test_hard(2).txt``);
* Kaldi / wespeaker style: ``<enroll> <test> <target|nontarget>`` (the cleaned lists as redistributed by
  several toolkits);
* unlabelled pairs ``<enroll> <test>`` (for scoring only: ``allow_unlabelled=True``).

Text is UTF-8, with or without the byte-order mark spreadsheets write, or UTF-16 (with a BOM, or without one
when the NUL bytes show it); anything else is refused with the offset of the first bad byte.

A trial that occurs twice (in either order: cosine scoring is symmetric) would count twice, and a file scored
against itself is a free target trial: both are reported with the line numbers, and dropped by default
(``duplicates=`` / ``self_trials=`` ``"drop"``, ``"keep"`` or ``"error"``). The same pair with two labels is an
error. :func:`check_both_classes` refuses, before anything is embedded, a list that EER cannot be computed on.
"""

from __future__ import annotations

import codecs
import os
import warnings
from typing import Iterable, List, NamedTuple, Optional

__all__ = ["Trial", "TrialListWarning", "check_both_classes", "read_trials", "trial_files", "write_trials"]


class TrialListWarning(UserWarning):
    """A trial list holds repeated trials or self-trials (dropped or kept, as asked)."""


_LABELS = {"1": 1, "0": 0, "target": 1, "nontarget": 0, "tgt": 1, "imp": 0, "true": 1, "false": 0}


class Trial(NamedTuple):
    """One verification trial: ``label`` is 1 for a same-speaker (target) pair, 0 otherwise (None: unlabelled)."""

    label: Optional[int]
    enroll: str
    test: str


def _parse_line(line: str, source: str, lineno: int, allow_unlabelled: bool = False) -> Trial:
    fields = line.split()
    if len(fields) == 2 and allow_unlabelled:
        return Trial(None, fields[0], fields[1])
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


def _read_text(path: str) -> str:
    """The list's text: UTF-8 (BOM or not) or UTF-16; a clear error for anything else."""
    with open(path, "rb") as handle:
        raw = handle.read()
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    elif raw[:4096].count(b"\x00") > len(raw[:4096]) // 4:  # UTF-16 without a BOM: every other byte is NUL
        encoding = "utf-16-le" if raw[1:2] == b"\x00" else "utf-16-be"
    else:
        encoding = "utf-8-sig"
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}: not {encoding.replace('-sig', '')} text (byte 0x{raw[err.start]:02x} at offset {err.start}); "
            "save the list as UTF-8"
        ) from None


def _lines(numbers: List[int]) -> str:
    shown = ", ".join(map(str, numbers[:10]))
    return f"line{'s' if len(numbers) > 1 else ''} {shown}" + (
        f" and {len(numbers) - 10} more" if len(numbers) > 10 else ""
    )


def _screen(trials: List[tuple], path: str, duplicates: str, self_trials: str) -> List[Trial]:
    """Report (and drop, keep or refuse) repeated trials and self-trials; ``trials`` are ``(lineno, Trial)``."""
    for name, policy in (("duplicates", duplicates), ("self_trials", self_trials)):
        if policy not in ("drop", "keep", "error"):
            raise ValueError(f"{name} must be 'drop', 'keep' or 'error', got {policy!r}")
    first: dict = {}
    repeated: List[int] = []
    selves: List[int] = []
    kept: List[Trial] = []
    for lineno, trial in trials:
        if trial.enroll == trial.test:
            selves.append(lineno)
            if self_trials != "keep":
                continue
        key = frozenset((trial.enroll, trial.test))
        if key in first:
            earlier_line, earlier = first[key]
            if earlier.label != trial.label:
                raise ValueError(
                    f"{path}:{lineno}: the pair {trial.enroll} {trial.test} has label {trial.label} here and "
                    f"{earlier.label} on line {earlier_line}"
                )
            repeated.append(lineno)
            if duplicates != "keep":
                continue
        else:
            first[key] = (lineno, trial)
        kept.append(trial)
    for numbers, what, policy in (
        (selves, "self-trial(s) (a file against itself)", self_trials),
        (repeated, "repeated trial(s) (a pair seen before, in either order)", duplicates),
    ):
        if not numbers:
            continue
        message = f"{path}: {len(numbers)} {what} on {_lines(numbers)}"
        if policy == "error":
            raise ValueError(message)
        warnings.warn(f"{message}: {'dropped' if policy == 'drop' else 'kept'}", TrialListWarning, stacklevel=3)
    return kept


def check_both_classes(trials: Iterable[Trial], source: str) -> None:
    """Refuse a list that EER and minDCF cannot be computed on: it must hold target and non-target trials."""
    labels = [t.label for t in trials]
    if any(label is None for label in labels):
        raise ValueError(f"{source}: unlabelled trials: EER and minDCF need labels ('<label> <enroll> <test>')")
    targets = sum(labels)
    if targets == 0 or targets == len(labels):
        kind = "target (same-speaker)" if targets else "non-target"
        raise ValueError(
            f"{source}: all {len(labels)} trials are {kind} trials; EER and minDCF need both target and "
            "non-target trials"
        )


def read_trials(
    path: str | os.PathLike,
    audio_root: str | os.PathLike | None = None,
    check_files: bool = False,
    *,
    allow_unlabelled: bool = False,
    duplicates: str = "drop",
    self_trials: str = "drop",
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
        allow_unlabelled: accept ``<enroll> <test>`` lines (label None); a list is labelled or not throughout.
        duplicates, self_trials: what to do with repeated trials and self-trials, each reported with a
            :class:`TrialListWarning`: ``"drop"``, ``"keep"`` or ``"error"``.

    Returns:
        list of :class:`Trial` in file order.

    Raises:
        FileNotFoundError: the list itself is missing, or (``check_files``) referenced audio is missing.
        ValueError: a malformed line (message ``<file>:<line>: <problem>``) or a list without trials.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: trial list does not exist")
    numbered: List[tuple] = []
    for lineno, line in enumerate(_read_text(path).splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        numbered.append((lineno, _parse_line(stripped, path, lineno, allow_unlabelled)))
    if not numbered:
        raise ValueError(f"{path}: no trials found")
    unlabelled = [lineno for lineno, t in numbered if t.label is None]
    if unlabelled and len(unlabelled) != len(numbered):
        labelled = next(lineno for lineno, t in numbered if t.label is not None)
        raise ValueError(
            f"{path}:{unlabelled[0]}: an unlabelled pair in a labelled list (line {labelled} has a label): "
            "label every line or none"
        )
    trials = _screen(numbered, path, duplicates, self_trials)
    if not trials:
        raise ValueError(f"{path}: no trials left (every one was a self-trial or a repeat)")

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
