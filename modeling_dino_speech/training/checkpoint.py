"""Atomic training checkpoints: a checkpoint directory either exists whole or not at all.

`accelerator.save_state` writes the student, the optimiser and the RNG states (model weights as safetensors);
the teacher, the DINO centre and the training position are written beside them as safetensors and JSON rather
than through `register_for_checkpointing`, whose loader unpickles with `weights_only=False`. Everything is
written into a staging folder that is renamed into place only when complete (`utils.atomic`), so a crash
mid-save leaves the previous checkpoint as the newest usable one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Dict, Optional

import torch
from safetensors.torch import load_file, save_file

from ..utils.atomic import commit_folder, staging_folder, staging_path

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^checkpoint_(\d{8})$")
STATE_FILE = "train_state.json"
TENSORS_FILE = "dino_state.safetensors"


def checkpoint_dir(output_dir: os.PathLike) -> Path:
    return Path(output_dir) / "checkpoints"


def checkpoint_path(output_dir: os.PathLike, step: int) -> Path:
    """Where the checkpoint after optimiser step `step` lives (once complete)."""
    return checkpoint_dir(output_dir) / f"checkpoint_{step:08d}"


def list_checkpoints(output_dir: os.PathLike) -> list[Path]:
    """Complete checkpoints, oldest first (a directory counts only once renamed into place)."""
    root = checkpoint_dir(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def latest_checkpoint(output_dir: os.PathLike) -> Optional[Path]:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


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
    """
    root = checkpoint_dir(output_dir)
    final = checkpoint_path(output_dir, step)
    tmp = staging_path(final)
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-checkpoint_*"):  # left by a save that crashed, at any step
            shutil.rmtree(stale, ignore_errors=True)
        staging_folder(final)
    # every process writes its RNG state into the staging folder: it must exist before they start
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    if accelerator.is_main_process:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / TENSORS_FILE))
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1), encoding="utf-8")
        for name, text in (texts or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        commit_folder(tmp, final)
        for old in list_checkpoints(output_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: os.PathLike) -> tuple[Dict[str, torch.Tensor], dict]:
    """Restore the student, optimiser and RNG through accelerate; return the extra tensors and the state."""
    path = Path(path)
    accelerator.load_state(str(path))
    tensors = load_file(str(path / TENSORS_FILE))
    state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    return tensors, state
