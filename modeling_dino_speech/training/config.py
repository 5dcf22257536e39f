"""Training recipes as data: YAML files mapped onto dataclasses, with strict keys, `key=value` overrides, and
every value checked against its allowed range (`utils.checks`) before any work."""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type, TypeVar, Union

import yaml

from ..configuration_dino_speech import DinoSpeechConfig
from ..data.augment import AugmentConfig
from ..data.multicrop import MultiCropConfig
from ..utils.atomic import write_text_atomic
from ..utils.checks import SettingError, above, at_least, between, check_ranges, one_of, pair_of

T = TypeVar("T")

#: The rules of the settings every run has (`DinoTrainConfig` and `PseudoLabelConfig`).
RUN_RULES = {
    "seed": at_least(0, integer=True),
    "mixed_precision": one_of("auto", "no", "fp16", "bf16", "fp8"),
    "num_threads": at_least(0, integer=True).or_value("auto", "threads follow the machine's load"),
    "log_every": at_least(1, integer=True),
}


@dataclass
class DataConfig:
    """Where the training pool comes from and how it is cut into crops."""

    corpus: str = "manifest"
    """`manifest` (CSV: path[,speaker,duration]), `folder` (any audio folder), `voxceleb` (idXXXXX/video/nnnnn.wav)."""
    train: str = ""
    """The manifest CSV or the corpus root folder."""
    streaming: bool = False
    """Read through a sharded IterableDataset (large corpora) instead of a map-style dataset."""
    batch_size: int = 32
    """Utterances per process per optimiser micro-step (each gives all its crops)."""
    num_workers: int = 1
    crops: MultiCropConfig = field(default_factory=MultiCropConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    augmentation: bool = True
    augment_on: str = "cpu"
    """`cpu`: the DataLoader workers augment and compute the features; `device`: they only decode and crop, and
    the training device augments (same distributions, see `data.device_augment`) and computes the features."""

    def __post_init__(self) -> None:
        check_ranges(
            self,
            {
                "corpus": one_of("manifest", "folder", "voxceleb"),
                "batch_size": at_least(1, integer=True),
                "num_workers": at_least(0, integer=True),
                "augment_on": one_of("cpu", "device"),
            },
        )


@dataclass
class OptimConfig:
    epochs: int = 70
    max_steps: Optional[int] = None
    """Stop after this many optimiser steps; the schedules then span `max_steps` instead of `epochs`."""
    lr: float = 0.005
    """Learning rate per 256 utterances; the peak is `lr * batch_size * num_processes * grad_accum / 256`."""
    min_lr: float = 1e-6
    warmup_epochs: float = 10.0
    weight_decay: float = 1e-4
    weight_decay_end: float = 1e-4
    clip_grad: Optional[float] = 3.0
    freeze_last_layer_epochs: float = 1.0
    grad_accum: int = 1
    betas: Tuple[float, float] = (0.9, 0.999)

    def __post_init__(self) -> None:
        check_ranges(
            self,
            {
                "epochs": at_least(0, integer=True),
                "max_steps": at_least(0, integer=True).or_null("the schedules span epochs; 0 exports the random init"),
                "lr": above(0),
                "min_lr": at_least(0),
                "warmup_epochs": at_least(0),
                "weight_decay": at_least(0),
                "weight_decay_end": at_least(0),
                "clip_grad": at_least(0).or_null("0 or null: no clipping"),
                "freeze_last_layer_epochs": at_least(0),
                "grad_accum": at_least(1, integer=True),
                "betas": pair_of(between(0, 1, high_open=True)),
            },
        )


@dataclass
class DinoConfig:
    teacher_temperature: float = 0.04
    warmup_teacher_temperature: float = 0.04
    warmup_teacher_temperature_epochs: float = 0.0
    student_temperature: float = 0.1
    center_momentum: float = 0.9
    teacher_momentum: float = 0.996
    teacher_momentum_end: float = 1.0
    koleo_weight: float = 0.0
    """Weight of the KoLeo regulariser (DINOv2) on the student's embeddings of each global view, against
    dimensional collapse; 0 is the paper's plain DINO."""
    dimension_reg_weight: float = 0.0
    """Weight of SDPN's dimension regularisation (`DimensionRegularization`) on the student's embeddings of each
    global view: it penalises a batch whose variance lies in few directions; 0 is the paper's plain DINO."""
    ssps_weight: float = 0.0
    """Share of the loss given to Self-Supervised Positive Sampling (`training.ssps`): the student's views also
    learn the teacher's distribution of a pseudo-positive, a nearby utterance from a memory queue, so that the
    recording an utterance shares with its own crops counts for less; 0 is the paper's plain DINO, 1 keeps only
    the pseudo-positives."""
    ssps_start_fraction: float = 0.5
    """Share of the training steps after which SSPS starts (before it, the queue only fills): the teacher's
    neighbours are worth trusting once it has learned something."""
    ssps_queue_size: int = 8192
    """Global views of past batches the SSPS queue holds."""
    ssps_neighbors: int = 4
    """A pseudo-positive is drawn among this many nearest queue entries of other utterances."""

    def __post_init__(self) -> None:
        check_ranges(
            self,
            {
                "teacher_temperature": above(0),
                "warmup_teacher_temperature": above(0),
                "warmup_teacher_temperature_epochs": at_least(0),
                "student_temperature": above(0),
                "center_momentum": between(0, 1),
                "teacher_momentum": between(0, 1),
                "teacher_momentum_end": between(0, 1),
                "koleo_weight": at_least(0),
                "dimension_reg_weight": at_least(0),
                "ssps_weight": between(0, 1),
                "ssps_start_fraction": between(0, 1, high_open=True),
                "ssps_queue_size": at_least(1, integer=True),
                "ssps_neighbors": at_least(1, integer=True),
            },
        )
        if self.ssps_neighbors > self.ssps_queue_size:
            raise SettingError("ssps_neighbors", self.ssps_neighbors, f"at most ssps_queue_size={self.ssps_queue_size}")


@dataclass
class ExportConfig:
    """What the exported model carries beyond the trained weights."""

    whitening: bool = False
    """Store a PCA whitening of the embeddings, estimated without labels on the training pool
    (`training.whitening`), in the exported `final/` model."""
    whitening_utterances: int = 2000
    """Pool utterances (a seeded random sample) the whitening is estimated on."""
    whitening_floor: float = 1e-4
    """Eigenvalues of the pool's covariance below this fraction of the largest are raised to it before the
    whitening divides by them: the directions the pool hardly uses, more noise than voice, are amplified less."""
    whitening_power: float = 0.5
    """Each principal direction is divided by its variance to this power: 0.5 whitens fully, less evens the
    directions out only part of the way, 0 centres and rotates (`training.whitening.fit_whitening`)."""

    def __post_init__(self) -> None:
        check_ranges(
            self,
            {
                "whitening_utterances": at_least(2, integer=True),
                "whitening_floor": between(1e-12, 1),
                "whitening_power": between(0, 0.5),
            },
        )


@dataclass
class MonitorConfig:
    collapse_action: str = "warn"
    """`warn` (say so loudly and go on) or `stop` (save a checkpoint and stop)."""
    patience: int = 20
    """Consecutive logged steps a collapse signal must persist before it is reported."""
    min_batch_entropy: float = 0.05
    """Teacher entropy of the batch-mean distribution, as a fraction of log K, below which all samples share
    one prototype (collapse to a point)."""
    max_sample_entropy: float = 0.98
    """Per-sample teacher entropy, as a fraction of log K, above which the teacher is uniform (flat collapse)."""
    min_embedding_std: float = 1e-4
    """Spread of the teacher embeddings over the batch below which they are constant (an absolute test, for
    embeddings that die out; `max_embedding_cosine` is the scale-free one)."""
    max_embedding_cosine: float = 0.999
    """Mean pairwise cosine similarity of the teacher embeddings above which they all point the same way (a
    randomly initialised ResNet without a BatchNorm before its embedding layer reads about 0.92)."""
    min_teacher_information: float = 0.001
    """Teacher batch entropy minus mean per-sample entropy (the information its output carries about the input,
    as a fraction of log K) below which every sample gets the same distribution, whatever that distribution. The
    paper's LResNet34 (65536 prototypes) reads about 0.01 in its first steps; a run blown up by optim.lr=1000
    reads below 1e-4."""

    def __post_init__(self) -> None:
        check_ranges(
            self,
            {
                "collapse_action": one_of("warn", "stop"),
                "patience": at_least(1, integer=True),
                "min_batch_entropy": between(0, 1),
                "max_sample_entropy": between(0, 1),
                "min_embedding_std": at_least(0),
                "max_embedding_cosine": between(-1, 1),
                "min_teacher_information": between(0, 1),
            },
        )


@dataclass
class EvalConfig:
    trials: Optional[str] = None
    audio_root: Optional[str] = None
    every_steps: int = 0
    """Evaluate the teacher's EER on `trials` every this many steps (0: only at the end, if trials are set)."""

    def __post_init__(self) -> None:
        check_ranges(self, {"every_steps": at_least(0, integer=True)})


@dataclass
class DinoTrainConfig:
    """Everything `train.py dino` needs; `configs/*.yaml` are instances of this."""

    output_dir: str = "runs/dino"
    seed: int = 0
    model: Dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of `DinoSpeechConfig` (checked against its signature)."""
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    dino: DinoConfig = field(default_factory=DinoConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    mixed_precision: str = "auto"
    """`auto` (bf16 where the hardware computes it: a GPU that supports it, or a CPU with AVX-512 BF16 or AMX; else
    fp16 on a GPU, none on a CPU), `no`, `fp16`, `bf16`."""
    num_threads: Union[int, str] = 0
    """torch intra-op threads per process (0: leave torch's default; `auto`: the cores the rest of the machine
    leaves free, re-evaluated during training, see `training.threads`)."""
    sync_batchnorm: bool = False
    """Synchronise BatchNorm statistics across GPU processes (student and teacher), as DINO does; a no-op with
    one process, refused on CPU processes."""
    log_every: int = 10
    save_every: int = 200
    """Checkpoint every this many steps (0: only at the end, or when stopped)."""
    keep_checkpoints: int = 2
    """Complete checkpoints kept (older ones are deleted; 0 keeps all)."""
    push_to_hub: bool = False
    hub_model_id: Optional[str] = None
    hub_private: bool = False

    def __post_init__(self) -> None:
        check_model_kwargs(self.model, "model")
        check_ranges(
            self,
            {**RUN_RULES, "save_every": at_least(0, integer=True), "keep_checkpoints": at_least(0, integer=True)},
        )


def check_recipe(recipe: Any) -> None:
    """Check every section of a recipe again (it may have been changed since it was built), naming the setting's
    path on an error (`optim.lr`)."""
    for f in dataclasses.fields(recipe):
        value = getattr(recipe, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            try:
                check_recipe(value)
            except SettingError as error:
                raise error.under(f.name) from None
    post_init = getattr(recipe, "__post_init__", None)
    if post_init is not None:
        post_init()


def check_model_kwargs(kwargs: Dict[str, Any], where: str) -> None:
    """`PretrainedConfig` swallows unknown keys silently; a recipe must not."""
    known = set(inspect.signature(DinoSpeechConfig.__init__).parameters) | {"num_labels"}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ValueError(
            f"unknown key(s) in {where}: {', '.join(unknown)} "
            f"(DinoSpeechConfig takes: {', '.join(sorted(known - {'self', 'kwargs'}))})"
        )


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], where) if len(args) == 1 else value
    if _is_dataclass_type(tp):
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ValueError(f"{where} must be one of {', '.join(map(repr, typing.get_args(tp)))}, got {value!r}")
        return value
    if origin in (tuple, Tuple, list, List, Sequence):
        items = [a for a in typing.get_args(tp) if a is not Ellipsis]
        fixed = origin in (tuple, Tuple) and items and Ellipsis not in typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            size = f"{len(items)} values" if fixed else "values"
            raise ValueError(f"{where} must be a list of {size} ([a, b]), got {value!r}")
        if fixed and len(value) != len(items):
            raise ValueError(f"{where} must be a list of {len(items)} values, got {len(value)}: {value!r}")
        if items:
            kinds = items if fixed else items * len(value)
            value = [_convert(v, kind, f"{where}[{i}]") for i, (v, kind) in enumerate(zip(value, kinds))]
        return tuple(value) if origin in (tuple, Tuple) else list(value)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if tp in (int, float) and isinstance(value, bool):
        raise ValueError(f"{where} must be {tp.__name__}, got {value!r}")
    if tp is str and isinstance(value, bool):
        # YAML 1.1 reads `no`/`off` as false: for a string setting (e.g. mixed_precision: no) the word was meant.
        value = "yes" if value else "no"
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise ValueError(f"{where} must be {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: Type[T], data: Dict[str, Any], where: str = "config") -> T:
    """Build dataclass `cls` from a nested mapping; an unknown key is an error that names it."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(
            f"unknown key(s) in {where}: {', '.join(map(repr, unknown))} (allowed: {', '.join(sorted(names))})"
        )
    values = {}
    for key, value in data.items():
        try:
            values[key] = _convert(value, hints[key], f"{where}.{key}")
        except SettingError as error:  # from a section's checks: name the setting by its path
            raise error.under(key) from None
    return cls(**values)


def to_dict(obj: Any) -> Dict[str, Any]:
    def plain(value):
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(obj))


def _leaf_paths(cls: Type, prefix: str = "") -> List[str]:
    hints = typing.get_type_hints(cls)
    paths = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if _is_dataclass_type(tp):
            paths += _leaf_paths(tp, f"{prefix}{f.name}.")
        else:
            paths.append(f"{prefix}{f.name}")
    return paths


def apply_overrides(cls: Type, data: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """Apply `key=value` overrides (`optim.lr=1e-3`, or a bare leaf name such as `max_steps=50` when it is
    unambiguous; `model.<name>=...` for model settings). Values are parsed as YAML."""
    leaves = _leaf_paths(cls)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw)
        if key.startswith("model.") or key in leaves:
            path = key.split(".")
        else:
            matches = [p for p in leaves if p.split(".")[-1] == key]
            if len(matches) != 1:
                hint = f"ambiguous: {', '.join(matches)}" if matches else "no such setting"
                raise ValueError(f"override {key!r}: {hint}")
            path = matches[0].split(".")
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {key!r}: {part} is not a section")
        node[path[-1]] = value
    return data


def load_config(cls: Type[T], path: Optional[Union[str, Path]], overrides: Sequence[str] = ()) -> T:
    """Read a YAML recipe into `cls`, apply overrides, resolve relative data paths against the working dir."""
    data: Dict[str, Any] = {}
    if path is not None:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a recipe must be a YAML mapping")
    data = apply_overrides(cls, data, overrides)
    try:
        return from_dict(cls, data, where=str(path or "config"))
    except SettingError as error:  # a value out of its range
        raise error.in_file(str(path or "the recipe")) from None
    except TypeError as error:  # a dataclass rejecting a value
        raise ValueError(f"{path}: {error}") from error


def save_config(obj: Any, path: Union[str, Path]) -> None:
    write_text_atomic(path, yaml.safe_dump(to_dict(obj), sort_keys=False))
