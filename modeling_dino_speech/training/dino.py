"""DINO for speech: a student and an EMA teacher of one architecture, multi-crop self-distillation.

Read top to bottom, in the order of facebookresearch/dino's `main_dino.py`: the pieces (`MultiCropWrapper`, the
parameter groups, `ema_update`), then `train_dino` and its parts:

* `set_up`: the accelerator and the output folder's lock, the student, the teacher (never wrapped by
  accelerate), the `DINOLoss` with its centre, AdamW, the training pool, the step-indexed schedules, and the
  newest intact checkpoint a `--resume` continues from (refused if the recipe changed what is trained);
* `train_step`: teacher on the global crops, student on all crops, the loss over all (teacher view, student
  view) pairs but identical ones (and with SSPS, `ssps.pseudo_positive_logits`, the same loss against the teacher's
  view of a neighbouring utterance), backward; on the last micro-batch of a step an optimiser step on the student
  and an EMA step of the teacher;
* `TrainingLog`: the statistics of a step to the progress bar, TensorBoard and `metrics.jsonl`;
* `save_dino_checkpoint`: what a resumed run needs to continue bit for bit;
* `train_loop`: the steps, epoch after epoch, with logging, evaluation, checkpoints and a graceful stop;
* `finish`: the last checkpoint, the cross-process check, the export and the last evaluation.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..configuration_dino_speech import DinoSpeechConfig
from ..data.multicrop import count_stream_rows
from ..feature_extraction_dino_speech import DinoSpeechFeatureExtractor
from ..losses import DimensionRegularization, DINOLoss, KoLeoLoss
from ..modeling_dino_speech import DinoSpeechForPreTraining
from ..utils.atomic import write_text_atomic
from .checkpoint import checkpoint_path, checkpoint_step, load_checkpoint, newest_intact_checkpoint, save_checkpoint
from .config import DinoTrainConfig, check_recipe, to_dict
from .interrupt import GracefulStop, StoppedBetweenSteps
from .lock import OutputDirLock, on_main_process
from .monitor import CollapseMonitor, dino_statistics
from .schedules import DinoSchedules
from .setup import Evaluator, begin_run, build_training_dataset, open_run
from .ssps import PositiveQueue, pseudo_positive_logits
from .threads import current_governor

__all__ = [
    "DinoRun",
    "Evaluator",
    "MultiCropWrapper",
    "TrainState",
    "ema_update",
    "freeze_batchnorm_statistics",
    "param_groups",
    "sync_batchnorm",
    "train_dino",
]

logger = logging.getLogger(__name__)


class MultiCropWrapper(nn.Module):
    """Runs the embedding network once per crop length and the DINO head once on all embeddings.

    One `forward` for all crops keeps DistributedDataParallel to a single forward per backward.
    """

    def __init__(self, model: DinoSpeechForPreTraining):
        super().__init__()
        self.model = model

    def forward(self, crops: List[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            crops: tensors `(N_i, T_i, num_mel_bins)`, each a stack of same-length crops.

        Returns:
            logits `(sum N_i, K)` and embeddings `(sum N_i, D)`, in the order of `crops`.
        """
        embeddings = torch.cat([self.model.dino_speech(c, embedding_layer="embedding").embeddings for c in crops])
        return self.model.dino_head(embeddings), embeddings


@dataclass
class TrainState:
    """Where training stands; saved as JSON with every checkpoint."""

    global_step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    num_short: int = 0
    num_skipped: int = 0
    stream_epoch: int = -1
    """Streaming only: the epoch `stream_rows` counts in."""
    stream_rows: List[int] = field(default_factory=list)
    """Streaming only: rows each DataLoader worker has delivered in `stream_epoch` (the position a resume skips to)."""


def views(features: torch.Tensor) -> torch.Tensor:
    """`(V, B, T, F)` -> `(V * B, T, F)` view-major, the order `DINOLoss` expects."""
    return features.reshape(-1, *features.shape[2:])


def param_groups(model: nn.Module) -> List[Dict]:
    """No weight decay on biases and normalisation parameters (all 1-D tensors), as in DINO."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def ema_update(
    teacher: nn.Module,
    student: nn.Module,
    momentum: float,
    all_reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student, parameters and BatchNorm statistics alike.

    The teacher's BatchNorm layers have momentum 0 (they normalise with batch statistics but never update their
    running estimates themselves): their running statistics are the EMA of the student's. Each process's
    student updates its statistics from its own shard, so they are averaged over processes first
    (`all_reduce`: a per-process tensor -> its mean) and every rank holds the same teacher.
    """
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.mul_(momentum).add_(s.detach(), alpha=1.0 - momentum)
    pairs = list(zip(teacher.buffers(), student.buffers()))
    floating = [(t, s) for t, s in pairs if t.dtype.is_floating_point]
    if floating:
        flat = torch.cat([s.detach().float().reshape(-1) for _, s in floating])
        if all_reduce is not None:
            flat = all_reduce(flat)
        for (t, _), value in zip(floating, torch.split(flat, [t.numel() for t, _ in floating])):
            t.mul_(momentum).add_(value.view_as(t).to(t.dtype), alpha=1.0 - momentum)
    for t, s in pairs:
        if not t.dtype.is_floating_point:
            t.copy_(s)


def freeze_batchnorm_statistics(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            module.momentum = 0.0


_NOT_SHAPE = ("auto_map", "custom_pipelines", "transformers_version", "dtype", "architectures")


def check_checkpoint_fits(saved: dict, config: DinoSpeechConfig, where: Path) -> None:
    """Refuse to resume a checkpoint with a model of another shape."""
    current = config.to_diff_dict()
    keys = sorted(set(saved) | set(current))
    differ = [
        k
        for k in keys
        # what the model adds to its config (auto_map, custom_pipelines) or saving stamps on it is no shape
        if k not in _NOT_SHAPE and saved.get(k) != current.get(k)
    ]
    if differ:
        details = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs config {current.get(k)!r}" for k in differ)
        raise ValueError(
            f"the config does not fit the checkpoint {where}: {details}. Use another --output_dir "
            "or the checkpoint's settings."
        )


#: Recipe settings a `--resume` may change: they steer logging, checkpoints, evaluation, the export and the
#: machine, not what is trained (`model` is compared as the model's config, by `check_checkpoint_fits`).
RESUMABLE_CHANGES = (
    "output_dir",
    "log_every",
    "save_every",
    "keep_checkpoints",
    "eval",
    "export",
    "monitor",
    "data.num_workers",
    "num_threads",
    "push_to_hub",
    "hub_model_id",
    "hub_private",
    "model",
)


def _leaves(value: Any, prefix: str = "") -> Dict[str, Any]:
    if isinstance(value, Mapping):
        out: Dict[str, Any] = {}
        for key, item in value.items():
            out.update(_leaves(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def check_resume_recipe(recorded: Mapping[str, Any], cfg: DinoTrainConfig, where: Path) -> None:
    """Refuse to resume the checkpoint `where`, trained with the recipe `recorded`, with a recipe that would make
    the continuation another run (a batch size, the data, the seed, a learning rate or schedule, the crops ...);
    the settings in `RESUMABLE_CHANGES` may change."""
    before, now = _leaves(recorded), _leaves(to_dict(cfg))

    def free(key: str) -> bool:
        return any(key == k or key.startswith(k + ".") for k in RESUMABLE_CHANGES)

    def shown(values: Dict[str, Any], key: str) -> str:
        return repr(values[key]) if key in values else "(unset)"

    def same_path(a: Any, b: Any) -> bool:
        # `data/demo/train.csv` then `/abs/.../data/demo/train.csv` is the same run: equal when both name one
        # existing file from here (a path that no longer resolves still counts as a change)
        try:
            return isinstance(a, str) and isinstance(b, str) and os.path.samefile(a, b)
        except OSError:
            return False

    differ = [
        k
        for k in sorted(set(before) | set(now))
        if not free(k) and shown(before, k) != shown(now, k) and not same_path(before.get(k), now.get(k))
    ]
    if differ:
        details = "\n  ".join(f"{k}: {shown(before, k)} -> {shown(now, k)}" for k in differ)
        raise ValueError(
            f"--resume: the recipe differs from the one {where} was trained with, in settings that would make "
            f"the continuation another run (checkpoint -> now):\n  {details}\n"
            "To continue the run, resume with its settings (they are in the checkpoint's recipe.json and the "
            "run's recipe.yaml); to train with the new ones, start a new run in another --output_dir. A resume "
            f"may change only: {', '.join(RESUMABLE_CHANGES[:-1])}."
        )


def recorded_recipe(found: Path) -> Optional[Dict[str, Any]]:
    """The recipe the checkpoint `found` was trained with (None for a checkpoint from before it was kept)."""
    import yaml

    if (found / "recipe.json").is_file():
        return json.loads((found / "recipe.json").read_text(encoding="utf-8"))
    fallback = found.parent.parent / "recipe.yaml"
    if fallback.is_file():
        return yaml.safe_load(fallback.read_text(encoding="utf-8"))
    return None


# --------------------------------------------------------------------------------------------- set-up


@dataclass
class DinoRun:
    """A DINO run once set up: what every part of the training reads (and `state`, which it advances)."""

    cfg: DinoTrainConfig
    accelerator: Any
    config: DinoSpeechConfig
    feature_extractor: DinoSpeechFeatureExtractor
    student: nn.Module
    """The `MultiCropWrapper` as accelerate prepared it (DistributedDataParallel with several processes)."""
    teacher: MultiCropWrapper
    dino_loss: DINOLoss
    optimizer: torch.optim.Optimizer
    dataset: Any
    micro_batch: int
    """Utterances per process per micro-batch: `data.batch_size` over processes and `optim.grad_accum`."""
    monitor: CollapseMonitor
    koleo: Optional[KoLeoLoss] = None
    """The KoLeo regulariser when `dino.koleo_weight` > 0."""
    dimension_reg: Optional[DimensionRegularization] = None
    """The dimension regularisation when `dino.dimension_reg_weight` > 0."""
    positive_queue: Optional[PositiveQueue] = None
    """The SSPS memory queue when `dino.ssps_weight` > 0."""
    lock: Optional[OutputDirLock] = None
    """The output folder's lock, held from the set-up to the end of the run (released by `train_dino`)."""
    total_steps: int = 0
    schedules: Optional[DinoSchedules] = None
    state: TrainState = field(default_factory=TrainState)
    device_augmenter: Optional[Any] = None
    """`data.augment_on: device`: the `DeviceAugmenter` that turns the loader's raw crops into features."""
    threads: Optional[Any] = None
    """`num_threads: auto`: the `ThreadGovernor` that re-evaluates the thread count during training."""

    @property
    def output_dir(self) -> Path:
        return Path(self.cfg.output_dir)

    def loader(self, epoch: int, start_batch: int):
        """The micro-batches of `epoch` for this process, from `start_batch` on."""
        from ..data.multicrop import build_multicrop_dataloader, streaming_source

        data, world, rank = self.cfg.data, self.accelerator.num_processes, self.accelerator.process_index
        source, skip_rows, replayed = self.dataset, None, 0
        if data.streaming:
            # Streams cannot seek: a resumed epoch replays each worker's stream up to the rows it had delivered
            # (placeholders, nothing read), so the order that follows is the uninterrupted one.
            state = self.state
            if start_batch and state.stream_epoch == epoch and 0 < len(state.stream_rows) <= max(1, data.num_workers):
                skip_rows, replayed = list(state.stream_rows), start_batch
            elif start_batch:
                self.accelerator.print(
                    "streaming: the checkpoint has no stream position for this epoch and these workers: "
                    "the epoch restarts"
                )
            source = streaming_source(
                self.dataset,
                num_shards=max(8, world * max(data.num_workers, 1)),
                num_replicas=world,
                rank=rank,
                seed=self.cfg.seed + epoch,
            )
            start_batch = 0
        loader = build_multicrop_dataloader(
            source,
            data.crops,
            data.augment if data.augmentation else None,
            self.feature_extractor,
            batch_size=self.micro_batch,
            num_workers=data.num_workers,
            seed=self.cfg.seed,
            epoch=epoch,
            start_batch=start_batch,
            num_replicas=world,
            rank=rank,
            drop_last=True,
            pin_memory=self.device_augmenter is not None and self.accelerator.device.type == "cuda",
            device_augmenter=self.device_augmenter,
            skip_rows=skip_rows,
        )
        return _drop_replayed(loader, replayed) if data.streaming else loader

    def steps_per_epoch(self) -> int:
        world = self.accelerator.num_processes
        if self.cfg.data.streaming:
            batches = len(self.dataset) // (self.micro_batch * world)
        else:
            batches = len(self.loader(0, 0))
        return batches // self.cfg.optim.grad_accum


def _drop_replayed(loader, expected: int):
    """A resumed streaming loader without the placeholder batches that replay the rows already trained on."""
    dropped = 0
    for batch in loader:
        if batch.get("placeholder"):
            dropped += 1
            continue
        if dropped != expected:
            raise RuntimeError(f"streaming resume: replayed {dropped} batches where {expected} were trained on")
        yield batch


def sync_batchnorm(module: nn.Module, accelerator: Any) -> nn.Module:
    """`sync_batchnorm: true`: BatchNorm layers that average their batch statistics over all processes (GPU
    only; with one process there is nothing to synchronise and `module` is returned as it is)."""
    if accelerator.num_processes == 1:
        accelerator.print("sync_batchnorm: one process, nothing to synchronise: BatchNorm left as it is")
        return module
    if accelerator.device.type == "cpu":
        raise ValueError(
            f"sync_batchnorm: torch's SyncBatchNorm runs on GPUs only, and these {accelerator.num_processes} "
            "processes are on CPU: set sync_batchnorm: false"
        )
    return nn.SyncBatchNorm.convert_sync_batchnorm(module)


def micro_batch_size(cfg: DinoTrainConfig, num_processes: int) -> int:
    micro_batch, rest = divmod(cfg.data.batch_size, num_processes * cfg.optim.grad_accum)
    if rest or micro_batch == 0:
        raise ValueError(
            f"data.batch_size={cfg.data.batch_size} (the effective batch) must be a multiple of "
            f"processes x grad_accum = {num_processes} x {cfg.optim.grad_accum}"
        )
    return micro_batch


def choose_checkpoint(accelerator, cfg: DinoTrainConfig, config: DinoSpeechConfig) -> Optional[Path]:
    """The checkpoint a `--resume` continues from: the newest intact one (damaged ones are reported and set
    aside), checked against the recipe; None when there is none."""
    found = on_main_process(accelerator, lambda: newest_intact_checkpoint(cfg.output_dir, accelerator.print))
    if found is not None:
        check_checkpoint_fits(json.loads((found / "model_config.json").read_text()), config, found)
        recorded = recorded_recipe(found)
        if recorded is None:
            logger.warning("%s holds no recipe (an older version): the recipe was not compared", found)
        else:
            check_resume_recipe(recorded, cfg, found)
    return found


def set_up(cfg: DinoTrainConfig, resume: bool = False) -> DinoRun:
    """Everything a run needs, resumed from the newest intact checkpoint in `cfg.output_dir` with `resume`.

    The returned run holds the output folder's lock (`run.lock`), which the caller releases when the run ends;
    if the set-up fails, it is released here.

    Raises:
        OutputDirBusy: another run holds `cfg.output_dir`.
        CheckpointError: with `resume`, the folder has checkpoints but none is intact.
        ValueError: with `resume`, the recipe changed what is trained (or the model's shape).
    """
    output_dir = Path(cfg.output_dir)
    check_recipe(cfg)
    config = DinoSpeechConfig(**cfg.model)
    accelerator, lock = open_run(cfg, command=None)
    try:
        # Before anything is written: a recipe that does not fit leaves the run as it was.
        found = choose_checkpoint(accelerator, cfg, config) if resume else None
        begin_run(accelerator, cfg, "dino", log_hyperparameters=True, continued=found is not None)
        if accelerator.is_main_process:
            # a resumed run logs the steps after its checkpoint again; a new run starts a new log
            TrainingLog.trim(output_dir / "metrics.jsonl", checkpoint_step(found) if found is not None else 0)
        run = _build(cfg, accelerator, config)
        run.lock = lock
        if found is not None:
            resume_from(run, found)
        elif resume:
            accelerator.print(f"--resume: no checkpoint in {output_dir / 'checkpoints'}, starting from scratch")
    except BaseException:
        lock.release()
        raise
    return run


def _build(cfg: DinoTrainConfig, accelerator, config: DinoSpeechConfig) -> DinoRun:
    """The models, the loss, the optimiser, the pool and the schedules of a run."""
    micro_batch = micro_batch_size(cfg, accelerator.num_processes)
    feature_extractor = DinoSpeechFeatureExtractor.from_model_config(config)
    student = MultiCropWrapper(DinoSpeechForPreTraining(config))
    if cfg.sync_batchnorm:  # before the copy: the teacher's batch statistics are synchronised too, as in DINO
        student = sync_batchnorm(student, accelerator)
    teacher = copy.deepcopy(student)
    teacher.requires_grad_(False)
    freeze_batchnorm_statistics(teacher)
    dino_loss = DINOLoss(
        config.dino_num_prototypes, cfg.data.crops.n_global, cfg.dino.student_temperature, cfg.dino.center_momentum
    )
    optimizer = torch.optim.AdamW(param_groups(student), lr=0.0, betas=tuple(cfg.optim.betas))
    student, optimizer = accelerator.prepare(student, optimizer)
    teacher.to(accelerator.device).train()
    dino_loss.to(accelerator.device)

    run = DinoRun(
        cfg=cfg,
        accelerator=accelerator,
        config=config,
        feature_extractor=feature_extractor,
        student=student,
        teacher=teacher,
        dino_loss=dino_loss,
        optimizer=optimizer,
        dataset=build_training_dataset(cfg.data),
        micro_batch=micro_batch,
        monitor=CollapseMonitor.from_config(cfg.monitor),
        koleo=KoLeoLoss() if cfg.dino.koleo_weight > 0 else None,
        dimension_reg=DimensionRegularization() if cfg.dino.dimension_reg_weight > 0 else None,
        positive_queue=(
            PositiveQueue(cfg.dino.ssps_queue_size, config.embedding_size, cfg.dino.ssps_neighbors).to(
                accelerator.device
            )
            if cfg.dino.ssps_weight > 0
            else None
        ),
        threads=current_governor(),
    )
    if cfg.data.augment_on == "device":
        from ..data.device_augment import DeviceAugmenter

        run.device_augmenter = DeviceAugmenter(
            cfg.data.augment if cfg.data.augmentation else None, feature_extractor, accelerator.device
        )
    steps_per_epoch = run.steps_per_epoch()
    if steps_per_epoch == 0:
        raise ValueError(
            f"{len(run.dataset)} utterances give no full step of {cfg.data.batch_size}: lower data.batch_size"
        )
    # max_steps=0 exports the untrained teacher: the "same network at random init" baseline.
    run.total_steps = cfg.optim.max_steps if cfg.optim.max_steps is not None else cfg.optim.epochs * steps_per_epoch
    run.schedules = DinoSchedules.build(
        cfg.optim, cfg.dino, max(run.total_steps, 1), steps_per_epoch, cfg.data.batch_size
    )
    return run


# --------------------------------------------------------------------------------------------- checkpoints


def save_dino_checkpoint(run: DinoRun) -> Path:
    """Checkpoint the run after its current step (every process takes part)."""
    tensors = {f"teacher.{k}": v for k, v in run.teacher.state_dict().items()}
    tensors["center"] = run.dino_loss.center
    if run.positive_queue is not None:
        tensors.update({f"ssps.{k}": v for k, v in run.positive_queue.state_dict().items()})
    return save_checkpoint(
        run.accelerator,
        run.output_dir,
        run.state.global_step,
        tensors,
        {"train_state": vars(run.state), "monitor": run.monitor.state_dict()},
        run.cfg.keep_checkpoints,
        # in the checkpoint before its rename: a checkpoint without its model's shape could not be resumed, and
        # its recipe is what a resume is compared with
        texts={
            "model_config.json": json.dumps(run.config.to_diff_dict(), indent=1, sort_keys=True),
            "recipe.json": json.dumps(to_dict(run.cfg), indent=1),
        },
    )


def resume_from(run: DinoRun, found: Path) -> None:
    """Restore student, optimiser and RNG (accelerate), teacher, centre, position and monitor from `found`."""
    tensors, saved = load_checkpoint(run.accelerator, found)
    run.teacher.load_state_dict({k[len("teacher.") :]: v for k, v in tensors.items() if k.startswith("teacher.")})
    run.dino_loss.center.copy_(tensors["center"].to(run.accelerator.device))
    if run.positive_queue is not None:
        # the recipe check has refused a change of the SSPS settings, so a saved queue has this queue's shape
        run.positive_queue.load_state_dict({k[len("ssps.") :]: v for k, v in tensors.items() if k.startswith("ssps.")})
    run.state = TrainState(**saved["train_state"])
    run.monitor.load_state_dict(saved.get("monitor", {}))
    state = run.state
    run.accelerator.print(
        f"resumed from {found} at step {state.global_step} (epoch {state.epoch}, batch {state.batch_in_epoch})"
    )


# --------------------------------------------------------------------------------------------- one step


@dataclass
class StepOutput:
    """What a micro-batch leaves for logging."""

    step: int
    """The optimiser step it belongs to (its schedules' index)."""
    loss: torch.Tensor
    teacher_logits: torch.Tensor
    teacher_embeddings: torch.Tensor
    student_logits: torch.Tensor
    teacher_temperature: float
    koleo: Optional[torch.Tensor] = None
    """The KoLeo term (before its weight), when the recipe has one."""
    dimension_reg: Optional[torch.Tensor] = None
    """The dimension regularisation term (before its weight), when the recipe has one."""
    ssps: Optional[torch.Tensor] = None
    """The DINO loss against the SSPS pseudo-positives (before its weight), once SSPS has started."""
    ssps_similarity: Optional[torch.Tensor] = None
    """Mean cosine between the anchors' teacher views and their pseudo-positives, once SSPS has started."""
    teacher_momentum: float = 0.0
    grad_norm: Optional[torch.Tensor] = None


def crops_of(run: DinoRun, batch: Mapping[str, Any]) -> Optional[Tuple[torch.Tensor, List[torch.Tensor], torch.Tensor]]:
    """The teacher's and the student's crops of a micro-batch on the device and the pool index of each utterance
    (counting its short and skipped utterances, and for a stream the rows each worker delivered), or None for a
    batch whose every file was unreadable. Raw crops (`data.augment_on: device`) are augmented and featurised
    here, on the device."""
    state = run.state
    if run.threads is not None:
        run.threads.maybe_update()
    state.num_short += int(batch.get("num_short", 0))
    state.num_skipped += int(batch.get("num_skipped", 0))
    if "stream_worker" in batch:
        if state.stream_epoch != state.epoch:
            state.stream_epoch, state.stream_rows = state.epoch, []
        count_stream_rows(state.stream_rows, batch)
    raw = "global_crops" in batch
    if batch["global_crops" if raw else "global_features"].shape[1] == 0:
        # already reported by the loader; with several processes the others would wait for this one
        if run.accelerator.num_processes > 1:
            raise RuntimeError("a whole batch of unreadable files on one process: clean the manifest")
        state.batch_in_epoch += 1
        return None
    if raw:
        batch = run.device_augmenter(batch)
    device = run.accelerator.device
    global_crops = views(batch["global_features"]).to(device, non_blocking=True)
    local = batch.get("local_features")
    local_crops = [views(local).to(device)] if local is not None and local.numel() else []
    return global_crops, [global_crops] + local_crops, batch["index"].to(device)


def regularizer_term(regularizer: Optional[nn.Module], views_of: Sequence[torch.Tensor]) -> Optional[torch.Tensor]:
    """`regularizer`'s term averaged over the views' batches, or None when the recipe has none."""
    if regularizer is None:
        return None
    return torch.stack([regularizer(v) for v in views_of]).mean()


def train_step(
    run: DinoRun,
    global_crops: torch.Tensor,
    student_crops: List[torch.Tensor],
    utterance: Optional[torch.Tensor] = None,
    sync: bool = True,
) -> StepOutput:
    """Forward and backward of one micro-batch; with `sync` (the step's last micro-batch) also the optimiser step
    of the student and the EMA step of the teacher, which advance `run.state` by one step. `utterance` `(B,)`,
    the pool index of each utterance, is what SSPS needs (`dino.ssps_weight` > 0)."""
    accelerator, optim, schedules, state = run.accelerator, run.cfg.optim, run.schedules, run.state
    step = state.global_step
    temperature = float(schedules.teacher_temperature[step])
    mean_over_processes = lambda t: accelerator.reduce(t, "mean")
    # Gradients are all-reduced once per step, on its last micro-batch.
    with contextlib.nullcontext() if sync else accelerator.no_sync(run.student):
        with accelerator.autocast():
            with torch.no_grad():
                teacher_logits, teacher_embeddings = run.teacher([global_crops])
            student_logits, student_embeddings = run.student(student_crops)
            loss = run.dino_loss(student_logits, teacher_logits, temperature)
            ssps = ssps_similarity = None
            queue = run.positive_queue
            if queue is not None:
                if utterance is None:
                    raise ValueError("dino.ssps_weight > 0 needs the pool index of each utterance in the batch")
                # view-major, like the teacher's views
                view_utterance = utterance.repeat(teacher_embeddings.shape[0] // utterance.shape[0])
                if step >= run.schedules.ssps_start_step:
                    positive_logits, ssps_similarity = pseudo_positive_logits(
                        queue,
                        run.teacher.model.dino_head,
                        teacher_logits,
                        teacher_embeddings,
                        view_utterance,
                        torch.Generator().manual_seed(run.cfg.seed * 1_000_003 + step),
                    )
                    ssps = run.dino_loss(student_logits, positive_logits, temperature)
                    weight = run.cfg.dino.ssps_weight
                    loss = (1.0 - weight) * loss + weight * ssps
            # per global view, as DINOv2 does for KoLeo: each view's batch is spread on its own
            views_of = student_embeddings[: global_crops.shape[0]].chunk(run.cfg.data.crops.n_global)
            koleo = regularizer_term(run.koleo, views_of)
            if koleo is not None:
                loss = loss + run.cfg.dino.koleo_weight * koleo
            dimension_reg = regularizer_term(run.dimension_reg, views_of)
            if dimension_reg is not None:
                loss = loss + run.cfg.dino.dimension_reg_weight * dimension_reg
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"DINO loss is {loss.item()} at step {step}; lower optim.lr or check inputs")
        accelerator.backward(loss / optim.grad_accum)
    run.dino_loss.update_center(teacher_logits, all_reduce=mean_over_processes)
    if queue is not None:  # after the sampling: a batch is never among its own candidates
        queue.push(teacher_embeddings.float(), view_utterance)
    out = StepOutput(
        step,
        loss,
        teacher_logits,
        teacher_embeddings,
        student_logits,
        temperature,
        koleo,
        dimension_reg,
        ssps,
        ssps_similarity,
    )
    if not sync:
        return out

    if optim.clip_grad:
        out.grad_norm = accelerator.clip_grad_norm_(run.student.parameters(), optim.clip_grad)
    student = accelerator.unwrap_model(run.student)
    if step < schedules.freeze_last_layer_steps:
        for p in student.model.dino_head.last_layer.parameters():
            p.grad = None
    for i, group in enumerate(run.optimizer.param_groups):
        group["lr"] = float(schedules.learning_rate[step])
        if i == 0:  # the group with weight decay (see param_groups)
            group["weight_decay"] = float(schedules.weight_decay[step])
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    out.teacher_momentum = float(schedules.teacher_momentum[step])
    ema_update(
        run.teacher,
        student,
        out.teacher_momentum,
        all_reduce=mean_over_processes if accelerator.num_processes > 1 else None,
    )
    state.global_step += 1
    state.batch_in_epoch += optim.grad_accum
    return out


# --------------------------------------------------------------------------------------------- logging


class TrainingLog:
    """Where a run's numbers go: the progress bar, TensorBoard (through the accelerator) and `metrics.jsonl`."""

    def __init__(self, run: DinoRun):
        from tqdm.auto import tqdm

        self.run = run
        self.metrics_file = run.output_dir / "metrics.jsonl"
        self.evaluated_step: Optional[int] = None
        """The step of the last evaluation, so that the final one is not run twice."""
        self.progress = tqdm(
            total=run.total_steps,
            initial=run.state.global_step,
            disable=not run.accelerator.is_local_main_process,
            desc="dino",
            dynamic_ncols=True,
        )
        self._since = time.perf_counter()

    @staticmethod
    def trim(metrics_file: Path, last_step: int) -> None:
        """Keep the rows of `metrics_file` up to step `last_step` (a run resumed from that step logs the later
        ones again; a new run starts from 0), and drop a line a kill cut short; rewritten atomically."""
        if not metrics_file.is_file():
            return
        kept, dropped = [], 0
        for line in metrics_file.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                step = json.loads(line)["step"]
            except (ValueError, KeyError, TypeError):
                dropped += 1
                continue
            if isinstance(step, (int, float)) and step <= last_step:
                kept.append(line)
            else:
                dropped += 1
        if dropped:
            write_text_atomic(metrics_file, "".join(line + "\n" for line in kept))
            logger.info("%s: dropped %d row(s) after step %d (logged anew now)", metrics_file, dropped, last_step)

    def record(self, step: int, scalars: Mapping[str, float]) -> None:
        """Scalars of `step` to TensorBoard and (main process) `metrics.jsonl`."""
        self.run.accelerator.log(dict(scalars), step=step)
        if self.run.accelerator.is_main_process:
            with open(self.metrics_file, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"step": step, **scalars}) + "\n")

    def step_done(self, out: StepOutput) -> Optional[Dict[str, float]]:
        """Count a finished step; every `log_every` steps (and at the last) log its statistics and return them."""
        self.progress.update(1)
        step, log_every = self.run.state.global_step, self.run.cfg.log_every
        if step % log_every and step != self.run.total_steps:
            return None
        now = time.perf_counter()
        elapsed, self._since = now - self._since, now
        stats = self.statistics(out, steps_done=step % log_every or log_every, seconds=elapsed)
        self.record(step, stats)
        self.progress.set_postfix(
            loss=f"{stats['loss']:.3f}",
            lr=f"{stats['lr']:.2e}",
            m=f"{out.teacher_momentum:.4f}",
            H_t=f"{stats['teacher_entropy']:.2f}",
            crops_s=f"{stats['crops_per_second']:.0f}",
        )
        return stats

    def statistics(self, out: StepOutput, steps_done: int, seconds: float) -> Dict[str, float]:
        """The logged scalars of a step: the collapse signals, the schedules' values and the throughput of the
        `steps_done` steps in `seconds`."""
        run, crops = self.run, self.run.cfg.data.crops
        with torch.no_grad():
            stats = dino_statistics(
                run.dino_loss.teacher_probabilities(out.teacher_logits, out.teacher_temperature),
                out.student_logits,
                run.dino_loss.student_temperature,
                crops.n_global,
                out.teacher_embeddings,
                run.dino_loss.center,
            )
            if run.accelerator.num_processes > 1:
                # every process must see the same signals, or under collapse_action=stop one would stop alone
                values = torch.tensor(list(stats.values()), dtype=torch.float64, device=run.accelerator.device)
                stats = dict(zip(stats, run.accelerator.reduce(values, "mean").tolist()))
        n_crops = crops.n_global + crops.n_local
        stats.update(
            loss=float(run.accelerator.reduce(out.loss.detach().float(), "mean")),
            lr=run.schedules.learning_rate[out.step],
            weight_decay=run.schedules.weight_decay[out.step],
            teacher_momentum=out.teacher_momentum,
            teacher_temperature=out.teacher_temperature,
            epoch=run.state.epoch,
            crops_per_second=steps_done * run.cfg.data.batch_size * n_crops / max(seconds, 1e-9),
            grad_norm=float(out.grad_norm) if out.grad_norm is not None else 0.0,
            skipped_files=run.state.num_skipped,
            short_utterances=run.state.num_short,
        )
        for name in ("koleo", "dimension_reg", "ssps", "ssps_similarity"):
            term = getattr(out, name)
            if term is not None:
                stats[name] = float(run.accelerator.reduce(term.detach().float(), "mean"))
        return {k: float(v) for k, v in stats.items()}

    def close(self) -> None:
        self.progress.close()


def evaluate_teacher(run: DinoRun, log: TrainingLog, evaluator: Evaluator) -> Optional[Mapping[str, object]]:
    """Run `evaluator` on the current teacher (main process; the others wait) and log its scalars."""
    accelerator, step = run.accelerator, run.state.global_step
    result = None
    if accelerator.is_main_process:
        model = run.teacher.model.dino_speech
        model.eval()
        try:
            result = evaluator(model, run.feature_extractor)
        finally:
            run.teacher.train()
        scalars = {f"eval/{k}": float(v) for k, v in result.items() if isinstance(v, (int, float))}
        log.record(step, scalars)
        accelerator.print(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in scalars.items()))
    log.evaluated_step = step
    accelerator.wait_for_everyone()
    return result


# --------------------------------------------------------------------------------------------- the loop


def after_step(
    run: DinoRun, log: TrainingLog, out: StepOutput, evaluator: Optional[Evaluator], stop: GracefulStop
) -> Optional[str]:
    """Log a finished step, watch for collapse, evaluate, checkpoint, and stop if asked to; returns the collapse
    kind when the recipe stops on it."""
    cfg, step = run.cfg, run.state.global_step
    stats = log.step_done(out)
    if stats is not None:
        kind = run.monitor.update(stats, step)
        if kind and cfg.monitor.collapse_action == "stop":
            return kind
    if evaluator is not None and cfg.eval.every_steps and step % cfg.eval.every_steps == 0:
        evaluate_teacher(run, log, evaluator)
    saved = bool(cfg.save_every) and step % cfg.save_every == 0
    if saved:
        save_dino_checkpoint(run)
    if stop.requested(run.accelerator):
        log.close()
        run.accelerator.print(
            f"interrupted at step {step}: saving a checkpoint to resume from (train.py dino ... --resume)"
        )
        if not saved:
            save_dino_checkpoint(run)
        raise StoppedBetweenSteps(f"stopped after step {step}")
    return None


def train_loop(run: DinoRun, log: TrainingLog, evaluator: Optional[Evaluator], stop: GracefulStop) -> Optional[str]:
    """Optimiser steps from where `run.state` stands to `run.total_steps`, epoch after epoch; returns the collapse
    kind if `monitor.collapse_action: stop` ended it early."""
    state, grad_accum = run.state, run.cfg.optim.grad_accum
    while state.global_step < run.total_steps:
        micro = 0
        for batch in run.loader(state.epoch, state.batch_in_epoch):
            if state.global_step >= run.total_steps:
                break
            crops = crops_of(run, batch)
            if crops is None:
                continue
            sync = (micro + 1) % grad_accum == 0
            out = train_step(run, *crops, sync=sync)
            micro = 0 if sync else micro + 1
            if not sync:
                continue
            collapsed = after_step(run, log, out, evaluator, stop)
            if collapsed:
                return collapsed
        else:
            state.epoch += 1
            state.batch_in_epoch = 0
    return None


def state_digest(*modules: nn.Module) -> str:
    """A hash of every parameter and buffer: equal digests mean bit-identical states."""
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def check_ranks_agree(run: DinoRun) -> None:
    """Every process must end with the same teacher and centre; a divergence is a bug worth stopping for."""
    from accelerate.utils import gather_object

    accelerator = run.accelerator
    digests = gather_object([state_digest(run.teacher, run.dino_loss)])
    if accelerator.is_main_process:
        report = {
            "num_processes": accelerator.num_processes,
            "micro_batch_per_process": run.micro_batch,
            "grad_accum": run.cfg.optim.grad_accum,
            "effective_batch": run.micro_batch * accelerator.num_processes * run.cfg.optim.grad_accum,
            "teacher_and_centre_digests": digests,
        }
        write_text_atomic(run.output_dir / "distributed_check.json", json.dumps(report, indent=1))
    if len(set(digests)) > 1:
        raise RuntimeError(f"teacher/centre differ across processes after training: {digests}")


def finish(run: DinoRun, log: TrainingLog, evaluator: Optional[Evaluator], collapsed: Optional[str]) -> Path:
    """Checkpoint the last step, check the processes agree, export the teacher and evaluate it a last time."""
    from .export import export_dino

    accelerator, state = run.accelerator, run.state
    if not checkpoint_path(run.output_dir, state.global_step).is_dir():
        save_dino_checkpoint(run)
    check_ranks_agree(run)
    if state.num_skipped:
        accelerator.print(f"skipped {state.num_skipped} unreadable utterance(s) (see the warnings above)")
    if collapsed:
        accelerator.print(f"training stopped early: collapse ({collapsed}); exporting the teacher for inspection")
    monitored = run.monitor.summary()
    if monitored["collapse"] and not collapsed:
        events = ", ".join(f"{e['kind']} at step {e['step']}" for e in monitored["collapses"])
        accelerator.print(f"WARNING: the run collapsed ({events}; see the warnings above); exporting it all the same")
    if accelerator.is_main_process:
        summary = {
            "steps": state.global_step,
            "epochs": state.epoch,
            "skipped_files": state.num_skipped,
            # what `mixed_precision: auto` became on this machine (it depends on the CPU or GPU)
            "mixed_precision": accelerator.mixed_precision,
            **monitored,
        }
        embedding_model = None
        if run.cfg.export.whitening:
            from .whitening import whiten_on_pool

            embedding_model = copy.deepcopy(run.teacher.model.dino_speech).eval()
            summary.update(
                whiten_on_pool(
                    embedding_model,
                    run.feature_extractor,
                    list(run.dataset["path"]),
                    run.dataset["duration"] if "duration" in run.dataset.column_names else None,
                    run.cfg.export.whitening_utterances,
                    seed=run.cfg.seed,
                    eigenvalue_floor=run.cfg.export.whitening_floor,
                    power=run.cfg.export.whitening_power,
                )
            )
        export_dino(
            accelerator.unwrap_model(run.student).model,
            run.teacher.model,
            run.dino_loss,
            run.feature_extractor,
            run.cfg,
            run.output_dir,
            summary=summary,
            embedding_model=embedding_model,
        )
    if evaluator is not None and log.evaluated_step != state.global_step:  # every rank: it holds a barrier
        evaluate_teacher(run, log, evaluator)
    if evaluator is not None and accelerator.is_main_process:
        from ..calibration import calibrate_checkpoint

        # final/ as exported (whitening included) decides at its own EER threshold; the card shows it and the
        # evaluations logged while training.
        calibrate_checkpoint(
            run.output_dir / "final", evaluator=evaluator, history=log.metrics_file, device=accelerator.device
        )
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return run.output_dir / "final"


def train_dino(cfg: DinoTrainConfig, resume: bool = False, evaluator: Optional[Evaluator] = None) -> Path:
    """Run (or resume) DINO pre-training; returns the export folder `<output_dir>/final`.

    Args:
        evaluator: evaluates the teacher every `cfg.eval.every_steps` steps and at the end (see `Evaluator`).
    """
    run = set_up(cfg, resume)
    try:
        log = TrainingLog(run)
        stop = GracefulStop()
        stop.install()
        try:
            collapsed = train_loop(run, log, evaluator, stop)
        except KeyboardInterrupt as interrupt:
            log.close()
            if not isinstance(interrupt, StoppedBetweenSteps):
                run.accelerator.print(
                    f"stopped inside step {run.state.global_step + 1}: not saved (a partial step); --resume "
                    "continues from the newest checkpoint"
                )
            raise
        finally:
            stop.restore()
        log.close()
        return finish(run, log, evaluator, collapsed)
    finally:
        run.lock.release()
