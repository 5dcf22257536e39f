"""What DINO pre-training and pseudo-labelling set up alike: the run's accelerator and its output folder's lock
(`open_run`, which writes nothing else), the recipe and its history, the trackers and the seed (`begin_run`), the
training pool, and the hook through which they reach evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Mapping, Optional, Protocol, Tuple, Union

import torch
import yaml
from torch import nn

from ..feature_extraction_dino_speech import DinoSpeechFeatureExtractor
from .config import DataConfig, save_config, to_dict
from .lock import OutputDirLock, on_main_process
from .threads import apply_num_threads

if TYPE_CHECKING:
    from accelerate import Accelerator
    from datasets import Dataset

__all__ = [
    "Evaluator",
    "RunSettings",
    "begin_run",
    "build_training_dataset",
    "cpu_computes_bf16",
    "open_run",
    "record_recipe",
    "resolve_mixed_precision",
]

#: How training reaches evaluation: called with the embedding model (in eval mode) and its feature extractor, it
#: returns scalars to log (e.g. `eer`). The `dino-speech train` command builds one from the recipe's `eval`
#: section (`modeling_dino_speech.evaluation.verification.trial_list_evaluator`); training never imports it.
Evaluator = Callable[[nn.Module, DinoSpeechFeatureExtractor], Mapping[str, object]]


class RunSettings(Protocol):
    """The recipe fields `open_run` and `begin_run` read (`DinoTrainConfig` and `PseudoLabelConfig` have them)."""

    output_dir: str
    seed: int
    mixed_precision: str
    num_threads: Union[int, str]


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic in hardware (AVX-512 BF16 or AMX), where bf16 autocast is faster than
    float32; elsewhere torch emulates it, and it is slower."""
    probes = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return any(bool(probe()) for probe in probes if probe is not None)


def resolve_mixed_precision(choice: str) -> str:
    """`auto`: bf16 where the hardware computes it (a GPU that supports it, or a CPU with AVX-512 BF16 or AMX),
    fp16 on other GPUs, none on other CPUs; anything else as given."""
    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_computes_bf16() else "no"


def _flat(prefix: str, value, out: Dict[str, object]) -> Dict[str, object]:
    """A nested recipe as the flat scalar mapping TensorBoard takes for hyperparameters."""
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else k, v, out)
    else:
        out[prefix] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out


def open_run(cfg: RunSettings, command: Optional[str] = None) -> Tuple[Accelerator, OutputDirLock]:
    """Open a run in `cfg.output_dir` and write nothing yet: torch's thread count, the `Accelerator` (mixed
    precision, TensorBoard under `<output_dir>/logs`) and the folder's lock (`training.lock`), which the caller
    releases when the run ends.

    Raises:
        OutputDirBusy: another run holds `cfg.output_dir`.
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    apply_num_threads(cfg.num_threads)  # an int, 0 (torch's default) or "auto" (training.threads)
    output_dir = Path(cfg.output_dir)
    accelerator = Accelerator(
        mixed_precision=resolve_mixed_precision(cfg.mixed_precision),
        log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
    )
    lock = OutputDirLock(output_dir, command)
    on_main_process(accelerator, lambda: bool(lock.acquire()))
    return accelerator, lock


def begin_run(
    accelerator: Accelerator,
    cfg: RunSettings,
    project: str,
    log_hyperparameters: bool = False,
    continued: bool = False,
) -> None:
    """Start writing the run that `open_run` opened: the recipe (`record_recipe`), the trackers (tracker
    `project`) and the seeds.

    Args:
        log_hyperparameters: give the tracker the whole recipe as hyperparameters.
        continued: the run continues one in the folder (a resume): its first recipe is kept.
    """
    from accelerate.utils import set_seed

    if accelerator.is_main_process:
        record_recipe(cfg, Path(cfg.output_dir), continued)
    accelerator.init_trackers(project, config=_flat("", to_dict(cfg), {}) if log_hyperparameters else None)
    # Seeded last, so that what the caller builds next (the models) starts from the seed's first draws.
    set_seed(cfg.seed)


def _recipe_index(path: Path) -> int:
    middle = path.name[len("recipe.") : -len(".yaml")]
    return int(middle) if middle.isdigit() else -1


def record_recipe(cfg: RunSettings, output_dir: Path, continued: bool) -> Path:
    """Write the recipe as `<output_dir>/recipe.yaml`, or, continuing a run, keep that one (the settings the
    run started with) and add `recipe.<n>.yaml` (n = 1, 2, ...) when this invocation's recipe differs from the
    newest recorded one. Returns the file that holds this invocation's recipe."""
    first = output_dir / "recipe.yaml"
    history = sorted((p for p in output_dir.glob("recipe.*.yaml") if _recipe_index(p) > 0), key=_recipe_index)
    if not (continued and first.is_file()):
        for stale in history:  # a new run in a used folder: the old run's history is not this run's
            stale.unlink()
        save_config(cfg, first)
        return first
    newest = history[-1] if history else first
    if yaml.safe_load(newest.read_text(encoding="utf-8")) == to_dict(cfg):
        return newest
    added = output_dir / f"recipe.{_recipe_index(newest) + 1 if history else 1}.yaml"
    save_config(cfg, added)
    return added


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
