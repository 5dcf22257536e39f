"""Export a trained model the way a Hub user loads it, and optionally push it.

`<output_dir>/final` holds the teacher's embedding model (`AutoModel.from_pretrained`), its feature extractor
and a model card; `<output_dir>/pretraining` holds student, teacher (with DINO heads) and the DINO centre for
continued training. Both are written to a staging folder and renamed into place (`utils.atomic`).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Optional

from safetensors.torch import save_file

from ..utils.atomic import write_folder_atomically

logger = logging.getLogger(__name__)


def write_model_card(folder: Path, title: str, summary: dict, results: Optional[dict] = None) -> None:
    """The checkpoint's README.md (Hub model card) with the training summary and any measured results."""
    from ..model_card import write_model_card as fill_card

    fill_card(folder, title=title, training=summary, results=results or {})


def export_dino(
    student,
    teacher,
    dino_loss,
    feature_extractor,
    cfg,
    output_dir: os.PathLike,
    summary: dict,
    embedding_model=None,
) -> Path:
    """Write `final/` (the teacher as a `DinoSpeechModel`) and `pretraining/`; push `final/` if configured.

    Args:
        student, teacher: `DinoSpeechForPreTraining` modules (unwrapped).
        dino_loss: the `DINOLoss` whose centre continued training needs.
        cfg: the `DinoTrainConfig` of the run.
        embedding_model: what `final/` holds instead of `teacher.dino_speech` (e.g. a copy with an embedding
            whitening); `pretraining/` always keeps the teacher as trained.
    """
    from .config import save_config

    output_dir = Path(output_dir)
    summary = {"method": "DINO (self-distillation, no labels)", **summary}

    def fill_final(folder: Path) -> None:
        (embedding_model if embedding_model is not None else teacher.dino_speech).save_pretrained(folder)
        feature_extractor.save_pretrained(folder)
        (folder / "training_summary.json").write_text(json.dumps(summary, indent=1, default=str), encoding="utf-8")
        write_model_card(folder, "DINO speech embeddings", summary)

    def fill_pretraining(folder: Path) -> None:
        teacher.save_pretrained(folder / "teacher")
        student.save_pretrained(folder / "student")
        feature_extractor.save_pretrained(folder / "teacher")
        save_file({"center": dino_loss.center.detach().cpu().contiguous()}, str(folder / "dino_loss.safetensors"))
        save_config(cfg, folder / "recipe.yaml")

    final = write_folder_atomically(output_dir / "final", fill_final)
    write_folder_atomically(output_dir / "pretraining", fill_pretraining)
    logger.info("exported the teacher to %s", final)
    if getattr(cfg, "push_to_hub", False):
        push(final, cfg.hub_model_id, private=getattr(cfg, "hub_private", False))
    return final


def push(folder: Path, repo_id: Optional[str], private: bool = False):
    """Push an exported folder; a failure keeps everything local and says why (it never raises)."""
    from .hub import push_folder_to_hub

    if not repo_id:
        logger.warning("push_to_hub=true but hub_model_id is empty: nothing pushed; %s stays local", folder)
        return None
    result = push_folder_to_hub(folder, repo_id, private=private)  # logs the outcome itself
    print(f"push to hub: {'ok ' + str(result.url) if result.ok else 'FAILED: ' + result.message}")
    return result
