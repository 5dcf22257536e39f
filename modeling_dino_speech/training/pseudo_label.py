"""Iterative pseudo-labelling with no speaker labels (the paper's second stage).

Each round: embed the whole training pool with the current model, cluster the embeddings, train a
`DinoSpeechForXVector` (AAM-softmax) on the cluster labels (first the new classifier, then the whole network),
and start the next round from it (or, with `restart_from_dino`, train each round from the DINO export on the
clusters of the previous round's model; with `dino_weight`, each round's export is averaged with the DINO
export). Round r writes `<output_dir>/round_<r>/` with `embeddings.npy`,
`pseudo_labels.csv`, `clustering_report.json`, `report.json` and `final/`.

Before the first round, every file of the pool is decoded once and those that could not be embedded are dealt
with as the data section's `crops.on_error` says (`screen_pool`): unreadable files, NaN/Inf samples, files
shorter than one analysis window (or than `crops.min_duration`) and, with `crops.drop_silent`, silent ones are
left out with one warning naming them (`skip`), or stop the run with an error naming them (`fail`).

A run holds its output folder's lock (`training.lock`) and resumes by round: with `--resume`, a round whose
`final/` and `report.json` exist is reused, and an interrupted round is done again. Ctrl-C or SIGTERM during
the AAM-softmax training stops after the step in progress (`training.interrupt`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from ..configuration_dino_speech import DinoSpeechConfig
from ..utils.atomic import atomic_path, write_folder_atomically, write_text_atomic
from ..utils.checks import above, at_least, between, check_ranges
from .clustering import ClusteringConfig
from .config import RUN_RULES, DataConfig, EvalConfig, ExportConfig, check_recipe
from .interrupt import GracefulStop, StoppedBetweenSteps
from .schedules import cosine_scheduler
from .setup import Evaluator, begin_run, build_training_dataset, open_run

logger = logging.getLogger(__name__)


@dataclass
class SupervisedConfig:
    """Training of the AAM-softmax model on one round's pseudo-labels."""

    head_steps: int = 100
    """Steps with the embedding network frozen, so the new classifier settles before it moves the network."""
    steps: int = 500
    """Steps of the whole network after the head-only steps. With `head_steps` and `steps` both 0 a round trains
    nothing: its network is the one it starts from, exported as the embedding model alone (no classifier), and
    its clusters serve only its export's `within_class_whitening`."""
    batch_size: int = 64
    lr: float = 1e-3
    head_lr: float = 1e-2
    min_lr: float = 1e-5
    warmup_steps: int = 50
    weight_decay: float = 1e-4
    clip_grad: Optional[float] = 3.0
    margin: float = 0.2
    margin_warmup_steps: int = 100
    """The AAM margin rises linearly from 0 over these steps (hard margins on a fresh classifier diverge)."""
    scale: float = 30.0
    subcenters: int = 1
    crop_seconds: float = 3.0
    dino_anchor_weight: float = 0.0
    """Weight of a term that holds the embedding of every pool utterance near the DINO export's (`init`, without
    its whitening): the mean of `1 - cos(embedding, DINO embedding)` of the same augmented crop, over the
    clustered batch and a batch of `anchor_batch_size` utterances drawn from the whole pool, clustered or not.
    The clusters hold a part of the pool; the term keeps the round from forgetting what DINO learned about the
    rest (feature distillation towards the starting network). 0: the AAM-softmax loss alone. On the demo pool it
    did not lower the real voices' EER (benchmarks/RESULTS.md, section 10)."""
    anchor_batch_size: int = 32
    """Utterances of the whole pool per step for `dino_anchor_weight` (0: the clustered batch alone)."""

    def __post_init__(self) -> None:
        check_ranges(
            self,
            {
                "head_steps": at_least(0, integer=True),
                "steps": at_least(0, integer=True),
                "batch_size": at_least(1, integer=True),
                "lr": above(0),
                "head_lr": at_least(0),
                "min_lr": at_least(0),
                "warmup_steps": at_least(0, integer=True),
                "weight_decay": at_least(0),
                "clip_grad": at_least(0).or_null("0 or null: no clipping"),
                "margin": at_least(0),
                "margin_warmup_steps": at_least(0, integer=True),
                "scale": above(0),
                "subcenters": at_least(1, integer=True),
                "crop_seconds": above(0),
                "dino_anchor_weight": at_least(0),
                "anchor_batch_size": at_least(0, integer=True),
            },
        )


#: `data` settings that shape DINO's multi-crop batches and mean nothing here, with what takes their place.
_NOT_FOR_PSEUDO_LABELS = {
    "batch_size": "supervised.batch_size and embed_batch_size are the batch sizes",
    "streaming": "every round embeds the whole pool, which needs a map-style dataset",
    "crops.n_global": "the AAM-softmax training cuts one crop of supervised.crop_seconds per utterance",
    "crops.global_seconds": "the crop length is supervised.crop_seconds",
    "crops.n_local": "the AAM-softmax training has no local crops",
    "crops.local_seconds": "the AAM-softmax training has no local crops",
    "crops.speed": "speed perturbation makes new voices for DINO, and a cluster's utterances keep its label here",
    "augment_on": "the AAM-softmax training augments in the DataLoader workers",
}


def check_data_section(data: DataConfig) -> None:
    """Refuse `data` settings that pseudo-labelling would otherwise ignore (see `PseudoLabelConfig`)."""
    default = DataConfig()

    def value(config: DataConfig, name: str) -> Any:
        section, _, leaf = name.rpartition(".")
        return getattr(getattr(config, section) if section else config, leaf)

    offending = [name for name in _NOT_FOR_PSEUDO_LABELS if value(data, name) != value(default, name)]
    if offending:
        raise ValueError(
            "pseudo-labelling does not use "
            + "; ".join(f"data.{name}={value(data, name)!r} ({_NOT_FOR_PSEUDO_LABELS[name]})" for name in offending)
            + ": remove the setting from the recipe"
        )


@dataclass
class PseudoLabelConfig:
    """Everything `train.py pseudo-label` needs; `configs/pseudo_label_*.yaml` are instances of this.

    `data` is the section DINO recipes have, and means the same here: the pool (`corpus`, `train`; a `speaker`
    column, if present, is used only to score the clusters), `num_workers`, `augmentation` and `augment`, and the
    crops' policies `crops.min_duration` (shorter utterances are left out of the pool: not embedded, clustered
    or trained on), `crops.on_error`, `crops.vad`, `crops.vad_threshold_db` and `crops.drop_silent`. The rest
    shapes DINO's multi-crop batches: `batch_size`, `streaming` and the crop counts and lengths must keep their
    defaults (an error names the setting that takes their place).
    """

    init: str = ""
    """The DINO export to start from (`<dino output_dir>/final`)."""
    output_dir: str = "runs/pseudo_label"
    rounds: int = 2
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    embed_batch_size: int = 32
    clustering: ClusteringConfig = field(default_factory=ClusteringConfig)
    supervised: SupervisedConfig = field(default_factory=SupervisedConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    """Each round's `final/` model, e.g. with an embedding whitening estimated on the pool."""
    restart_from_dino: bool = False
    """Train every round from the DINO export (`init`), on the clusters of the previous round's model, instead of
    from the previous round's network: the labels improve from round to round, and no round inherits the
    previous one's drift towards the voices its clusters held most of."""
    dino_weight: float = 0.0
    """Share of the DINO export's weights (`init`) in each round's exported network: after its AAM-softmax
    training a round's network becomes `(1 - dino_weight) * trained + dino_weight * DINO` (parameters and
    BatchNorm statistics), before its whitening is fitted, and the next round starts from that. A weight-space
    ensemble of the starting and the fine-tuned network (WiSE-FT, Wortsman et al. 2022): the clusters teach
    the voices the pool has many of, and the DINO weights keep what self-distillation learned about the rest.
    0: the trained network as it is (the paper's recipe)."""
    within_class_whitening: Optional[float] = None
    """Shrinkage, in [0, 1], of a within-class whitening (WCCN, `training.whitening.fit_within_class_whitening`)
    fitted on each round's clusters and stored in its export on top of the PCA whitening (`export.whitening`,
    which it needs): the round's network embeds the utterances its clusters hold, and cosine scoring then weighs
    down the directions along which one cluster's utterances differ. It changes what the next round clusters.
    None: the PCA whitening alone."""
    mixed_precision: str = "auto"
    num_threads: Union[int, str] = 0
    """torch intra-op threads (0: torch's default; `auto`: measured once at the start, see `training.threads`)."""
    log_every: int = 20

    def __post_init__(self) -> None:
        check_data_section(self.data)
        check_ranges(
            self,
            {
                **RUN_RULES,
                "rounds": at_least(1, integer=True),
                "embed_batch_size": at_least(1, integer=True),
                "dino_weight": between(0, 1, high_open=True),
                "within_class_whitening": between(0, 1).or_null("null: the PCA whitening alone"),
            },
        )
        if self.within_class_whitening is not None and not self.export.whitening:
            raise ValueError(
                "within_class_whitening is fitted in the PCA-whitened space: it needs export.whitening: true"
            )


def screen_pool(accelerator, pool, data: DataConfig, feature_extractor):
    """`pool` without the files that cannot be embedded whole (see the module doc), each process decoding its
    share; under `data.crops.on_error=fail` they are an error that names them."""
    from accelerate.utils import gather_object

    from ..data.corpora import report_problems, screen_audio

    paths = list(pool["path"])
    rank, world = accelerator.process_index, accelerator.num_processes
    mine = list(range(rank, len(paths), world))
    window = float(getattr(feature_extractor, "frame_length_ms", 25.0)) / 1000.0
    found = screen_audio(
        [paths[i] for i in mine],
        feature_extractor.sampling_rate,
        min_seconds=max(window, data.crops.min_duration),
        drop_silent=data.crops.drop_silent,
    )
    pieces = gather_object([(mine, found)]) if world > 1 else [(mine, found)]
    problems: Dict[int, str] = {i: why for index, whys in pieces for i, why in zip(index, whys) if why is not None}
    lines = [f"{paths[i]}: {problems[i]}" for i in sorted(problems)]
    source = f"the pseudo-labelling pool (data.crops.on_error={data.crops.on_error})"
    if data.crops.on_error == "fail" or accelerator.is_local_main_process:  # one warning, every process raises
        report_problems(lines, "raise" if data.crops.on_error == "fail" else "skip", source)
    if len(problems) == len(paths):
        raise ValueError(f"{source}: no usable file is left to embed")
    return pool.select([i for i in range(len(paths)) if i not in problems]) if problems else pool


def extract_embeddings(accelerator, model, feature_extractor, paths: List[str], batch_size: int) -> np.ndarray:
    """Embeddings `(len(paths), D)` of whole utterances, each process embedding its share."""
    from accelerate.utils import gather_object

    from ..inference import embed_files

    rank, world = accelerator.process_index, accelerator.num_processes
    mine = list(range(rank, len(paths), world))
    local = embed_files(
        model,
        feature_extractor,
        [paths[i] for i in mine],
        batch_size=batch_size,
        device=accelerator.device,
        progress=accelerator.is_local_main_process,
    )
    pieces = gather_object([(mine, local)]) if world > 1 else [(mine, local)]
    out = np.zeros((len(paths), local.shape[1]), dtype=np.float32)
    for index, values in pieces:
        out[np.asarray(index, dtype=int)] = values
    return out


def train_on_pseudo_labels(
    accelerator,
    model,
    feature_extractor,
    paths: List[str],
    labels: np.ndarray,
    cfg: PseudoLabelConfig,
    round_index: int,
    pool_paths: Optional[List[str]] = None,
) -> Dict[str, float]:
    """Train `model` (a `DinoSpeechForXVector`) on `labels` for `paths`; returns the last logged scalars.
    `pool_paths`, the whole pool, is where `supervised.dino_anchor_weight`'s extra batches come from (default:
    `paths`).

    Raises:
        StoppedBetweenSteps: after the step in progress when Ctrl-C or SIGTERM arrived (`training.interrupt`).
    """
    from tqdm.auto import tqdm

    from ..data.multicrop import build_multicrop_dataloader

    sup = cfg.supervised
    world = accelerator.num_processes
    micro_batch = max(sup.batch_size // world, 1)
    # The data section's file policies, one global crop: the pool was already cut to min_duration.
    crop = dataclasses.replace(cfg.data.crops, n_global=1, global_seconds=sup.crop_seconds, n_local=0, min_duration=0.0)
    augment = cfg.data.augment if cfg.data.augmentation else None
    labels_t = torch.as_tensor(labels, dtype=torch.long)
    total = sup.head_steps + sup.steps
    backbone = model.dino_speech
    head_params = list(model.classifier.parameters())
    optimizer = torch.optim.AdamW(
        [{"params": head_params}, {"params": list(backbone.parameters())}], lr=0.0, weight_decay=sup.weight_decay
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    lr = cosine_scheduler(sup.lr, sup.min_lr, max(sup.steps, 1), sup.warmup_steps)
    anchor = frozen_dino_export(cfg.init, accelerator.device) if sup.dino_anchor_weight > 0 else None
    if anchor is not None:
        from .dino import freeze_batchnorm_statistics

        # like DINO's teacher: batch statistics, as the network it is compared with has in training
        anchor.train()
        freeze_batchnorm_statistics(anchor)
    pool_batch = max(sup.anchor_batch_size // world, 1) if anchor is not None and sup.anchor_batch_size else 0

    def batches(chosen: List[str], batch_size: int, stream: int):
        """Endless batches of `chosen`, epoch after epoch; `stream` keeps two loaders' orders apart."""
        epoch = 0
        while True:
            yield from build_multicrop_dataloader(
                chosen,
                crop,
                augment,
                feature_extractor,
                batch_size=batch_size,
                num_workers=cfg.data.num_workers,
                seed=cfg.seed + 1000 * round_index + 500 * stream,
                epoch=epoch,
                num_replicas=world,
                rank=accelerator.process_index,
            )
            epoch += 1

    pool_batches = batches(pool_paths or paths, pool_batch, 1) if pool_batch else None

    def train_step(step: int, batch: Dict[str, Any]):
        """Optimiser step `step` (from 0); returns the model's output, the batch's labels (-1: a whole-pool
        utterance without one) and the anchor term (None without `dino_anchor_weight`)."""
        head_only = step < sup.head_steps
        # requires_grad stays on everywhere (DDP needs a fixed set of parameters); the frozen stage just
        # gives the backbone no learning rate and no statistics updates.
        backbone.train(not head_only)
        optimizer.param_groups[0]["lr"] = sup.head_lr if head_only else float(lr[step - sup.head_steps])
        optimizer.param_groups[1]["lr"] = 0.0 if head_only else float(lr[step - sup.head_steps])
        unwrapped.classifier.margin = sup.margin * min(1.0, step / max(sup.margin_warmup_steps, 1))
        feats = batch["global_features"][0]
        target = labels_t[batch["index"]]
        # the head-only steps cannot move the backbone, so they need no anchor
        anchored = anchor is not None and not head_only
        if anchored and pool_batches is not None:
            extra = next(pool_batches)["global_features"][0]
            feats = torch.cat([feats, extra])
            target = torch.cat([target, torch.full((extra.shape[0],), -1, dtype=target.dtype)])
        feats, target = feats.to(accelerator.device), target.to(accelerator.device)
        anchor_term = None
        with accelerator.autocast():
            out = model(input_features=feats, labels=target)
            loss = out.loss
            if anchored:
                with torch.no_grad():
                    reference = anchor(feats, embedding_layer="embedding").embeddings.float()
                similarity = torch.nn.functional.cosine_similarity(out.embeddings.float(), reference, dim=-1)
                anchor_term = (1.0 - similarity).mean()
                loss = loss + sup.dino_anchor_weight * anchor_term
        accelerator.backward(loss)
        if sup.clip_grad:
            accelerator.clip_grad_norm_(model.parameters(), sup.clip_grad)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return out, target, anchor_term

    def log(done: int, out, target, anchor_term) -> Dict[str, float]:
        labelled = target >= 0
        accuracy = (out.logits[labelled].argmax(-1) == target[labelled]).float().mean()
        stats = {
            "loss": float(accelerator.reduce(out.loss.detach().float(), "mean")),
            "accuracy": float(accelerator.reduce(accuracy, "mean")),
            "margin": unwrapped.classifier.margin,
            "lr": optimizer.param_groups[1]["lr"],
        }
        if anchor_term is not None:
            stats["anchor"] = float(accelerator.reduce(anchor_term.detach(), "mean"))
        progress.set_postfix(loss=f"{stats['loss']:.3f}", acc=f"{stats['accuracy']:.2f}")
        accelerator.log({f"round_{round_index}/{k}": v for k, v in stats.items()}, step=done)
        return stats

    stats: Dict[str, float] = {}
    progress = tqdm(
        total=total,
        desc=f"round {round_index}: AAM-softmax",
        disable=not accelerator.is_local_main_process,
        dynamic_ncols=True,
    )
    model.train()
    stop = GracefulStop()
    stop.install()
    try:
        for done, batch in zip(range(1, total + 1), batches(paths, micro_batch, 0)):
            out, target, anchor_term = train_step(done - 1, batch)
            progress.update(1)
            if done % cfg.log_every == 0 or done == total:
                stats = log(done, out, target, anchor_term)
            if stop.requested(accelerator):
                progress.close()
                accelerator.print(
                    f"interrupted at step {done} of round {round_index}'s AAM-softmax training: "
                    f"--resume starts round {round_index} again"
                )
                raise StoppedBetweenSteps(f"stopped after step {done} of round {round_index}")
    finally:
        stop.restore()
        progress.close()
    unwrapped.classifier.margin = sup.margin
    return stats


def frozen_dino_export(dino_export: Union[str, Path], device: torch.device):
    """The DINO export without its whitening, frozen in eval mode: what `dino_weight` averages with and what
    `supervised.dino_anchor_weight` holds the embeddings near."""
    from ..modeling_dino_speech import DinoSpeechModel

    anchor = DinoSpeechModel.from_pretrained(dino_export).to(device).eval()
    anchor.remove_whitening()
    return anchor.requires_grad_(False)


def starting_weights(cfg: PseudoLabelConfig, r: int, current: Path, embedder) -> tuple[Path, Dict[str, torch.Tensor]]:
    """The model round `r` trains from and its weights (without any whitening): `current`, the model that
    clustered the pool (loaded as `embedder`), or with `cfg.restart_from_dino` after round 1, the DINO export."""
    from ..modeling_dino_speech import DinoSpeechModel

    if r > 1 and cfg.restart_from_dino:
        start, model = Path(cfg.init), DinoSpeechModel.from_pretrained(cfg.init)
    else:
        start, model = current, embedder
    return start, {k: v for k, v in model.state_dict().items() if not k.startswith(("whitening.", "pooled_whitening."))}


@torch.no_grad()
def ensemble_with_dino(model, dino_export: Union[str, Path], dino_weight: float) -> None:
    """`model` (a `DinoSpeechModel`, unwhitened) <- `(1 - dino_weight) * model + dino_weight * DINO`, the DINO
    export's whitening left out (see `PseudoLabelConfig.dino_weight`)."""
    from .dino import ema_update

    dino = frozen_dino_export(dino_export, next(model.parameters()).device)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in dino.state_dict().items()}
    if ours != theirs:
        differ = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
        raise ValueError(
            f"dino_weight: the DINO export {dino_export} does not have this network's weights: "
            + ", ".join(f"{k} {ours.get(k, 'absent')} here, {theirs.get(k, 'absent')} there" for k in differ[:3])
        )
    ema_update(model, dino, momentum=1.0 - dino_weight)


def _round_is_done(round_dir: Path) -> bool:
    return (round_dir / "final" / "config.json").exists() and (round_dir / "report.json").exists()


def _write_clustering(round_dir: Path, paths: Sequence[str], embeddings: np.ndarray, result, report: dict) -> None:
    round_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(round_dir / "embeddings.npy") as tmp:
        np.save(tmp, embeddings)
    with atomic_path(round_dir / "pseudo_labels.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "pseudo_label"])
        writer.writerows(zip(paths, result.labels.tolist()))
    write_text_atomic(round_dir / "clustering_report.json", json.dumps(report, indent=1, default=float))


def run_round(
    accelerator,
    cfg: PseudoLabelConfig,
    r: int,
    current: Path,
    paths: List[str],
    true_speakers: Optional[List[str]],
    feature_extractor,
    evaluator: Optional[Evaluator],
    sources: Optional[List[str]] = None,
) -> dict:
    """Round `r` from the model in `current`: embed, cluster, train on the clusters, save; returns its report."""
    from ..modeling_dino_speech import DinoSpeechForXVector, DinoSpeechModel
    from .clustering import cluster_embeddings, clustering_report
    from .export import write_model_card

    round_dir = Path(cfg.output_dir) / f"round_{r}"
    started = time.perf_counter()
    embedder = DinoSpeechModel.from_pretrained(current).to(accelerator.device).eval()
    trains = cfg.supervised.head_steps + cfg.supervised.steps > 0
    # A round that trains nothing exports the network it clusters with: one pass over the pool, without the
    # whitening, serves the clustering (whitened here) and both whitenings of its export.
    # The rounds cluster the embedding layer (what AAM-softmax trains), whitened as `current` stores it, whichever
    # layer the model gives as its embeddings (`config.embedding_layer`).
    unwhitened: Optional[np.ndarray] = None
    if trains:
        embedder.config.embedding_layer = "embedding"
        embeddings = extract_embeddings(accelerator, embedder, feature_extractor, paths, cfg.embed_batch_size)
    else:
        from .whitening import apply_whitening, whitening_removed

        with whitening_removed(embedder) as stored:
            unwhitened = extract_embeddings(accelerator, embedder, feature_extractor, paths, cfg.embed_batch_size)
        layer = embedder.layer_outputs(torch.as_tensor(unwhitened))["embedding"].cpu().numpy()
        embeddings = layer if "embedding" not in stored else apply_whitening(stored["embedding"], layer)
    result = cluster_embeddings(embeddings, cfg.clustering)
    # A pool of real and synthetic voices: how the clusters fare on the real part is the number that matters.
    subsets = {s: np.asarray(sources) == s for s in sorted(set(sources))} if sources and true_speakers else None
    report = clustering_report(result, true_speakers, subsets)
    kept = np.flatnonzero(result.labels >= 0)
    if result.n_clusters < 2:
        raise RuntimeError(
            f"round {r}: clustering found {result.n_clusters} cluster(s) in {len(paths)} "
            "utterances; lower clustering.similarity_threshold (or raise clustering.kept_fraction) or min_cluster_size"
        )
    accelerator.print(
        f"round {r}: {result.n_clusters} clusters, kept {report['kept_fraction']:.1%} of "
        f"{len(paths)} utterances"
        + (f", purity {report['purity']:.3f}, NMI {report['nmi']:.3f}" if "purity" in report else "")
    )
    if accelerator.is_main_process:
        _write_clustering(round_dir, paths, embeddings, result, report)

    config = DinoSpeechConfig.from_pretrained(current)
    config.architectures = None
    # Trained on the raw embeddings; a whitening is estimated again for the round's export (cfg.export).
    config.embedding_whitening = config.pooled_whitening = False
    if trains:
        config.num_labels = int(result.n_clusters)
        config.aam_margin, config.aam_scale = cfg.supervised.margin, cfg.supervised.scale
        config.aam_subcenters = cfg.supervised.subcenters
        model = DinoSpeechForXVector(config)
        network = model.dino_speech
    else:  # nothing trains a classifier: the round exports the embedding model alone
        model = network = DinoSpeechModel(config)
    start, weights = starting_weights(cfg, r, current, embedder)
    network.load_state_dict(weights)
    del embedder
    stats: Dict[str, float] = {}
    if trains:
        stats = train_on_pseudo_labels(
            accelerator, model, feature_extractor, [paths[i] for i in kept], result.labels[kept], cfg, r, paths
        )
    model = accelerator.unwrap_model(model).eval()
    # A round that trains nothing keeps the network it starts from, the DINO export's: nothing to average.
    if trains and cfg.dino_weight > 0:
        ensemble_with_dino(network, cfg.init, cfg.dino_weight)
    round_report = {
        "round": r,
        "clusters": int(result.n_clusters),
        "kept_fraction": report["kept_fraction"],
        "similarity_threshold": result.stages.get("similarity_threshold"),
        "mixed_precision": accelerator.mixed_precision,
        **{k: report[k] for k in ("purity", "inverse_purity", "nmi", "ari") if k in report},
        **{
            f"{name}_{k}": part[k]
            for name, part in report.get("subsets", {}).items()
            for k in ("kept_fraction", "purity", "nmi", "n_true_classes", "n_true_classes_kept")
        },
        "train_loss": stats.get("loss"),
        "train_accuracy": stats.get("accuracy"),
        **({"train_anchor": stats["anchor"]} if "anchor" in stats else {}),
        "dino_weight": cfg.dino_weight,
    }
    if cfg.export.whitening and accelerator.is_main_process:
        from .whitening import whiten_on_pool

        round_report.update(
            whiten_on_pool(
                network,
                feature_extractor,
                paths,
                None,
                cfg.export.whitening_utterances,
                seed=cfg.seed + r,
                embeddings=unwhitened,
                eigenvalue_floor=cfg.export.whitening_floor,
                power=cfg.export.whitening_power,
            )
        )
        if cfg.within_class_whitening is not None:
            from .whitening import whiten_within_classes

            round_report.update(
                whiten_within_classes(
                    network,
                    feature_extractor,
                    [paths[i] for i in kept],
                    result.labels[kept],
                    cfg.within_class_whitening,
                    cfg.embed_batch_size,
                    embeddings=None if unwhitened is None else unwhitened[kept],
                )
            )
    round_report["seconds"] = round(time.perf_counter() - started, 1)
    if evaluator is not None and accelerator.is_main_process:
        from ..calibration import set_calibration

        metrics = evaluator(network, feature_extractor)
        round_report.update({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        set_calibration(model.config, metrics)  # saved with the round's model: its threshold, in the card too
    if accelerator.is_main_process:

        def fill(folder: Path) -> None:
            model.save_pretrained(folder)
            feature_extractor.save_pretrained(folder)
            write_model_card(
                folder,
                f"DINO + pseudo-label round {r} speech embeddings",
                {
                    "method": "DINO then iterative pseudo-labelling ("
                    + ("AAM-softmax" if trains else "no training")
                    + (", within-class whitening on the clusters" if cfg.within_class_whitening is not None else "")
                    + ")",
                    "round": r,
                    "initialised_from": str(start),
                    "clustered_with": str(current),
                    **round_report,
                },
            )

        write_folder_atomically(round_dir / "final", fill)
        # last: with final/ it marks the round as done
        write_text_atomic(round_dir / "report.json", json.dumps(round_report, indent=1, default=float))
    accelerator.wait_for_everyone()
    accelerator.print(f"round {r}: " + json.dumps(round_report, default=float))
    return round_report


def run_pseudo_labelling(
    cfg: PseudoLabelConfig, resume: bool = False, evaluator: Optional[Evaluator] = None
) -> List[dict]:
    """Run all rounds; returns each round's report. With `resume`, rounds whose `final/` exists are reused.

    Args:
        evaluator: scores each round's model (see `training.setup.Evaluator`); its scalars join the round's report.
    """
    from ..data.multicrop import filter_min_duration
    from ..feature_extraction_dino_speech import DinoSpeechFeatureExtractor

    check_recipe(cfg)
    if not cfg.init:
        raise ValueError("pseudo-labelling starts from a DINO export: set init (or pass --init DIR)")
    accelerator, lock = open_run(cfg)
    try:
        begin_run(accelerator, cfg, "pseudo_label", continued=resume)
        feature_extractor = DinoSpeechFeatureExtractor.from_pretrained(cfg.init)
        pool = filter_min_duration(build_training_dataset(cfg.data), cfg.data.crops.min_duration)
        pool = screen_pool(accelerator, pool, cfg.data, feature_extractor)
        paths = list(pool["path"])
        true_speakers = list(pool["speaker"]) if "speaker" in pool.column_names else None
        sources = list(pool["source"]) if "source" in pool.column_names else None
        current = Path(cfg.init)
        reports = []
        for r in range(1, cfg.rounds + 1):
            round_dir = Path(cfg.output_dir) / f"round_{r}"
            if resume and _round_is_done(round_dir):
                accelerator.print(f"round {r}: reusing {round_dir / 'final'}")
                reports.append(json.loads((round_dir / "report.json").read_text()))
            else:
                reports.append(
                    run_round(accelerator, cfg, r, current, paths, true_speakers, feature_extractor, evaluator, sources)
                )
            current = round_dir / "final"
        accelerator.end_training()
        return reports
    finally:
        lock.release()
