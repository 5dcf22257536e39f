"""Corpus loaders: official on-disk layouts -> ``datasets.Dataset`` with a ``path`` column.

Nothing is downloaded: each loader reads a local copy in its official layout. Every dataset has the columns
``path`` (absolute), ``duration`` (seconds, from the file headers) and, when the corpus defines them,
``speaker`` / ``label`` and corpus-specific columns. Audio stays a path (``datasets``' Audio decoding needs
torchcodec); decode it with :func:`modeling_dino_speech.data.audio.load_audio`.

============  ===============================================================================================
VoxCeleb1/2   ``wav/idXXXXX/<video>/<nnnnn>.wav`` (VoxCeleb2's m4a converted to wav or flac)
CREMA-D       ``AudioWAV/1001_DFA_ANG_XX.wav`` (speaker, sentence, emotion, level)
IEMOCAP       ``SessionN/dialog/EmoEvaluation/*.txt`` + ``SessionN/sentences/wav/<dialog>/<utt>.wav``
MSP-Podcast   ``Labels/labels_consensus.csv`` + ``Audios/<FileName>``
folder        any folder of audio files (optionally labelled by sub-folder)
manifest      CSV ``path,speaker,duration[,...]`` (or ``path[,label]``); paths may be relative to the CSV
============  ===============================================================================================

Unreadable audio is reported all at once (every bad file named) unless ``on_error="skip"``.
"""

from __future__ import annotations

import csv
import glob
import logging
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Sequence

from .audio import AudioError, audio_info, missing_reason, usability_problem

__all__ = [
    "AUDIO_EXTENSIONS",
    "CREMAD_EMOTIONS",
    "IEMOCAP_EMOTIONS",
    "MSP_PODCAST_EMOTIONS",
    "compute_durations",
    "load_audio_folder",
    "load_cremad",
    "load_iemocap",
    "load_manifest",
    "load_msp_podcast",
    "load_voxceleb",
    "report_problems",
    "screen_audio",
]

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")

CREMAD_EMOTIONS = {"ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
CREMAD_LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
IEMOCAP_EMOTIONS = {
    "neu": "neutral",
    "hap": "happy",
    "exc": "excited",
    "ang": "angry",
    "sad": "sad",
    "fru": "frustrated",
    "sur": "surprised",
    "fea": "fearful",
    "dis": "disgusted",
    "oth": "other",
    "xxx": "undecided",
}
# The usual 4-class IEMOCAP task: excited is merged into happy, the rest is left out.
IEMOCAP_FOUR_CLASSES = {"neu": "neutral", "hap": "happy", "exc": "happy", "ang": "angry", "sad": "sad"}
MSP_PODCAST_EMOTIONS = {
    "N": "neutral",
    "H": "happy",
    "A": "angry",
    "S": "sad",
    "U": "surprise",
    "F": "fear",
    "D": "disgust",
    "C": "contempt",
    "O": "other",
    "X": "no_agreement",
}
MSP_PODCAST_COLUMNS = ("FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set")
_MSP_SPLIT_ALIASES = {
    "train": "Train",
    "development": "Development",
    "dev": "Development",
    "validation": "Development",
    "test": "Test1",
    "test1": "Test1",
    "test2": "Test2",
    "test3": "Test3",
}

_CREMAD_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")
_IEMOCAP_LINE = re.compile(r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\s+(\S+)\s+(\S+)\s+\[([^\]]*)\]\s*$")
_IEMOCAP_UTT = re.compile(r"^Ses(\d{2})[FM]_.+_([FM])\d+$")


# --------------------------------------------------------------------------------------------- helpers


def _dataset(columns: dict[str, list], source: str):
    import datasets

    if not columns.get("path"):
        raise ValueError(f"{source}: no audio files found")
    return datasets.Dataset.from_dict(columns)


def _safe_info(path: str) -> tuple[float | None, str | None]:
    try:
        return audio_info(path).duration, None
    except AudioError as err:
        return None, err.problem


def compute_durations(
    paths: Sequence[str], num_threads: int = 8, on_error: str = "raise", source: str = "corpus"
) -> tuple[list[float | None], list[str]]:
    """Durations (s) from the file headers, read by a small thread pool (I/O bound; no samples decoded).

    Returns:
        ``(durations, problems)``: durations aligned with ``paths`` (None for unreadable files) and one
        ``"<path>: <problem>"`` line per unreadable file.

    Raises:
        ValueError: with ``on_error="raise"``, naming every unreadable file at once.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if num_threads > 1 and len(paths) > 64:
        with ThreadPoolExecutor(num_threads) as pool:
            results = list(pool.map(_safe_info, paths, chunksize=256))
    else:
        results = [_safe_info(p) for p in paths]
    problems = [f"{p}: {problem}" for p, (_, problem) in zip(paths, results) if problem is not None]
    report_problems(problems, on_error, source)
    return [d for d, _ in results], problems


def report_problems(problems: Sequence[str], on_error: str, source: str) -> None:
    """One error (``on_error="raise"``) or one warning (``"skip"``) that lists ``"<path>: <problem>"`` lines."""
    if not problems:
        return
    listing = _listing(problems)
    if on_error == "raise":
        raise ValueError(f"{source}: {len(problems)} unusable audio file(s):\n  {listing}")
    logger.warning("%s: skipping %d unusable audio file(s):\n  %s", source, len(problems), listing)


def _listing(lines: Sequence[str], at_most: int = 50) -> str:
    """The first `at_most` lines, one per line, indented (and how many more there are)."""
    more = f"\n  ... and {len(lines) - at_most} more" if len(lines) > at_most else ""
    return "\n  ".join(lines[:at_most]) + more


def screen_audio(
    paths: Sequence[str],
    sampling_rate: int,
    min_seconds: float = 0.0,
    drop_silent: bool = False,
    num_threads: int = 8,
) -> list[str | None]:
    """What makes each file unusable as a whole utterance (:func:`~.audio.usability_problem`: unreadable,
    NaN/Inf samples, too short, silent), or None for a usable one, aligned with ``paths``. Every file is decoded
    (by a small thread pool); nothing is reported (see :func:`report_problems`)."""

    def problem(path: str) -> str | None:
        return usability_problem(path, sampling_rate, min_seconds, drop_silent)

    if num_threads > 1 and len(paths) > 16:
        with ThreadPoolExecutor(num_threads) as pool:
            return list(pool.map(problem, paths, chunksize=16))
    return [problem(p) for p in paths]


def _with_durations(columns: dict[str, list], durations: bool, num_threads: int, on_error: str, source: str):
    """Adds ``duration`` and drops the rows of unreadable files (only reachable with ``on_error="skip"``)."""
    if not durations:
        return columns
    values, _ = compute_durations(columns["path"], num_threads, on_error, source)
    columns = dict(columns, duration=values)
    return _keep_rows(columns, [d is not None for d in values])


def _find_audio(root: str, pattern: str, extensions: Iterable[str]) -> list[str]:
    files = []
    for ext in extensions:
        files.extend(glob.glob(os.path.join(root, pattern + ext)))
    return sorted(files)


def _require_dir(path: str, what: str) -> str:
    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(path):
        reason = missing_reason(path).replace("file does not exist", "folder does not exist")
        raise FileNotFoundError(f"{path}: {what} {reason}")
    return path


def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


# --------------------------------------------------------------------------------------------- corpora


def load_voxceleb(
    root: str | os.PathLike,
    extensions: Sequence[str] = (".wav", ".flac"),
    durations: bool = True,
    on_error: str = "raise",
    num_threads: int = 8,
):
    """VoxCeleb1 or VoxCeleb2: ``<root>/idXXXXX/<video>/<nnnnn>.wav`` (``root`` may also be its parent
    holding ``wav/``, as in the official VoxCeleb1 archive).

    Returns:
        ``datasets.Dataset`` with ``path``, ``speaker`` (``id10270``), ``video``, ``utterance`` (the relative
        key used by the trial lists, ``id10270/5r0dWxy17C8/00001.wav``) and ``duration``.
    """
    _check_on_error(on_error)
    root = _require_dir(root, "VoxCeleb")
    if os.path.isdir(os.path.join(root, "wav")) and not glob.glob(os.path.join(root, "id*")):
        root = os.path.join(root, "wav")
    files = _find_audio(root, os.path.join("id*", "*", "*"), extensions)
    if not files and glob.glob(os.path.join(root, "id*", "*", "*.m4a")):
        raise ValueError(
            f"{root}: only .m4a files found; convert VoxCeleb2 to wav or flac first "
            "(e.g. ffmpeg -i in.m4a -ar 16000 -ac 1 out.wav)"
        )
    columns: dict[str, list] = {"path": files, "speaker": [], "video": [], "utterance": []}
    for path in files:
        rel = os.path.relpath(path, root)
        speaker, video, _ = rel.split(os.sep)
        columns["speaker"].append(speaker)
        columns["video"].append(video)
        columns["utterance"].append(rel.replace(os.sep, "/"))
    if not files:
        raise ValueError(f"{root}: no idXXXXX/<video>/<utterance>{extensions} files found (VoxCeleb layout)")
    return _dataset(_with_durations(columns, durations, num_threads, on_error, root), root)


def load_cremad(root: str | os.PathLike, durations: bool = True, on_error: str = "raise", num_threads: int = 8):
    """CREMA-D: ``<root>/AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav`` (or the files directly in root).

    Returns:
        ``datasets.Dataset`` with ``path``, ``speaker`` (actor id, ``"1001"``), ``sentence`` (``"DFA"``),
        ``label`` (angry, disgust, fear, happy, neutral, sad), ``level`` (low/medium/high/unspecified),
        ``duration``.

    Raises:
        ValueError: a file name that does not follow the CREMA-D pattern (all such files named), unless
            ``on_error="skip"``.
    """
    _check_on_error(on_error)
    root = _require_dir(root, "CREMA-D")
    folder = os.path.join(root, "AudioWAV") if os.path.isdir(os.path.join(root, "AudioWAV")) else root
    files = _find_audio(folder, "*", (".wav", ".flac"))
    columns: dict[str, list] = {"path": [], "speaker": [], "sentence": [], "label": [], "level": []}
    bad = []
    for path in files:
        match = _CREMAD_NAME.match(os.path.splitext(os.path.basename(path))[0])
        if not match or match.group(3) not in CREMAD_EMOTIONS or match.group(4) not in CREMAD_LEVELS:
            bad.append(path)
            continue
        columns["path"].append(path)
        columns["speaker"].append(match.group(1))
        columns["sentence"].append(match.group(2))
        columns["label"].append(CREMAD_EMOTIONS[match.group(3)])
        columns["level"].append(CREMAD_LEVELS[match.group(4)])
    if bad:
        message = (
            f"{folder}: {len(bad)} file name(s) do not follow <actor>_<sentence>_<EMO>_<LEVEL>.wav:\n  "
            + "\n  ".join(bad)
        )
        if on_error == "raise":
            raise ValueError(message)
        logger.warning(message)
    return _dataset(_with_durations(columns, durations, num_threads, on_error, folder), folder)


def _parse_iemocap_evaluation(path: str) -> list[tuple[float, float, str, str, list[float]]]:
    rows = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.startswith("["):
                continue  # headers, blank lines and the per-annotator detail lines
            match = _IEMOCAP_LINE.match(line.strip())
            if not match:
                raise ValueError(f"{path}:{lineno}: malformed IEMOCAP evaluation line: {line.strip()!r}")
            try:
                vad = [float(v) for v in match.group(5).split(",")]
            except ValueError:
                raise ValueError(f"{path}:{lineno}: malformed [V, A, D] values: {match.group(5)!r}") from None
            if len(vad) != 3:
                raise ValueError(f"{path}:{lineno}: expected 3 dimensional values [V, A, D], got {len(vad)}")
            rows.append((float(match.group(1)), float(match.group(2)), match.group(3), match.group(4), vad))
    return rows


def load_iemocap(
    root: str | os.PathLike,
    four_classes: bool = True,
    durations: bool = True,
    on_error: str = "raise",
    num_threads: int = 8,
):
    """IEMOCAP: ``<root>/Session{1..5}/dialog/EmoEvaluation/*.txt`` and ``sentences/wav/<dialog>/<utt>.wav``.

    Args:
        four_classes: the usual task: neutral, happy (happy + excited), angry, sad; other labels are dropped.
            ``False`` keeps every utterance with its own label (``excited``, ``frustrated``, ...).

    Returns:
        ``datasets.Dataset`` with ``path``, ``label``, ``session`` (1-5, for leave-one-session-out),
        ``speaker`` (``Ses01F``), ``dialog``, ``utterance``, ``start``/``end`` (s, in the dialog),
        ``valence``, ``activation``, ``dominance`` and ``duration``.

    Raises:
        FileNotFoundError: no session folders, or (all named at once) wav files listed but missing.
        ValueError: a malformed evaluation line (file and line number).
    """
    _check_on_error(on_error)
    root = _require_dir(root, "IEMOCAP")
    sessions = sorted(glob.glob(os.path.join(root, "Session[0-9]")))
    if not sessions:
        raise FileNotFoundError(f"{root}: no Session1..Session5 folders (IEMOCAP layout)")
    mapping = IEMOCAP_FOUR_CLASSES if four_classes else IEMOCAP_EMOTIONS
    columns: dict[str, list] = {
        k: []
        for k in (
            "path",
            "label",
            "session",
            "speaker",
            "dialog",
            "utterance",
            "start",
            "end",
            "valence",
            "activation",
            "dominance",
        )
    }
    missing = []
    for session_dir in sessions:
        evaluations = sorted(
            f
            for f in glob.glob(os.path.join(session_dir, "dialog", "EmoEvaluation", "*.txt"))
            if not os.path.basename(f).startswith(".")  # macOS "._" resource forks ship in some copies
        )
        for evaluation in evaluations:
            for start, end, utt, code, (val, act, dom) in _parse_iemocap_evaluation(evaluation):
                if code not in mapping:
                    continue
                match = _IEMOCAP_UTT.match(utt)
                if not match:
                    raise ValueError(f"{evaluation}: unexpected IEMOCAP utterance id {utt!r}")
                dialog = utt.rsplit("_", 1)[0]
                wav = os.path.join(session_dir, "sentences", "wav", dialog, utt + ".wav")
                if not os.path.isfile(wav):
                    missing.append(wav)
                    continue
                columns["path"].append(wav)
                columns["label"].append(mapping[code])
                columns["session"].append(int(match.group(1)))
                columns["speaker"].append(f"Ses{match.group(1)}{match.group(2)}")
                columns["dialog"].append(dialog)
                columns["utterance"].append(utt)
                columns["start"].append(start)
                columns["end"].append(end)
                columns["valence"].append(val)
                columns["activation"].append(act)
                columns["dominance"].append(dom)
    if missing:
        message = f"{root}: {len(missing)} wav file(s) listed in EmoEvaluation are missing:\n  " + "\n  ".join(
            missing[:50]
        )
        if on_error == "raise":
            raise FileNotFoundError(message)
        logger.warning(message)
    return _dataset(_with_durations(columns, durations, num_threads, on_error, root), root)


def load_msp_podcast(
    root: str | os.PathLike,
    split: str | Sequence[str] | None = None,
    classes: Sequence[str] | None = ("neutral", "happy", "angry", "sad"),
    durations: bool = True,
    on_error: str = "raise",
    num_threads: int = 8,
):
    """MSP-Podcast: ``<root>/Labels/labels_consensus.csv`` (columns FileName, EmoClass, EmoAct, EmoVal,
    EmoDom, SpkrID, Gender, Split_Set) and ``<root>/Audios/<FileName>``.

    Args:
        split: keep only these ``Split_Set`` values (``"Train"``, ``"Development"``, ``"Test1"``, ...;
            aliases ``train``/``dev``/``validation``/``test``); None keeps all.
        classes: label names to keep (see ``MSP_PODCAST_EMOTIONS``); None keeps every row.

    Returns:
        ``datasets.Dataset`` with ``path``, ``label``, ``activation``, ``valence``, ``dominance``,
        ``speaker`` (SpkrID as text; ``"Unknown"`` kept), ``gender``, ``split``, ``duration``.
    """
    _check_on_error(on_error)
    root = _require_dir(root, "MSP-Podcast")
    labels = os.path.join(root, "Labels", "labels_consensus.csv")
    if not os.path.isfile(labels):
        raise FileNotFoundError(f"{labels}: MSP-Podcast label file does not exist")
    audio_dir = os.path.join(root, "Audios")
    wanted_splits = None
    if split is not None:
        names = [split] if isinstance(split, str) else list(split)
        wanted_splits = {_MSP_SPLIT_ALIASES.get(s.lower(), s) for s in names}
    unknown = sorted(set(classes or ()) - set(MSP_PODCAST_EMOTIONS.values()))
    if unknown:
        raise ValueError(f"unknown MSP-Podcast class(es) {unknown}; known: {sorted(MSP_PODCAST_EMOTIONS.values())}")
    columns: dict[str, list] = {
        k: [] for k in ("path", "label", "activation", "valence", "dominance", "speaker", "gender", "split")
    }
    missing = []
    with open(labels, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        absent = [c for c in MSP_PODCAST_COLUMNS if c not in (reader.fieldnames or [])]
        if absent:
            raise ValueError(f"{labels}: missing column(s) {absent}; found {reader.fieldnames}")
        for lineno, row in enumerate(reader, start=2):
            if wanted_splits is not None and row["Split_Set"] not in wanted_splits:
                continue
            code = row["EmoClass"].strip()
            if code not in MSP_PODCAST_EMOTIONS:
                raise ValueError(f"{labels}:{lineno}: unknown EmoClass {code!r}")
            label = MSP_PODCAST_EMOTIONS[code]
            if classes is not None and label not in classes:
                continue
            try:
                act, val, dom = (float(row[c]) for c in ("EmoAct", "EmoVal", "EmoDom"))
            except ValueError:
                raise ValueError(f"{labels}:{lineno}: EmoAct/EmoVal/EmoDom must be numbers: {row}") from None
            path = os.path.join(audio_dir, row["FileName"])
            if not os.path.isfile(path):
                missing.append(path)
                continue
            columns["path"].append(path)
            columns["label"].append(label)
            columns["activation"].append(act)
            columns["valence"].append(val)
            columns["dominance"].append(dom)
            columns["speaker"].append(row["SpkrID"].strip())
            columns["gender"].append(row["Gender"].strip())
            columns["split"].append(row["Split_Set"])
    if missing:
        message = f"{labels}: {len(missing)} listed audio file(s) are missing:\n  " + "\n  ".join(missing[:50])
        if on_error == "raise":
            raise FileNotFoundError(message)
        logger.warning(message)
    if wanted_splits is not None and not columns["path"]:
        raise ValueError(f"{labels}: no rows with Split_Set in {sorted(wanted_splits)}")
    return _dataset(_with_durations(columns, durations, num_threads, on_error, labels), labels)


def load_audio_folder(
    root: str | os.PathLike,
    extensions: Sequence[str] = AUDIO_EXTENSIONS,
    label_from_parent: bool = False,
    durations: bool = True,
    on_error: str = "raise",
    num_threads: int = 8,
):
    """Every audio file under ``root`` (recursively).

    Args:
        label_from_parent: add a ``label`` column with each file's parent folder name (e.g. a folder per
            speaker or per class).

    Returns:
        ``datasets.Dataset`` with ``path``, ``duration`` (and ``label``).
    """
    _check_on_error(on_error)
    root = _require_dir(root, "audio")
    wanted = {e.lower() for e in extensions}
    files = sorted(
        os.path.join(folder, name)
        for folder, _, names in os.walk(root)
        for name in names
        if os.path.splitext(name)[1].lower() in wanted and not name.startswith(".")
    )
    columns: dict[str, list] = {"path": files}
    if label_from_parent:
        columns["label"] = [os.path.basename(os.path.dirname(f)) for f in files]
    if not files:
        raise ValueError(f"{root}: no audio files with extensions {tuple(extensions)} found")
    return _dataset(_with_durations(columns, durations, num_threads, on_error, root), root)


def load_manifest(
    path: str | os.PathLike,
    check_files: bool = True,
    on_error: str = "raise",
    num_threads: int = 8,
):
    """A CSV manifest with a header: ``path,speaker,duration[,...]`` or ``path[,label]``.

    ``path`` may be relative to the CSV's folder. Columns other than ``duration`` are kept as text (speaker
    ids like ``"1001"`` stay strings); a missing or empty ``duration`` is read from the file header.

    Raises:
        FileNotFoundError: the manifest, or (``check_files``; all named at once) listed audio, is missing.
        ValueError: no ``path`` column, a row with the wrong number of fields, a non-numeric duration.
    """
    _check_on_error(on_error)
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: manifest: {missing_reason(path)}")
    base = os.path.dirname(path)
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty manifest (expected a header 'path,speaker,duration[,...]')")
        header = [h.strip() for h in header]
        if "path" not in header:
            raise ValueError(f"{path}:1: manifest header has no 'path' column: {header}")
        if len(set(header)) != len(header):
            raise ValueError(f"{path}:1: duplicate column names in {header}")
        columns: dict[str, list] = {name: [] for name in header}
        linenos: list[int] = []
        for lineno, row in enumerate(reader, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise ValueError(f"{path}:{lineno}: expected {len(header)} fields ({','.join(header)}), got {len(row)}")
            for name, cell in zip(header, row):
                columns[name].append(cell.strip())
            linenos.append(lineno)
    if not columns["path"]:
        raise ValueError(f"{path}: manifest has no rows")
    columns["path"] = [p if os.path.isabs(p) else os.path.normpath(os.path.join(base, p)) for p in columns["path"]]
    if "duration" in columns:
        parsed: list[float | None] = []
        invalid: list[str] = []
        for text, lineno in zip(columns["duration"], linenos):
            try:
                value = float(text) if text else None
            except ValueError:
                raise ValueError(f"{path}:{lineno}: duration {text!r} is not a number") from None
            if value is not None and not (math.isfinite(value) and value > 0):
                invalid.append(f"{path}:{lineno}: duration {text!r} is not a positive number of seconds")
            parsed.append(value)
        if invalid:
            if on_error == "raise":
                raise ValueError(f"{len(invalid)} invalid duration(s) in the manifest:\n  {_listing(invalid)}")
            logger.warning(
                "%s: skipping %d row(s) with invalid durations:\n  %s", path, len(invalid), _listing(invalid)
            )
        columns["duration"] = parsed
        columns = _keep_rows(columns, [d is None or (math.isfinite(d) and d > 0) for d in parsed])
        if not columns["path"]:
            raise ValueError(f"{path}: no row with a valid duration")
    if check_files:
        missing = [p for p in columns["path"] if not os.path.isfile(p)]
        if missing:
            listing = [f"{p} ({missing_reason(p)})" if os.path.lexists(p) else p for p in missing[:50]]
            message = f"{path}: {len(missing)} listed audio file(s) are missing:\n  " + "\n  ".join(listing)
            if on_error == "raise":
                raise FileNotFoundError(message)
            logger.warning(message)
            columns = _keep_rows(columns, [os.path.isfile(p) for p in columns["path"]])
    # Durations the manifest does not give are read from the headers.
    unknown = [i for i, d in enumerate(columns.get("duration", [None] * len(columns["path"]))) if d is None]
    if unknown:
        computed, _ = compute_durations([columns["path"][i] for i in unknown], num_threads, on_error, path)
        durations = list(columns.get("duration", [None] * len(columns["path"])))
        for i, d in zip(unknown, computed):
            durations[i] = d
        columns["duration"] = durations
        columns = _keep_rows(columns, [d is not None for d in durations])
    return _dataset(columns, path)


def _keep_rows(columns: dict[str, list], keep: Sequence[bool]) -> dict[str, list]:
    return {name: [v for v, kept in zip(values, keep) if kept] for name, values in columns.items()}
