"""Multi-crop views of utterances for DINO: global crops (teacher and student) and local crops (student).

For every utterance, ``n_global`` crops of ``global_seconds`` and ``n_local`` crops of ``local_seconds``
are cut at independent random offsets (reading only those samples from disk when no VAD is used),
augmented per crop, and turned into fbank features in the collate step, batched. Everything runs at the rate
of the model's feature extractor (``feature_extractor.sampling_rate``): files at other rates are resampled as
they are read.

Determinism, which exact training resume relies on: the crops and augmentation of item ``i`` in epoch ``e``
are a pure function of ``(seed, e, i)`` -- a ``np.random.Generator`` seeded from exactly that triple --
never of the worker count, the worker that happens to load the item, or the order of calls. The batch order
is a seeded per-epoch permutation (:class:`MultiCropBatchSampler`), which can start at any batch and is
sharded over ``num_replicas`` processes.

The way in is :func:`build_multicrop_dataloader`: map-style with the sampler above, or streaming when given a
``datasets.IterableDataset`` (:class:`MultiCropIterableDataset` over ``ds.to_iterable_dataset(num_shards)`` +
``split_dataset_by_node``, see :func:`streaming_source`) for corpora that should be streamed shard by shard.

With a :class:`.device_augment.DeviceAugmenter` (``data.augment_on: device``) the loader only decodes and crops:
crops travel as int16 with their augmentation *plans* (:class:`MultiCropRawCollator`), drawn from the same
per-item generator, and the training device augments and featurises them.

A streaming epoch can be resumed mid-way: items carry the DataLoader worker that made them, the consumer counts
the rows each worker has delivered (:func:`count_stream_rows`), and a resumed loader replays each worker's
stream, turning its first rows into cheap placeholders that are dropped (``skip_rows``): the order that
follows is exactly the uninterrupted one.

Damaged files never crash an epoch with ``on_error="skip"``: the item is dropped from its batch, the path and
the problem are logged once, and the batch reports how many were dropped (``num_skipped``).
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, get_worker_info

from ..resampling import resample
from ..utils.checks import SettingError, above, at_least, check_ranges, one_of
from .audio import AudioError, is_silent, load_audio, load_segments
from .augment import AugmentConfig, Augmenter
from .vad import EnergyVADConfig, apply_energy_vad

__all__ = [
    "MultiCropBatchSampler",
    "MultiCropCollator",
    "MultiCropConfig",
    "MultiCropDataset",
    "MultiCropIterableDataset",
    "MultiCropRawCollator",
    "MultiCropper",
    "build_multicrop_dataloader",
    "count_stream_rows",
    "filter_min_duration",
    "item_rng",
    "streaming_source",
]

logger = logging.getLogger(__name__)

# First entropy word of each random stream, so item streams and the shuffling stream can never coincide.
_CROP_STREAM = 0x6372
_ORDER_STREAM = 0x6F72


@dataclass
class MultiCropConfig:
    """How each utterance is cut into views (defaults: the paper's 2 x 4 s + 4 x 2 s)."""

    n_global: int = 2
    global_seconds: float = 4.0
    n_local: int = 4
    local_seconds: float = 2.0
    min_duration: float = 0.0
    """Utterances shorter than this (per the dataset's ``duration`` column) are left out of the pool; the
    paper drops those under 4 s. Shorter ones that remain are padded by repetition and counted."""
    vad: bool = False
    """Drop silent frames (energy VAD) before cropping. This reads whole files instead of just the crops."""
    vad_threshold_db: float = -35.0
    drop_silent: bool = True
    """Drop items whose crops are all digital silence / below -60 dBFS (counted in ``num_skipped``)."""
    on_error: str = "skip"
    """``"skip"``: drop an unreadable item, log it once, count it; ``"fail"``: raise its AudioError."""
    speed: tuple[float, float] = (1.0, 1.0)
    """Speed perturbation of the whole utterance before it is cut: a factor drawn uniformly from this range
    (above 1 faster), the same for all of its views. Pitch and formants move with it, as in Kaldi's speed
    perturbation, so a small pool is heard in voices it does not hold; ``(1, 1)`` leaves the audio as it is."""

    def __post_init__(self) -> None:
        speed = tuple(float(v) for v in self.speed)
        if len(speed) != 2 or not 0 < speed[0] <= speed[1] < float("inf"):
            raise SettingError("speed", self.speed, "a [low, high] pair of factors with 0 < low <= high")
        self.speed = speed
        check_ranges(
            self,
            {
                "n_global": at_least(1, integer=True),
                "global_seconds": above(0),
                "n_local": at_least(0, integer=True),
                **({"local_seconds": above(0)} if self.n_local else {}),
                "min_duration": at_least(0),
                "vad_threshold_db": at_least(-200),
                "on_error": one_of("skip", "fail"),
            },
        )

    def global_samples(self, sampling_rate: int) -> int:
        return int(round(self.global_seconds * sampling_rate))

    def local_samples(self, sampling_rate: int) -> int:
        return int(round(self.local_seconds * sampling_rate))


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator that decides everything random about item ``index`` in ``epoch``."""
    return np.random.default_rng([_CROP_STREAM, int(seed), int(epoch), int(index)])


def _cut(waveform: np.ndarray, length: int, draw: float) -> np.ndarray:
    """A ``length`` crop at relative offset ``draw`` in [0, 1); shorter input is repeated to fill it."""
    total = len(waveform)
    if total >= length:
        offset = int(draw * (total - length + 1))
        return waveform[offset : offset + length]
    # Periodic extension from a random phase, so repeated padding does not always start the same way.
    return waveform[(int(draw * total) + np.arange(length)) % total]


class MultiCropper:
    """Cuts (and augments) the views of one utterance.

    Args:
        config: crop settings.
        augmenter: per-crop augmentation at the same rate, or None for clean crops.
        sampling_rate: the rate of the crops (the model's feature extractor's).
        raw: leave the augmentation to the training device: crops come out as int16, and with an ``augmenter``
            (then an :class:`.device_augment.AugmentPlanner`) with their plans, drawn from the same generator.
    """

    def __init__(
        self,
        config: MultiCropConfig | None = None,
        augmenter: Augmenter | None = None,
        *,
        sampling_rate: int,
        raw: bool = False,
    ):
        if augmenter is not None and augmenter.sampling_rate != sampling_rate:
            raise ValueError(
                f"the augmenter works at {augmenter.sampling_rate} Hz but the crops are cut at {sampling_rate} Hz"
            )
        if raw and augmenter is not None and not hasattr(augmenter, "plan"):
            raise TypeError("raw crops need an AugmentPlanner (data.device_augment), not an Augmenter")
        self.config = config or MultiCropConfig()
        self.augmenter = augmenter
        self.sampling_rate = int(sampling_rate)
        self.raw = raw
        self._vad = EnergyVADConfig(threshold_db=self.config.vad_threshold_db) if self.config.vad else None
        self._reported: set[str] = set()  # per process: each bad path is logged once

    def _lengths(self) -> list[int]:
        cfg, sr = self.config, self.sampling_rate
        return [cfg.global_samples(sr)] * cfg.n_global + [cfg.local_samples(sr)] * cfg.n_local

    def _read(self, path: str, draws: np.ndarray, speed: float = 1.0) -> tuple[list[np.ndarray], bool]:
        """Crops in ``_lengths()`` order at ``speed`` (see ``MultiCropConfig.speed``), and whether the utterance
        was shorter than the longest crop."""
        if speed == 1.0:
            return self._read_lengths(path, draws, self._lengths())
        sr = self.sampling_rate
        # Read enough samples that each crop fills its length once sped up, then resample as if the audio had
        # been recorded at sr * speed.
        lengths = self._lengths()
        native = [int(np.ceil(n * speed)) + 1 for n in lengths]
        crops, short = self._read_lengths(path, draws, native)
        rate = int(round(sr * speed))
        return [_cut(resample(c, rate, sr), n, 0.0) for c, n in zip(crops, lengths)], short

    def _read_lengths(self, path: str, draws: np.ndarray, lengths: list[int]) -> tuple[list[np.ndarray], bool]:
        sr = self.sampling_rate
        if self._vad is not None:
            wav = apply_energy_vad(load_audio(path, sr), sr, self._vad)
            return [_cut(wav, n, u) for n, u in zip(lengths, draws)], len(wav) < max(lengths)

        plan: dict[str, Any] = {}

        def segments(total: int, native_sr: int):
            total_out = total * sr // native_sr
            native = [-(-n * native_sr // sr) + 1 for n in lengths]
            plan["short"] = total_out < max(lengths)
            # One whole read beats several partial ones once the crops cover most of the file.
            plan["whole"] = plan["short"] or sum(native) >= total
            if plan["whole"]:
                return [(None, None)]
            starts = [int(u * (total_out - n + 1)) * native_sr // sr for n, u in zip(lengths, draws)]
            return [(s, min(f, total - s)) for s, f in zip(starts, native)]

        pieces = load_segments(path, segments, sr)
        if plan["whole"]:
            return [_cut(pieces[0], n, u) for n, u in zip(lengths, draws)], plan["short"]
        # A partial read resampled from another rate can come out a sample short: repeat to fill.
        return [p[:n] if len(p) >= n else _cut(p, n, 0.0) for p, n in zip(pieces, lengths)], False

    def __call__(self, path: str, index: int, seed: int = 0, epoch: int = 0) -> dict[str, Any]:
        """The views of item ``index``.

        Returns:
            dict with ``index`` (int), ``skipped`` (bool), ``short`` (bool), ``error`` (str or None),
            ``global_crops`` ``(n_global, global_samples)`` and ``local_crops`` ``(n_local, local_samples)``
            float32 arrays (None when skipped).
        """
        cfg = self.config
        rng = item_rng(seed, epoch, index)
        draws = rng.random(cfg.n_global + cfg.n_local)
        # Drawn only when on, so that recipes without it keep their random streams.
        speed = float(rng.uniform(*cfg.speed)) if cfg.speed != (1.0, 1.0) else 1.0
        try:
            crops, short = self._read(path, draws, speed)
        except AudioError as err:
            if cfg.on_error == "fail":
                raise
            return self._skip(index, path, err.problem)
        if cfg.drop_silent and all(is_silent(c) for c in crops):
            return self._skip(index, path, "silent (every crop below -60 dBFS)")
        views = np.stack(crops[: cfg.n_global])
        local = (
            np.stack(crops[cfg.n_global :])
            if cfg.n_local
            else np.zeros((0, cfg.local_samples(self.sampling_rate)), np.float32)
        )
        if self.raw:
            from .device_augment import to_int16

            plans = (None, None)
            if self.augmenter is not None:
                plans = (self.augmenter.plan(*views.shape, rng), self.augmenter.plan(*local.shape, rng))
            return {
                "index": int(index),
                "skipped": False,
                "short": bool(short),
                "error": None,
                "global_crops": to_int16(views),
                "local_crops": to_int16(local),
                "global_plan": plans[0],
                "local_plan": plans[1],
            }
        if self.augmenter is not None:
            views = self.augmenter.augment(views, rng)
            if cfg.n_local:
                local = self.augmenter.augment(local, rng)
        return {
            "index": int(index),
            "skipped": False,
            "short": bool(short),
            "error": None,
            "global_crops": views,
            "local_crops": local,
        }

    def _skip(self, index: int, path: str, problem: str) -> dict[str, Any]:
        if path not in self._reported:
            self._reported.add(path)
            logger.warning("multi-crop: skipping %s: %s", path, problem)
        return {
            "index": int(index),
            "skipped": True,
            "short": False,
            "error": f"{path}: {problem}",
            "global_crops": None,
            "local_crops": None,
        }


# --------------------------------------------------------------------------------------------- datasets


def _paths(source: Any) -> list[str]:
    if hasattr(source, "column_names"):
        if "path" not in source.column_names:
            raise ValueError(f"dataset has no 'path' column (columns: {source.column_names})")
        return list(source["path"])
    return [str(p) for p in source]


def filter_min_duration(dataset: Any, min_duration: float) -> Any:
    """Keep rows whose ``duration`` column is >= ``min_duration`` s (a no-op without the column or at 0)."""
    if min_duration <= 0 or not hasattr(dataset, "column_names") or "duration" not in dataset.column_names:
        return dataset
    durations = np.asarray(dataset["duration"], dtype=np.float64)
    keep = np.flatnonzero(durations >= min_duration)
    if len(keep) == 0:
        raise ValueError(
            f"no utterance is at least min_duration={min_duration} s long (longest: {durations.max():.2f} s)"
        )
    return dataset.select(keep) if len(keep) < len(durations) else dataset


class MultiCropDataset(Dataset):
    """Map-style dataset of multi-crop items; item ``i`` is ``cropper(path_i, i, seed, epoch)``.

    Args:
        source: a ``datasets.Dataset`` with a ``path`` column, or a sequence of paths.
        cropper: the :class:`MultiCropper`.
        seed, epoch: see :func:`item_rng`.
    """

    def __init__(self, source: Any, cropper: MultiCropper, seed: int = 0, epoch: int = 0):
        self.paths = _paths(source)
        self.cropper = cropper
        self.seed = int(seed)
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.cropper(self.paths[index], int(index), self.seed, self.epoch)


class MultiCropIterableDataset(IterableDataset):
    """Streams multi-crop items from an iterable source of rows with ``path`` and ``index``.

    The source is typically :func:`streaming_source` (a sharded ``datasets.IterableDataset``, split across
    processes with ``split_dataset_by_node``; ``datasets`` splits its shards across DataLoader workers).
    Crops depend only on ``(seed, epoch, index)``; the streaming order, by nature, depends on the sharding.

    Every item carries ``stream_worker``, the DataLoader worker that made it (0 without workers). With
    ``skip_rows`` (rows each worker had delivered, see :func:`count_stream_rows`), worker ``w`` replays its
    stream and yields its first ``skip_rows[w]`` rows as placeholders (``placeholder`` True, nothing read).
    """

    def __init__(
        self,
        source: Any,
        cropper: MultiCropper,
        seed: int = 0,
        epoch: int = 0,
        skip_rows: Sequence[int] | None = None,
    ):
        self.source = source
        self.cropper = cropper
        self.seed = int(seed)
        self.epoch = int(epoch)
        self.skip_rows = list(skip_rows or [])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.source, "set_epoch"):
            self.source.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        skip = self.skip_rows[worker] if worker < len(self.skip_rows) else 0
        for n, row in enumerate(self.source):
            if n < skip:
                yield {"index": int(row["index"]), "placeholder": True, "stream_worker": worker}
                continue
            item = self.cropper(row["path"], int(row["index"]), self.seed, self.epoch)
            item["stream_worker"] = worker
            yield item


def streaming_source(
    dataset: Any,
    num_shards: int = 8,
    num_replicas: int = 1,
    rank: int = 0,
    shuffle_buffer: int | None = 1000,
    seed: int = 0,
) -> Any:
    """A ``datasets.Dataset`` -> sharded, optionally shuffled ``datasets.IterableDataset`` of ``path, index``
    rows for process ``rank`` of ``num_replicas``. Use ``num_shards`` >= processes x workers."""
    from datasets.distributed import split_dataset_by_node

    if "index" not in dataset.column_names:
        dataset = dataset.add_column("index", list(range(len(dataset))))
    stream = dataset.select_columns(["path", "index"]).to_iterable_dataset(num_shards=num_shards)
    if shuffle_buffer:
        stream = stream.shuffle(seed=seed, buffer_size=shuffle_buffer)
    return split_dataset_by_node(stream, rank=rank, world_size=num_replicas)


# --------------------------------------------------------------------------------------------- sampling


class MultiCropBatchSampler(Sampler[list[int]]):
    """Seeded per-epoch shuffling in batches, resumable at a batch, sharded across processes.

    Epoch ``e`` uses the permutation seeded by ``(seed, e)``. Global batch ``b`` is positions
    ``[b * B * R, (b + 1) * B * R)`` of it (``B`` = ``batch_size`` per process, ``R`` = ``num_replicas``);
    process ``rank`` takes its ``B``-slice. Starting at ``start_batch`` yields exactly the batches a full epoch
    would have yielded from that point. Without ``drop_last`` the permutation wraps around so every process
    gets the same number of full batches.
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        seed: int = 0,
        epoch: int = 0,
        start_batch: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = True,
        shuffle: bool = True,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas={num_replicas}), got {rank}")
        self.num_items = int(num_items)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.drop_last = drop_last
        self.shuffle = shuffle
        global_batch = self.batch_size * self.num_replicas
        self.num_batches = self.num_items // global_batch if drop_last else -(-self.num_items // global_batch)
        if self.num_batches == 0:
            raise ValueError(
                f"{self.num_items} items cannot fill one batch of {self.batch_size} x {self.num_replicas} "
                "process(es) with drop_last=True"
            )
        self.set_epoch(epoch, start_batch)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        if not 0 <= start_batch <= self.num_batches:
            raise ValueError(f"start_batch must be in [0, {self.num_batches}], got {start_batch}")
        self.epoch = int(epoch)
        self.start_batch = int(start_batch)

    def order(self) -> np.ndarray:
        """The epoch's item order (before batching)."""
        if not self.shuffle:
            return np.arange(self.num_items)
        return np.random.default_rng([_ORDER_STREAM, self.seed, self.epoch]).permutation(self.num_items)

    def __iter__(self) -> Iterator[list[int]]:
        global_batch = self.batch_size * self.num_replicas
        order = np.resize(self.order(), self.num_batches * global_batch)
        first = self.rank * self.batch_size
        for b in range(self.start_batch, self.num_batches):
            yield order[b * global_batch + first : b * global_batch + first + self.batch_size].tolist()

    def __len__(self) -> int:
        return self.num_batches - self.start_batch


# --------------------------------------------------------------------------------------------- collate


class MultiCropCollator:
    """Batches multi-crop items and computes their fbank features in one call per crop size.

    Args:
        config: the crop settings (to shape empty batches).
        feature_extractor: anything with ``sampling_rate``, ``feature_size``, ``num_frames(samples)`` and
            ``compute_features(waveforms (B, N), lengths) -> (features, mask)`` (the package's
            ``DinoSpeechFeatureExtractor``); the crops must have been cut at its rate.

    Returns (from ``__call__``), with ``B`` the items that were not skipped:
        ``global_features`` ``(n_global, B, T_g, F)`` and ``local_features`` ``(n_local, B, T_l, F)`` float32,
        ``index`` ``(B,)`` int64, ``num_short`` and ``num_skipped`` (int), ``errors`` (list of str).
    """

    def __init__(self, config: MultiCropConfig, feature_extractor: Any):
        self.config = config
        self.feature_extractor = feature_extractor

    def _features(self, crops: list[np.ndarray], count: int, samples: int) -> torch.Tensor:
        fe, batch = self.feature_extractor, len(crops)
        if count * batch == 0:
            return torch.zeros(count, batch, int(fe.num_frames(samples)), int(fe.feature_size))
        stacked = np.stack(crops)
        if stacked.shape[-1] != samples:
            raise ValueError(
                f"crops of {stacked.shape[-1]} samples where the feature extractor's {fe.sampling_rate} Hz gives "
                f"{samples}: the crops were cut at another rate than the model's"
            )
        waves = torch.from_numpy(stacked).transpose(0, 1).reshape(count * batch, samples)
        features, _ = fe.compute_features(waves)
        return features.reshape(count, batch, features.shape[1], features.shape[2]).float()

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if items and items[0].get("placeholder"):
            return _placeholder_batch(items)
        cfg, rate = self.config, self.feature_extractor.sampling_rate
        kept = [item for item in items if not item["skipped"]]
        return {
            "global_features": self._features(
                [i["global_crops"] for i in kept], cfg.n_global, cfg.global_samples(rate)
            ),
            "local_features": self._features([i["local_crops"] for i in kept], cfg.n_local, cfg.local_samples(rate)),
            **_batch_facts(items, kept),
        }


def _batch_facts(items: Sequence[dict[str, Any]], kept: Sequence[dict[str, Any]]) -> dict[str, Any]:
    facts = {
        "index": torch.tensor([i["index"] for i in kept], dtype=torch.long),
        "num_short": sum(1 for i in kept if i["short"]),
        "num_skipped": len(items) - len(kept),
        "errors": [i["error"] for i in items if i["skipped"]],
    }
    if items and "stream_worker" in items[0]:
        facts["stream_worker"] = int(items[0]["stream_worker"])  # a DataLoader batch comes from one worker
    return facts


def _placeholder_batch(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    if not all(i.get("placeholder") for i in items):
        raise RuntimeError("streaming resume: a batch mixes replayed and new rows (worker counts changed?)")
    return {"placeholder": True, "stream_worker": int(items[0]["stream_worker"]), "num_rows": len(items)}


def count_stream_rows(rows: list[int], batch: dict[str, Any]) -> list[int]:
    """Add a consumed streaming batch to the rows each worker has delivered (``rows``, updated and returned);
    a no-op for map-style batches."""
    worker = batch.get("stream_worker")
    if worker is None:
        return rows
    rows.extend([0] * (worker + 1 - len(rows)))
    rows[worker] += len(batch["index"]) + int(batch["num_skipped"])
    return rows


class MultiCropRawCollator:
    """Batches raw multi-crop items (``MultiCropper(raw=True)``) for a :class:`.device_augment.DeviceAugmenter`.

    Returns (from ``__call__``), with ``B`` the items that were not skipped: ``global_crops``
    ``(n_global, B, global_samples)`` and ``local_crops`` ``(n_local, B, local_samples)`` int16, their plans
    ``global_plan`` / ``local_plan`` (dicts of tensors, one row per crop in the same view-major order; None
    without augmentation), and ``index``, ``num_short``, ``num_skipped``, ``errors`` as :class:`MultiCropCollator`.
    """

    def __init__(self, config: MultiCropConfig, sampling_rate: int):
        self.config = config
        self.sampling_rate = int(sampling_rate)

    def _stack(self, crops: list[np.ndarray], count: int, samples: int) -> torch.Tensor:
        if count * len(crops) == 0:
            return torch.zeros(count, len(crops), samples, dtype=torch.int16)
        stacked = np.stack(crops)
        if stacked.shape[-1] != samples:
            raise ValueError(
                f"crops of {stacked.shape[-1]} samples where {self.sampling_rate} Hz gives {samples}: the crops "
                "were cut at another rate than the model's"
            )
        return torch.from_numpy(np.ascontiguousarray(stacked.transpose(1, 0, 2)))

    @staticmethod
    def _plans(kept: Sequence[dict[str, Any]], key: str, count: int) -> dict[str, torch.Tensor] | None:
        from .device_augment import collate_plans

        if not kept or kept[0][key] is None or count == 0:
            return None
        return collate_plans([i[key] for i in kept], count)

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if items and items[0].get("placeholder"):
            return _placeholder_batch(items)
        cfg, rate = self.config, self.sampling_rate
        kept = [item for item in items if not item["skipped"]]
        return {
            "global_crops": self._stack([i["global_crops"] for i in kept], cfg.n_global, cfg.global_samples(rate)),
            "local_crops": self._stack([i["local_crops"] for i in kept], cfg.n_local, cfg.local_samples(rate)),
            "global_plan": self._plans(kept, "global_plan", cfg.n_global),
            "local_plan": self._plans(kept, "local_plan", cfg.n_local),
            **_batch_facts(items, kept),
        }


# --------------------------------------------------------------------------------------------- loader


def _ignore_interrupts(worker_id: int) -> None:
    # Ctrl-C reaches the whole process group: the training loop decides when to stop (after a whole step, see
    # training.interrupt.GracefulStop), and needs its workers alive until then. Orphaned workers still exit: the
    # DataLoader's watchdog ends them when the main process is gone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _is_streaming(dataset: Any) -> bool:
    try:
        import datasets

        if isinstance(dataset, datasets.IterableDataset):
            return True
    except ImportError:  # pragma: no cover - datasets is a dependency, but paths lists need no datasets
        pass
    return isinstance(dataset, IterableDataset)


def build_multicrop_dataloader(
    dataset: Any,
    crop_cfg: MultiCropConfig | None,
    aug_cfg: AugmentConfig | None,
    feature_extractor: Any,
    batch_size: int = 32,
    num_workers: int = 0,
    seed: int = 0,
    epoch: int = 0,
    start_batch: int = 0,
    num_replicas: int = 1,
    rank: int = 0,
    drop_last: bool = True,
    pin_memory: bool = False,
    babble_pool: Sequence[str] | None = None,
    device_augmenter: Any = None,
    skip_rows: Sequence[int] | None = None,
) -> DataLoader:
    """The training loader: multi-crop, augmented, featurised batches (see :class:`MultiCropCollator`), at the
    rate of ``feature_extractor``.

    Args:
        dataset: ``datasets.Dataset`` with ``path`` (and optionally ``duration``) columns, a sequence of
            paths, or a ``datasets.IterableDataset`` of ``path, index`` rows (streaming; e.g. from
            :func:`streaming_source`, already split per process, so ``num_replicas``/``rank`` are not applied
            again and ``start_batch`` is not supported).
        crop_cfg: views; ``None`` = paper defaults.
        aug_cfg: augmentation; ``None`` = clean crops.
        feature_extractor: the model's (see :class:`MultiCropCollator`): its ``sampling_rate`` is the rate the
            files are read, cropped and augmented at.
        batch_size: utterances per batch per process.
        seed, epoch, start_batch: what to produce (see :class:`MultiCropBatchSampler`).
        babble_pool: utterances for the babble fallback; default: the training pool itself.
        device_augmenter: a :class:`.device_augment.DeviceAugmenter` for ``aug_cfg`` (``data.augment_on:
            device``): the loader then yields raw crops and plans (:class:`MultiCropRawCollator`) that it turns
            into features on the training device; ``None``: augmented features from the loader.
        skip_rows: streaming only: rows each worker had delivered in this epoch before a resume
            (:func:`count_stream_rows`); they are replayed as placeholder batches for the caller to drop.

    Returns:
        a ``DataLoader`` (``len`` = batches left in the epoch for this process, map-style). A
        batch's ``index`` is the row position in ``dataset`` after the ``min_duration`` filter
        (``loader.dataset.paths[i]`` is its file).
    """
    crop_cfg = crop_cfg or MultiCropConfig()
    rate = int(feature_extractor.sampling_rate)
    streaming = _is_streaming(dataset)
    raw = device_augmenter is not None
    if raw and (device_augmenter.config is None) != (aug_cfg is None):
        raise ValueError("the device augmenter's augmentation settings are not the loader's (aug_cfg)")
    if skip_rows and not streaming:
        raise ValueError("skip_rows is for streaming datasets; map-style loaders resume at start_batch")
    loader_kwargs = dict(
        num_workers=num_workers,
        collate_fn=MultiCropRawCollator(crop_cfg, rate) if raw else MultiCropCollator(crop_cfg, feature_extractor),
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if num_workers else None,
        worker_init_fn=_ignore_interrupts if num_workers else None,
    )

    def make_augmenter(pool: Sequence[str] | None) -> Any:
        if raw:
            return device_augmenter.planner(pool)
        return Augmenter(aug_cfg, babble_pool=pool, sampling_rate=rate) if aug_cfg is not None else None

    if streaming:
        if start_batch:
            raise ValueError(
                "start_batch is not supported for streaming datasets (they resume with skip_rows); use a "
                "map-style datasets.Dataset"
            )
        cropper = MultiCropper(crop_cfg, make_augmenter(babble_pool), sampling_rate=rate, raw=raw)
        items = MultiCropIterableDataset(dataset, cropper, seed, epoch, skip_rows=skip_rows)
        items.set_epoch(epoch)
        return DataLoader(items, batch_size=batch_size, drop_last=drop_last, **loader_kwargs)

    dataset = filter_min_duration(dataset, crop_cfg.min_duration)
    paths = _paths(dataset)
    cropper = MultiCropper(crop_cfg, make_augmenter(babble_pool or paths), sampling_rate=rate, raw=raw)
    items = MultiCropDataset(paths, cropper, seed, epoch)
    sampler = MultiCropBatchSampler(
        len(items), batch_size, seed, epoch, start_batch, num_replicas, rank, drop_last, shuffle=True
    )
    return DataLoader(items, batch_sampler=sampler, **loader_kwargs)
