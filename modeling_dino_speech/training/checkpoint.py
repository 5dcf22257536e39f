"""Atomic, verified training checkpoints: a checkpoint directory either exists whole or not at all, and a
damaged one is never loaded.

`accelerator.save_state` writes the student, the optimiser and the RNG states (model weights as safetensors);
the teacher, the DINO centre and the training position are written beside them as safetensors and JSON rather
than through `register_for_checkpointing`, whose loader unpickles with `weights_only=False`. Everything is
written into a staging folder that is renamed into place only when complete (`utils.atomic`), so a crash
mid-save leaves the previous checkpoint as the newest usable one.

The state file (`train_state.json`, written last) records the sha256 of every other file of the checkpoint and a
digest of its own content: `verify_checkpoint` finds a truncated or bit-flipped file, a missing one or an edited
state file, `load_checkpoint` refuses such a checkpoint, and `newest_intact_checkpoint` falls back past it to the
newest intact one. A full disk while saving is one clear error (`CheckpointWriteError`), and leaves the
previous checkpoint in place.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from safetensors.torch import load_file, save_file

from ..utils.atomic import commit_folder, fsync_folder, staging_folder, staging_path

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^checkpoint_(\d{8})$")
STATE_FILE = "train_state.json"
TENSORS_FILE = "dino_state.safetensors"
FILES_KEY = "files"
"""The state file's record of the other files: name -> sha256."""
DIGEST_KEY = "digest"
"""The state file's sha256 of its own content (without this key)."""
SET_ASIDE = "corrupt-"
"""Prefix of a damaged checkpoint moved out of the way by `newest_intact_checkpoint`."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (damaged or incomplete), or no usable checkpoint."""


class CheckpointWriteError(OSError):
    """A checkpoint that could not be written because the disk (or the quota) is full."""


def checkpoint_dir(output_dir: os.PathLike) -> Path:
    return Path(output_dir) / "checkpoints"


def checkpoint_path(output_dir: os.PathLike, step: int) -> Path:
    """Where the checkpoint after optimiser step `step` lives (once complete)."""
    return checkpoint_dir(output_dir) / f"checkpoint_{step:08d}"


def checkpoint_step(path: os.PathLike) -> int:
    """The optimiser step of a checkpoint folder, from its name."""
    match = _NAME.match(Path(path).name)
    if not match:
        raise ValueError(f"{path} is not a checkpoint folder (checkpoint_NNNNNNNN)")
    return int(match.group(1))


def _named_folders(output_dir: os.PathLike) -> list[Path]:
    """Every `checkpoint_NNNNNNNN` folder, complete or not, oldest first."""
    root = checkpoint_dir(output_dir)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name)), key=checkpoint_step)


def list_checkpoints(output_dir: os.PathLike) -> list[Path]:
    """Complete checkpoints, oldest first (a directory counts only once renamed into place)."""
    return [p for p in _named_folders(output_dir) if (p / STATE_FILE).is_file()]


def latest_checkpoint(output_dir: os.PathLike) -> Optional[Path]:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


# --------------------------------------------------------------------------------------------- digests


def file_sha256(path: os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _content_digest(state: dict) -> str:
    body = json.loads(json.dumps({k: v for k, v in state.items() if k != DIGEST_KEY}))  # as read back
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()


def _sealed(folder: Path, state: dict) -> dict:
    """`state` with the sha256 of every file in `folder` and the digest of the whole."""
    files = {
        p.relative_to(folder).as_posix(): file_sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != STATE_FILE
    }
    sealed = {**state, FILES_KEY: files}
    sealed[DIGEST_KEY] = _content_digest(sealed)
    return sealed


def verify_checkpoint(path: os.PathLike) -> List[str]:
    """What is wrong with the checkpoint in `path` (an empty list: it is intact).

    Checks that the state file reads and matches its digest, and that every file it records exists with its
    recorded sha256. A checkpoint written before digests were recorded is only checked for its state file and
    its tensors.
    """
    path = Path(path)
    state_file = path / STATE_FILE
    if not state_file.is_file():
        return [f"{STATE_FILE} is missing (an incomplete or half-deleted checkpoint)"]
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        return [f"{STATE_FILE} is unreadable ({error})"]
    if not isinstance(state, dict):
        return [f"{STATE_FILE} does not hold a JSON object"]
    if FILES_KEY not in state:
        logger.warning("%s was written without file digests (an older version): it cannot be verified", path)
        return [] if (path / TENSORS_FILE).is_file() else [f"{TENSORS_FILE} is missing"]
    if state.get(DIGEST_KEY) != _content_digest(state):
        return [f"{STATE_FILE} is damaged or was edited (its digest does not match its content)"]
    problems = []
    for name, expected in sorted(state[FILES_KEY].items()):
        file = path / name
        if not file.is_file():
            problems.append(f"{name} is missing")
        elif file_sha256(file) != expected:
            problems.append(f"{name} is damaged (its sha256 does not match the one recorded when it was saved)")
    return problems


def newest_intact_checkpoint(output_dir: os.PathLike, report: Callable[[str], None] = print) -> Optional[Path]:
    """The newest checkpoint that `verify_checkpoint` finds intact, or None when there is no checkpoint.

    Newer damaged or incomplete ones are reported through `report`, with what is wrong, and moved aside as
    `corrupt-checkpoint_NNNNNNNN` (kept for inspection, never listed, pruned or resumed again).

    Raises:
        CheckpointError: there are checkpoints, but none is intact.
    """
    damaged = []
    for path in reversed(_named_folders(output_dir)):
        problems = verify_checkpoint(path)
        if not problems:
            for bad, why in damaged:
                aside = bad.with_name(SET_ASIDE + bad.name)
                shutil.rmtree(aside, ignore_errors=True)
                os.replace(bad, aside)
                report(f"--resume: {bad.name} is damaged ({'; '.join(why)}): set aside as {aside.name}")
            if damaged:
                fsync_folder(path.parent)
                report(f"--resume: falling back to {path.name}, the newest intact checkpoint")
            return path
        damaged.append((path, problems))
    if damaged:
        details = "\n  ".join(f"{p.name}: {'; '.join(why)}" for p, why in damaged)
        raise CheckpointError(
            f"--resume: no intact checkpoint in {checkpoint_dir(output_dir)}:\n  {details}\n"
            "Remove the damaged checkpoints to start afresh, or start a new run in another --output_dir."
        )
    return None


# --------------------------------------------------------------------------------------------- saving


def _disk_full(error: BaseException) -> bool:
    """Whether `error` (or what caused it) is a write that failed for want of space."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(error)
        # torch's zip writer (torch.save) and safetensors report a short write in their own words
        if "No space left on device" in text or "StorageFull" in text or "Disk quota exceeded" in text:
            return True
        if isinstance(error, RuntimeError) and ("PytorchStreamWriter failed" in text or "unexpected pos" in text):
            return True
        error = error.__cause__ or error.__context__
    return False


def _prune(output_dir: Path, keep: int) -> None:
    """Delete the checkpoints older than the `keep` newest complete ones, and folders an interrupted delete left
    (incomplete checkpoints older than the newest complete one). Each is renamed to a hidden `.del-` name first,
    so that a crash mid-delete leaves nothing that looks like a checkpoint (the next save removes it)."""
    complete = list_checkpoints(output_dir)
    if not complete:
        return
    doomed = complete[:-keep] if keep > 0 else []
    newest = checkpoint_step(complete[-1])
    doomed += [p for p in _named_folders(output_dir) if not (p / STATE_FILE).is_file() and checkpoint_step(p) < newest]
    for old in doomed:
        gone = old.with_name(f".del-{old.name}")
        os.replace(old, gone)
        shutil.rmtree(gone, ignore_errors=True)
    if doomed:
        fsync_folder(checkpoint_dir(output_dir))


def save_checkpoint(
    accelerator,
    output_dir: os.PathLike,
    step: int,
    tensors: Dict[str, torch.Tensor],
    state: dict,
    keep: int = 2,
    texts: Optional[Dict[str, str]] = None,
) -> Path:
    """Write checkpoint `step` atomically; all processes must call this (accelerate saves per-rank RNG).

    Args:
        tensors: extra tensors to restore exactly (teacher weights and buffers, the DINO centre).
        state: JSON-serialisable training position and bookkeeping.
        keep: how many complete checkpoints to keep (older ones are deleted after the new one is in place).
        texts: more files (name -> text) that belong to the checkpoint, written before it is renamed into place.

    Raises:
        CheckpointWriteError: the disk is full; the staging folder is removed, the previous checkpoint is intact.
    """
    root = checkpoint_dir(output_dir)
    final = checkpoint_path(output_dir, step)
    tmp = staging_path(final)
    try:
        if accelerator.is_main_process:
            if not root.is_dir():
                root.mkdir(parents=True, exist_ok=True)
                fsync_folder(root.parent)
            # left by a save or a delete that crashed, at any step (the folder's lock rules out another run)
            for stale in [*root.glob(".tmp-checkpoint_*"), *root.glob(".del-checkpoint_*")]:
                shutil.rmtree(stale, ignore_errors=True)
            staging_folder(final)
        # every process writes its RNG state into the staging folder: it must exist before they start
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp), safe_serialization=True)
        # and all of them must be written before the main process records their digests
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / TENSORS_FILE))
            for name, text in (texts or {}).items():
                (tmp / name).write_text(text, encoding="utf-8")
            (tmp / STATE_FILE).write_text(json.dumps(_sealed(tmp, state), indent=1), encoding="utf-8")
            commit_folder(tmp, final)
            _prune(Path(output_dir), keep)
    except Exception as error:
        if not _disk_full(error):
            raise
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)  # give the space back
        previous = latest_checkpoint(output_dir)
        raise CheckpointWriteError(
            errno.ENOSPC,
            f"no space left on device while writing checkpoint {final} ({type(error).__name__}: {error}). "
            + (f"The previous checkpoint {previous} is intact: " if previous else "")
            + "free some space (or lower keep_checkpoints), then run again with --resume",
        ) from error
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: os.PathLike) -> tuple[Dict[str, torch.Tensor], dict]:
    """Restore the student, optimiser and RNG through accelerate; return the extra tensors and the state.

    Raises:
        CheckpointError: the checkpoint is damaged or incomplete (`verify_checkpoint`); nothing was loaded.
    """
    path = Path(path)
    problems = verify_checkpoint(path)
    if problems:
        raise CheckpointError(f"checkpoint {path} cannot be loaded: {'; '.join(problems)}")
    accelerator.load_state(str(path))
    tensors = load_file(str(path / TENSORS_FILE))
    state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    return tensors, state
