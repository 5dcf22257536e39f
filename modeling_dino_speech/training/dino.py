"""DINO for speech: a student and an EMA teacher of one architecture, multi-crop self-distillation.

Read top to bottom: `MultiCropWrapper` runs one network over crops of several lengths; `train_dino` builds the
student, the teacher (never wrapped by accelerate), the `DINOLoss` with its centre and the step-indexed
schedules, then loops: teacher on the global crops, student on all crops, loss over all (teacher view, student
view) pairs but identical ones, an optimiser step on the student, an EMA step of the teacher.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..configuration_dino_speech import DinoSpeechConfig
from ..feature_extraction_dino_speech import DinoSpeechFeatureExtractor
from ..losses import DINOLoss
from ..modeling_dino_speech import DinoSpeechForPreTraining
from .checkpoint import checkpoint_dir, latest_checkpoint, load_checkpoint, save_checkpoint
from .config import DinoTrainConfig, save_config, to_dict
from .monitor import CollapseMonitor, dino_statistics
from .schedules import DinoSchedules

logger = logging.getLogger(__name__)

#: How training reaches evaluation: called with the embedding model (in eval mode) and its feature extractor, it
#: returns scalars to log (e.g. `eer`). The `dino-speech train` command builds one from the recipe's `eval`
#: section (`modeling_dino_speech.evaluation.verification.trial_list_evaluator`); training never imports it.
Evaluator = Callable[[nn.Module, DinoSpeechFeatureExtractor], Mapping[str, object]]


class MultiCropWrapper(nn.Module):
    """Runs the embedding network once per crop length and the DINO head once on all embeddings.

    One `forward` for all crops keeps DistributedDataParallel to a single forward per backward.
    """

    def __init__(self, model: DinoSpeechForPreTraining):
        super().__init__()
        self.model = model

    def forward(self, crops: List[torch.Tensor]):
        """
        Args:
            crops: tensors `(N_i, T_i, num_mel_bins)`, each a stack of same-length crops.

        Returns:
            logits `(sum N_i, K)` and embeddings `(sum N_i, D)`, in the order of `crops`.
        """
        embeddings = torch.cat([self.model.dino_speech(c).embeddings for c in crops])
        return self.model.dino_head(embeddings), embeddings


@dataclass
class TrainState:
    """Where training stands; saved as JSON with every checkpoint."""

    global_step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    num_short: int = 0
    num_skipped: int = 0


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


def resolve_mixed_precision(choice: str) -> str:
    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def _flat(prefix: str, value, out: Dict[str, object]) -> Dict[str, object]:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else k, v, out)
    else:
        out[prefix] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out


def build_training_dataset(corpus: str, train: str, on_error: str = "skip"):
    """The unlabeled training pool as a `datasets.Dataset` with a `path` column.

    Args:
        corpus: `manifest`, `folder` or `voxceleb`.
        train: the manifest CSV or the corpus root.
        on_error: the crops' policy for missing or unreadable files: `skip` (with a warning naming them) or
            `fail`.
    """
    from ..data import corpora

    if not train:
        raise ValueError("the training pool is empty: point data.train at a manifest CSV or a corpus folder")
    loaders = {
        "manifest": corpora.load_manifest,
        "folder": corpora.load_audio_folder,
        "voxceleb": corpora.load_voxceleb,
    }
    if corpus not in loaders:
        raise ValueError(f"data.corpus must be one of {sorted(loaders)}, got {corpus!r}")
    return loaders[corpus](train, on_error="skip" if on_error == "skip" else "raise")


def check_checkpoint_fits(saved: dict, config: DinoSpeechConfig, where: Path) -> None:
    """Refuse to resume a checkpoint with a model of another shape."""
    current = config.to_diff_dict()
    keys = sorted(set(saved) | set(current))
    differ = [
        k
        for k in keys
        if k not in ("auto_map", "transformers_version", "dtype", "architectures") and saved.get(k) != current.get(k)
    ]
    if differ:
        details = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs config {current.get(k)!r}" for k in differ)
        raise ValueError(
            f"the config does not fit the checkpoint {where}: {details}. Use another --output_dir "
            "or the checkpoint's settings."
        )


def train_dino(cfg: DinoTrainConfig, resume: bool = False, evaluator: Optional[Evaluator] = None) -> Path:
    """Run (or resume) DINO pre-training; returns the export folder `<output_dir>/final`.

    Args:
        evaluator: evaluates the teacher every `cfg.eval.every_steps` steps and at the end (see `Evaluator`).
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from tqdm.auto import tqdm

    from ..data.multicrop import build_multicrop_dataloader, streaming_source
    from .export import export_dino

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    output_dir = Path(cfg.output_dir)
    accelerator = Accelerator(
        mixed_precision=resolve_mixed_precision(cfg.mixed_precision),
        log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
    )
    world = accelerator.num_processes
    micro_batch, rest = divmod(cfg.data.batch_size, world * cfg.optim.grad_accum)
    if rest or micro_batch == 0:
        raise ValueError(
            f"data.batch_size={cfg.data.batch_size} (the effective batch) must be a multiple of "
            f"processes x grad_accum = {world} x {cfg.optim.grad_accum}"
        )
    set_seed(cfg.seed)

    config = DinoSpeechConfig(**cfg.model)
    feature_extractor = DinoSpeechFeatureExtractor.from_model_config(config)
    student = MultiCropWrapper(DinoSpeechForPreTraining(config))
    teacher = copy.deepcopy(student)
    teacher.requires_grad_(False)
    freeze_batchnorm_statistics(teacher)
    crops = cfg.data.crops
    dino_loss = DINOLoss(
        config.dino_num_prototypes, crops.n_global, cfg.dino.student_temperature, cfg.dino.center_momentum
    )
    optimizer = torch.optim.AdamW(param_groups(student), lr=0.0, betas=tuple(cfg.optim.betas))
    student, optimizer = accelerator.prepare(student, optimizer)
    teacher.to(accelerator.device).train()
    dino_loss.to(accelerator.device)

    dataset = build_training_dataset(cfg.data.corpus, cfg.data.train, cfg.data.crops.on_error)
    augment = cfg.data.augment if cfg.data.augmentation else None

    def loader_for(epoch: int, start_batch: int):
        source = dataset
        if cfg.data.streaming:
            # Streams cannot seek: a resumed epoch restarts its stream (documented in the README).
            source = streaming_source(
                dataset,
                num_shards=max(8, world * max(cfg.data.num_workers, 1)),
                num_replicas=world,
                rank=accelerator.process_index,
                seed=cfg.seed + epoch,
            )
            start_batch = 0
        return build_multicrop_dataloader(
            source,
            crops,
            augment,
            feature_extractor,
            batch_size=micro_batch,
            num_workers=cfg.data.num_workers,
            seed=cfg.seed,
            epoch=epoch,
            start_batch=start_batch,
            num_replicas=world,
            rank=accelerator.process_index,
            drop_last=True,
        )

    batches_per_epoch = len(dataset) // (micro_batch * world) if cfg.data.streaming else len(loader_for(0, 0))
    steps_per_epoch = batches_per_epoch // cfg.optim.grad_accum
    if steps_per_epoch == 0:
        raise ValueError(f"{len(dataset)} utterances give no full step of {cfg.data.batch_size}: lower data.batch_size")
    # max_steps=0 exports the untrained teacher: the "same network at random init" baseline.
    total_steps = cfg.optim.max_steps if cfg.optim.max_steps is not None else cfg.optim.epochs * steps_per_epoch
    schedules = DinoSchedules.build(cfg.optim, cfg.dino, max(total_steps, 1), steps_per_epoch, cfg.data.batch_size)
    monitor = CollapseMonitor(
        cfg.monitor.patience,
        cfg.monitor.min_batch_entropy,
        cfg.monitor.max_sample_entropy,
        cfg.monitor.min_embedding_std,
    )
    state = TrainState()

    if resume and (found := latest_checkpoint(output_dir)) is not None:
        check_checkpoint_fits(json.loads((found / "model_config.json").read_text()), config, found)
        tensors, saved = load_checkpoint(accelerator, found)
        teacher.load_state_dict({k[len("teacher.") :]: v for k, v in tensors.items() if k.startswith("teacher.")})
        dino_loss.center.copy_(tensors["center"].to(accelerator.device))
        state = TrainState(**saved["train_state"])
        monitor.load_state_dict(saved.get("monitor", {}))
        accelerator.print(
            f"resumed from {found} at step {state.global_step} (epoch {state.epoch}, batch {state.batch_in_epoch})"
        )
    elif resume:
        accelerator.print(f"--resume: no checkpoint in {output_dir / 'checkpoints'}, starting from scratch")

    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, output_dir / "recipe.yaml")
    accelerator.init_trackers("dino", config=_flat("", to_dict(cfg), {}))
    metrics_file = output_dir / "metrics.jsonl"

    def checkpoint() -> Path:
        tensors = {f"teacher.{k}": v for k, v in teacher.state_dict().items()}
        tensors["center"] = dino_loss.center
        # model_config.json goes in before the rename: a checkpoint without it could not be resumed
        return save_checkpoint(
            accelerator,
            output_dir,
            state.global_step,
            tensors,
            {"train_state": vars(state), "monitor": monitor.state_dict()},
            cfg.keep_checkpoints,
            texts={"model_config.json": json.dumps(config.to_diff_dict(), indent=1, sort_keys=True)},
        )

    n_crops = crops.n_global + crops.n_local
    stop = GracefulStop()
    progress = tqdm(
        total=total_steps,
        initial=state.global_step,
        disable=not accelerator.is_local_main_process,
        desc="dino",
        dynamic_ncols=True,
    )
    collapsed = None
    evaluated_step = None  # the step of the last in-loop evaluation, so the final one is not run twice
    step_time = time.perf_counter()
    stop.install()
    try:
        while state.global_step < total_steps and collapsed is None:
            loader = loader_for(state.epoch, state.batch_in_epoch)
            micro = 0
            for batch in loader:
                if state.global_step >= total_steps:
                    break
                state.num_short += int(batch.get("num_short", 0))
                state.num_skipped += int(batch.get("num_skipped", 0))
                if batch["global_features"].shape[1] == 0:
                    # every file of this batch was unreadable (already reported by the loader); with several
                    # processes the others would wait for this one, so that is an error there
                    if world > 1:
                        raise RuntimeError("a whole batch of unreadable files on one process: clean the manifest")
                    state.batch_in_epoch += 1
                    continue
                global_crops = views(batch["global_features"]).to(accelerator.device, non_blocking=True)
                local = batch.get("local_features")
                student_crops = [global_crops] + (
                    [views(local).to(accelerator.device)] if local is not None and local.numel() else []
                )
                sync = (micro + 1) % cfg.optim.grad_accum == 0
                step = state.global_step
                with accelerator.autocast():
                    with torch.no_grad():
                        teacher_logits, teacher_embeddings = teacher([global_crops])
                    if sync:
                        student_logits, _ = student(student_crops)
                    else:
                        with accelerator.no_sync(student):
                            student_logits, _ = student(student_crops)
                    temperature = float(schedules.teacher_temperature[step])
                    loss = dino_loss(student_logits, teacher_logits, temperature)
                if not math.isfinite(loss.item()):
                    raise FloatingPointError(
                        f"DINO loss is {loss.item()} at step {step}; lower optim.lr or check inputs"
                    )
                if sync:
                    accelerator.backward(loss / cfg.optim.grad_accum)
                else:
                    with accelerator.no_sync(student):
                        accelerator.backward(loss / cfg.optim.grad_accum)
                dino_loss.update_center(teacher_logits, all_reduce=lambda t: accelerator.reduce(t, "mean"))
                micro += 1
                if not sync:
                    continue

                grad_norm = None
                if cfg.optim.clip_grad:
                    grad_norm = accelerator.clip_grad_norm_(student.parameters(), cfg.optim.clip_grad)
                if step < schedules.freeze_last_layer_steps:
                    for p in accelerator.unwrap_model(student).model.dino_head.last_layer.parameters():
                        p.grad = None
                for i, group in enumerate(optimizer.param_groups):
                    group["lr"] = float(schedules.learning_rate[step])
                    if i == 0:
                        group["weight_decay"] = float(schedules.weight_decay[step])
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                momentum = float(schedules.teacher_momentum[step])
                ema_update(
                    teacher,
                    accelerator.unwrap_model(student),
                    momentum,
                    all_reduce=(lambda t: accelerator.reduce(t, "mean")) if world > 1 else None,
                )
                state.global_step += 1
                state.batch_in_epoch += cfg.optim.grad_accum
                micro = 0
                progress.update(1)

                if state.global_step % cfg.log_every == 0 or state.global_step == total_steps:
                    now = time.perf_counter()
                    elapsed, step_time = now - step_time, now
                    steps_done = (
                        cfg.log_every if state.global_step % cfg.log_every == 0 else state.global_step % cfg.log_every
                    )
                    with torch.no_grad():
                        stats = dino_statistics(
                            dino_loss.teacher_probabilities(teacher_logits, temperature),
                            student_logits,
                            dino_loss.student_temperature,
                            crops.n_global,
                            teacher_embeddings,
                            dino_loss.center,
                        )
                    stats.update(
                        loss=float(accelerator.reduce(loss.detach().float(), "mean")),
                        lr=schedules.learning_rate[step],
                        weight_decay=schedules.weight_decay[step],
                        teacher_momentum=momentum,
                        teacher_temperature=temperature,
                        epoch=state.epoch,
                        crops_per_second=steps_done * cfg.data.batch_size * n_crops / max(elapsed, 1e-9),
                        grad_norm=float(grad_norm) if grad_norm is not None else 0.0,
                        skipped_files=state.num_skipped,
                        short_utterances=state.num_short,
                    )
                    stats = {k: float(v) for k, v in stats.items()}
                    accelerator.log(stats, step=state.global_step)
                    if accelerator.is_main_process:
                        with open(metrics_file, "a", encoding="utf-8") as handle:
                            handle.write(json.dumps({"step": state.global_step, **stats}) + "\n")
                    progress.set_postfix(
                        loss=f"{stats['loss']:.3f}",
                        lr=f"{stats['lr']:.2e}",
                        m=f"{momentum:.4f}",
                        H_t=f"{stats['teacher_entropy']:.2f}",
                        crops_s=f"{stats['crops_per_second']:.0f}",
                    )
                    kind = monitor.update(stats, state.global_step)
                    if kind and cfg.monitor.collapse_action == "stop":
                        collapsed = kind
                        break
                if evaluator is not None and cfg.eval.every_steps and state.global_step % cfg.eval.every_steps == 0:
                    evaluate_teacher(
                        accelerator, teacher, feature_extractor, evaluator, state.global_step, metrics_file
                    )
                    evaluated_step = state.global_step
                saved = bool(cfg.save_every) and state.global_step % cfg.save_every == 0
                if saved:
                    checkpoint()
                if stop.requested(accelerator):
                    progress.close()
                    accelerator.print(
                        f"interrupted at step {state.global_step}: saving a checkpoint to resume from "
                        "(train.py dino ... --resume)"
                    )
                    if not saved:
                        checkpoint()
                    raise StoppedBetweenSteps(f"stopped after step {state.global_step}")
            else:
                state.epoch += 1
                state.batch_in_epoch = 0
    except KeyboardInterrupt as interrupt:
        progress.close()
        if not isinstance(interrupt, StoppedBetweenSteps):
            accelerator.print(
                f"stopped inside step {state.global_step + 1}: not saved (a partial step); --resume "
                "continues from the newest checkpoint"
            )
        raise
    finally:
        stop.restore()
    progress.close()
    if not (checkpoint_dir(output_dir) / f"checkpoint_{state.global_step:08d}").is_dir():
        checkpoint()
    check_ranks_agree(accelerator, teacher, dino_loss, output_dir, micro_batch, cfg)
    if state.num_skipped:
        accelerator.print(f"skipped {state.num_skipped} unreadable utterance(s) (see the warnings above)")
    if collapsed:
        accelerator.print(f"training stopped early: collapse ({collapsed}); exporting the teacher for inspection")
    final = output_dir / "final"
    if accelerator.is_main_process:
        export_dino(
            accelerator.unwrap_model(student).model,
            teacher.model,
            dino_loss,
            feature_extractor,
            cfg,
            output_dir,
            summary={
                "steps": state.global_step,
                "epochs": state.epoch,
                "skipped_files": state.num_skipped,
                "collapse": collapsed,
            },
        )
    if evaluator is not None and evaluated_step != state.global_step:  # every rank: evaluate_teacher holds a barrier
        evaluate_teacher(accelerator, teacher, feature_extractor, evaluator, state.global_step, metrics_file)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return final


class StoppedBetweenSteps(KeyboardInterrupt):
    """The stop a `GracefulStop` asked for, taken after a whole step (its checkpoint is saved)."""


class GracefulStop:
    """Ctrl-C and SIGTERM (what schedulers and `kill` send) ask the loop to stop after the step in progress, so a
    checkpoint only ever holds whole steps (a forward pass cut short has already moved the student's BatchNorm
    statistics). A second signal stops at once and keeps the last periodic checkpoint. `install` takes over the
    two signals; `restore` gives back the previous handlers."""

    def __init__(self) -> None:
        self.signal: Optional[int] = None
        self._previous: dict = {}

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt(f"signal {signum}")
        self.signal = signum
        print(
            f"\n{signal.Signals(signum).name}: stopping after the step in progress (again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    def requested(self, accelerator) -> bool:
        """Whether any process was signalled: all ranks must stop after the same step."""
        flag = self.signal is not None
        if accelerator.num_processes > 1:
            flag = bool(accelerator.reduce(torch.tensor(float(flag), device=accelerator.device), "max").item())
        return flag


def state_digest(*modules: nn.Module) -> str:
    """A hash of every parameter and buffer: equal digests mean bit-identical states."""
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def check_ranks_agree(
    accelerator, teacher: nn.Module, dino_loss: DINOLoss, output_dir: Path, micro_batch: int, cfg: DinoTrainConfig
) -> None:
    """Every process must end with the same teacher and centre; a divergence is a bug worth stopping for."""
    from accelerate.utils import gather_object

    digests = gather_object([state_digest(teacher, dino_loss)])
    if accelerator.is_main_process:
        report = {
            "num_processes": accelerator.num_processes,
            "micro_batch_per_process": micro_batch,
            "grad_accum": cfg.optim.grad_accum,
            "effective_batch": micro_batch * accelerator.num_processes * cfg.optim.grad_accum,
            "teacher_and_centre_digests": digests,
        }
        (output_dir / "distributed_check.json").write_text(json.dumps(report, indent=1))
    if len(set(digests)) > 1:
        raise RuntimeError(f"teacher/centre differ across processes after training: {digests}")


def evaluate_teacher(
    accelerator, teacher: MultiCropWrapper, feature_extractor, evaluator: Evaluator, step: int, metrics_file: Path
) -> Optional[Mapping[str, object]]:
    """Run `evaluator` on the current teacher (main process; the others wait) and log its scalars."""
    result = None
    if accelerator.is_main_process:
        model = teacher.model.dino_speech
        model.eval()
        try:
            result = evaluator(model, feature_extractor)
        finally:
            teacher.train()
        scalars = {f"eval/{k}": float(v) for k, v in result.items() if isinstance(v, (int, float))}
        accelerator.log(scalars, step=step)
        with open(metrics_file, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": step, **scalars}) + "\n")
        accelerator.print(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in scalars.items()))
    accelerator.wait_for_everyone()
    return result
