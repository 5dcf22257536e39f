"""What DINO pre-training and pseudo-labelling set up alike: the run's accelerator, the training pool, and the
hook through which they reach evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Mapping, Protocol, Union

import torch
from torch import nn

from ..feature_extraction_dino_speech import DinoSpeechFeatureExtractor
from .config import DataConfig, save_config, to_dict
from .threads import apply_num_threads

if TYPE_CHECKING:
    from accelerate import Accelerator
    from datasets import Dataset

__all__ = ["Evaluator", "RunSettings", "build_training_dataset", "resolve_mixed_precision", "start_run"]

#: How training reaches evaluation: called with the embedding model (in eval mode) and its feature extractor, it
#: returns scalars to log (e.g. `eer`). The `dino-speech train` command builds one from the recipe's `eval`
#: section (`modeling_dino_speech.evaluation.verification.trial_list_evaluator`); training never imports it.
Evaluator = Callable[[nn.Module, DinoSpeechFeatureExtractor], Mapping[str, object]]


class RunSettings(Protocol):
    """The recipe fields `start_run` reads (`DinoTrainConfig` and `PseudoLabelConfig` have them)."""

    output_dir: str
    seed: int
    mixed_precision: str
    num_threads: Union[int, str]


def resolve_mixed_precision(choice: str) -> str:
    """`auto`: bf16 on a GPU that supports it, else fp16 on a GPU, none on CPU; anything else as given."""
    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def _flat(prefix: str, value, out: Dict[str, object]) -> Dict[str, object]:
    """A nested recipe as the flat scalar mapping TensorBoard takes for hyperparameters."""
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else k, v, out)
    else:
        out[prefix] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out


def start_run(cfg: RunSettings, project: str, log_hyperparameters: bool = False) -> Accelerator:
    """Set up a run in `cfg.output_dir`: torch's thread count, the `Accelerator` (mixed precision, TensorBoard
    under `<output_dir>/logs`, tracker `project`), the recipe as `<output_dir>/recipe.yaml`, and the seeds.

    Args:
        log_hyperparameters: give the tracker the whole recipe as hyperparameters.
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed

    apply_num_threads(cfg.num_threads)  # an int, 0 (torch's default) or "auto" (training.threads)
    output_dir = Path(cfg.output_dir)
    accelerator = Accelerator(
        mixed_precision=resolve_mixed_precision(cfg.mixed_precision),
        log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
    )
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, output_dir / "recipe.yaml")
    accelerator.init_trackers(project, config=_flat("", to_dict(cfg), {}) if log_hyperparameters else None)
    # Seeded last, so that what the caller builds next (the models) starts from the seed's first draws.
    set_seed(cfg.seed)
    return accelerator


def build_training_dataset(data: DataConfig) -> Dataset:
    """The unlabeled training pool of `data` (`data.corpus` read from `data.train`) as a `datasets.Dataset` with a
    `path` column; missing or unreadable files are skipped with a warning or raise, as `data.crops.on_error` says.
    """
    from ..data import corpora

    if not data.train:
        raise ValueError("the training pool is empty: point data.train at a manifest CSV or a corpus folder")
    loaders = {
        "manifest": corpora.load_manifest,
        "folder": corpora.load_audio_folder,
        "voxceleb": corpora.load_voxceleb,
    }
    if data.corpus not in loaders:
        raise ValueError(f"data.corpus must be one of {sorted(loaders)}, got {data.corpus!r}")
    return loaders[data.corpus](data.train, on_error="skip" if data.crops.on_error == "skip" else "raise")
