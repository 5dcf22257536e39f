import logging

import numpy as np
import pytest
import soundfile as sf
import torch

from modeling_dino_speech.data import multicrop as mc
from modeling_dino_speech.data.audio import AudioError
from modeling_dino_speech.data.augment import AugmentConfig, Augmenter
from modeling_dino_speech.data.multicrop import (
    MultiCropBatchSampler,
    MultiCropCollator,
    MultiCropConfig,
    MultiCropDataset,
    MultiCropIterableDataset,
    MultiCropper,
    build_multicrop_dataloader,
    filter_min_duration,
    streaming_source,
)
from modeling_dino_speech.data.vad import EnergyVADConfig, apply_energy_vad, energy_vad_mask
from modeling_dino_speech.training.config import from_dict

SR = 16000
# Small views keep the tests fast; the logic does not depend on the lengths.
CFG = dict(n_global=2, global_seconds=0.5, n_local=3, local_seconds=0.25)


def _ramp(n):
    """Sample k holds k / 2**20: any crop tells exactly where it was cut (float32 is exact here)."""
    return (np.arange(n, dtype=np.float64) / 2**20 - 0.4).astype(np.float32)


@pytest.fixture
def corpus(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(12):
        n = int(SR * rng.uniform(1.0, 2.0)) if i != 5 else int(0.3 * SR)  # item 5 is shorter than a global crop
        path = tmp_path / f"utt{i:02d}.wav"
        sf.write(path, (0.1 * rng.standard_normal(n)).astype(np.float32), SR, subtype="FLOAT")
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def fe():
    from modeling_dino_speech import DinoSpeechFeatureExtractor

    return DinoSpeechFeatureExtractor()


def test_config_validation():
    with pytest.raises(ValueError, match="on_error"):
        MultiCropConfig(on_error="ignore")
    with pytest.raises(ValueError, match="unknown key.*'n_crops'"):
        from_dict(MultiCropConfig, {"n_crops": 3})
    assert MultiCropConfig(global_seconds=4.0).global_samples(16000) == 64000


def test_crops_are_independent_random_segments(tmp_path):
    path = tmp_path / "ramp.wav"
    ramp = _ramp(10 * SR)
    sf.write(path, ramp, SR, subtype="FLOAT")
    item = MultiCropper(MultiCropConfig(**CFG), sampling_rate=SR)(str(path), index=3, seed=0, epoch=0)
    assert item["global_crops"].shape == (2, 8000) and item["local_crops"].shape == (3, 4000)
    offsets = []
    for crop in list(item["global_crops"]) + list(item["local_crops"]):
        start = int(round((crop[0] + 0.4) * 2**20))
        assert np.array_equal(crop, ramp[start : start + len(crop)])
        offsets.append(start)
    assert len(set(offsets)) == 5 and not item["short"]


def test_only_the_crops_are_read_from_long_files(tmp_path, monkeypatch):
    long_path, short_path = tmp_path / "long.wav", tmp_path / "short.wav"
    sf.write(long_path, _ramp(30 * SR), SR, subtype="FLOAT")
    sf.write(short_path, _ramp(int(0.8 * SR)), SR, subtype="FLOAT")
    requested = []
    real = mc.load_segments

    def spy(path, segments, *args, **kwargs):
        def plan(total, sr):
            out = segments(total, sr)
            requested.append(out)
            return out

        return real(path, plan, *args, **kwargs)

    monkeypatch.setattr(mc, "load_segments", spy)
    cropper = MultiCropper(MultiCropConfig(**CFG), sampling_rate=SR)
    cropper(str(long_path), 0)
    assert len(requested[0]) == 5 and all(start is not None and frames <= 8001 for start, frames in requested[0])
    cropper(str(short_path), 0)  # the crops cover the whole file: one read
    assert requested[1] == [(None, None)]


def test_other_sampling_rates_give_exact_lengths(tmp_path):
    for sr in (8000, 44100):
        path = tmp_path / f"x{sr}.wav"
        sf.write(path, np.random.default_rng(0).standard_normal(5 * sr).astype(np.float32) * 0.1, sr)
        item = MultiCropper(MultiCropConfig(**CFG), sampling_rate=SR)(str(path), 1)
        assert item["global_crops"].shape == (2, 8000) and item["local_crops"].shape == (3, 4000)


def test_short_utterances_padded_by_repetition_and_counted(tmp_path):
    path = tmp_path / "short.wav"
    ramp = _ramp(3000)
    sf.write(path, ramp, SR, subtype="FLOAT")
    item = MultiCropper(MultiCropConfig(**CFG), sampling_rate=SR)(str(path), 0)
    assert item["short"]
    crop = item["global_crops"][0]
    start = int(round((crop[0] + 0.4) * 2**20))
    assert np.array_equal(crop, ramp[(start + np.arange(8000)) % 3000])


def test_item_depends_only_on_seed_epoch_index(corpus):
    aug = Augmenter(AugmentConfig(), babble_pool=corpus, sampling_rate=SR)
    cropper = MultiCropper(MultiCropConfig(**CFG), aug, sampling_rate=SR)
    forward = [cropper(p, i, seed=7, epoch=2) for i, p in enumerate(corpus)]
    fresh = MultiCropper(
        MultiCropConfig(**CFG), Augmenter(AugmentConfig(), babble_pool=corpus, sampling_rate=SR), sampling_rate=SR
    )
    backward = [fresh(corpus[i], i, seed=7, epoch=2) for i in reversed(range(len(corpus)))][::-1]
    for a, b in zip(forward, backward):
        assert np.array_equal(a["global_crops"], b["global_crops"])
        assert np.array_equal(a["local_crops"], b["local_crops"])
    other_epoch = cropper(corpus[0], 0, seed=7, epoch=3)
    assert not np.array_equal(other_epoch["global_crops"], forward[0]["global_crops"])
    other_seed = cropper(corpus[0], 0, seed=8, epoch=2)
    assert not np.array_equal(other_seed["global_crops"], forward[0]["global_crops"])


def _collect(loader):
    return [{k: v for k, v in batch.items()} for batch in loader]


def test_loader_identical_across_worker_counts(corpus, fe):
    kwargs = dict(
        crop_cfg=MultiCropConfig(**CFG), aug_cfg=AugmentConfig(), feature_extractor=fe, batch_size=4, seed=3, epoch=1
    )
    zero = _collect(build_multicrop_dataloader(corpus, num_workers=0, **kwargs))
    two = _collect(build_multicrop_dataloader(corpus, num_workers=2, **kwargs))
    assert len(zero) == len(two) == 3
    for a, b in zip(zero, two):
        assert torch.equal(a["index"], b["index"])
        assert torch.equal(a["global_features"], b["global_features"])
        assert torch.equal(a["local_features"], b["local_features"])
    assert sum(b["num_short"] for b in zero) == 1


def test_resume_from_batch_gives_the_rest_of_the_epoch(corpus, fe):
    kwargs = dict(
        crop_cfg=MultiCropConfig(**CFG), aug_cfg=AugmentConfig(), feature_extractor=fe, batch_size=3, seed=3, epoch=4
    )
    full = _collect(build_multicrop_dataloader(corpus, **kwargs))
    resumed = _collect(build_multicrop_dataloader(corpus, start_batch=2, **kwargs))
    assert len(full) == 4 and len(resumed) == 2
    for a, b in zip(full[2:], resumed):
        assert torch.equal(a["index"], b["index"])
        assert torch.equal(a["global_features"], b["global_features"])
    assert full[0]["global_features"].shape == (2, 3, 48, 80)


def test_sampler_shards_and_reshuffles():
    def batches(**kw):
        return list(MultiCropBatchSampler(23, 4, seed=1, **kw))

    single = batches(num_replicas=1)
    ranks = [batches(num_replicas=2, rank=r) for r in range(2)]
    assert len(single) == 5 and len(ranks[0]) == len(ranks[1]) == 2
    seen = [i for r in ranks for b in r for i in b]
    assert len(seen) == len(set(seen)) == 16
    # Global batch b of the 2-process run = positions [8b, 8b+8) of the epoch's permutation.
    order = MultiCropBatchSampler(23, 4, seed=1, num_replicas=2).order()
    assert ranks[0][1] + ranks[1][1] == order[8:16].tolist()
    assert batches(epoch=1) != single
    assert batches() == single
    tail = batches(drop_last=False)
    assert len(tail) == 6 and all(len(b) == 4 for b in tail)
    assert sorted({i for b in tail for i in b}) == list(range(23))
    sampler = MultiCropBatchSampler(23, 4, seed=1)
    sampler.set_epoch(0, start_batch=3)
    assert list(sampler) == single[3:] and len(sampler) == 2
    with pytest.raises(ValueError, match="start_batch"):
        sampler.set_epoch(0, start_batch=9)
    with pytest.raises(ValueError, match="cannot fill one batch"):
        MultiCropBatchSampler(3, 4)


def test_bad_files_skipped_logged_once_and_counted(corpus, tmp_path, caplog, fe):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00garbage")
    nan = tmp_path / "nan.wav"
    x = np.zeros(SR, np.float32)
    x[5] = np.nan
    sf.write(nan, x, SR, subtype="FLOAT")
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(SR, np.float32), SR)
    paths = corpus[:5] + [str(broken), str(nan), str(silent)]
    with caplog.at_level(logging.WARNING, logger="modeling_dino_speech.data.multicrop"):
        loader = build_multicrop_dataloader(paths, MultiCropConfig(**CFG), None, fe, batch_size=4)
        batches = _collect(loader) + _collect(loader)  # two passes: still logged once per file
    assert sum(b["num_skipped"] for b in batches) == 6
    assert sum(len(b["index"]) for b in batches) == 10
    for b in batches:
        assert b["global_features"].shape[1] == len(b["index"])
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3
    assert any("broken.wav" in m and "unreadable" in m for m in messages)
    assert any("nan.wav" in m and "NaN" in m for m in messages)
    assert any("silent.wav" in m and "silent" in m for m in messages)
    with pytest.raises(AudioError, match="broken.wav"):
        MultiCropper(MultiCropConfig(on_error="fail", **CFG), sampling_rate=SR)(str(broken), 0)


def test_batch_of_only_bad_items_keeps_shapes(fe):
    collate = MultiCropCollator(MultiCropConfig(**CFG), fe)
    skipped = {
        "index": 0,
        "skipped": True,
        "short": False,
        "error": "x: bad",
        "global_crops": None,
        "local_crops": None,
    }
    batch = collate([skipped, dict(skipped, index=1)])
    assert batch["global_features"].shape == (2, 0, 48, 80)
    assert batch["local_features"].shape == (3, 0, 23, 80)
    assert batch["index"].shape == (0,) and batch["num_skipped"] == 2


def test_collate_with_real_feature_extractor(corpus, fe):
    cfg = MultiCropConfig(**CFG)
    items = [MultiCropper(cfg, sampling_rate=SR)(p, i) for i, p in enumerate(corpus[:3])]
    batch = MultiCropCollator(cfg, fe)(items)
    assert batch["global_features"].shape == (2, 3, 48, 80) and batch["global_features"].dtype == torch.float32
    assert batch["local_features"].shape == (3, 3, 23, 80)
    expected, _ = fe.compute_features(torch.from_numpy(items[1]["local_crops"][2][None]))
    assert torch.allclose(batch["local_features"][2, 1], expected[0], atol=1e-4)
    assert batch["index"].tolist() == [0, 1, 2] and batch["num_short"] == 0


def test_streaming_split_across_processes_and_workers(corpus, fe):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"path": corpus})
    cfg = MultiCropConfig(**CFG)
    reference = MultiCropDataset(corpus, MultiCropper(cfg, sampling_rate=SR), seed=2, epoch=0)
    collate = MultiCropCollator(cfg, fe)
    seen = []
    for rank in range(2):
        source = streaming_source(ds, num_shards=4, num_replicas=2, rank=rank, seed=2)
        loader = build_multicrop_dataloader(source, cfg, None, fe, batch_size=2, num_workers=2, seed=2, drop_last=False)
        for batch in loader:
            for j, index in enumerate(batch["index"].tolist()):
                seen.append(index)
                alone = collate([reference[index]])["global_features"][:, 0]
                torch.testing.assert_close(batch["global_features"][:, j], alone, atol=1e-5, rtol=1e-5)
    assert sorted(seen) == list(range(len(corpus)))
    with pytest.raises(ValueError, match="start_batch"):
        build_multicrop_dataloader(streaming_source(ds), cfg, None, fe, start_batch=1)


def test_iterable_dataset_uses_index_column(corpus):
    rows = [{"path": p, "index": 100 + i} for i, p in enumerate(corpus[:3])]
    items = list(MultiCropIterableDataset(rows, MultiCropper(MultiCropConfig(**CFG), sampling_rate=SR), seed=1))
    assert [it["index"] for it in items] == [100, 101, 102]


def test_min_duration_filter(corpus, fe):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"path": corpus, "duration": [1.0] * 5 + [0.3] + [1.5] * 6})
    assert len(filter_min_duration(ds, 0.5)) == 11
    assert filter_min_duration(ds, 0.0) is ds
    with pytest.raises(ValueError, match="min_duration"):
        filter_min_duration(ds, 9.0)
    loader = build_multicrop_dataloader(ds, MultiCropConfig(min_duration=1.2, **CFG), None, fe, batch_size=2)
    assert len(loader) == 3


def test_vad_drops_silence_and_never_empties():
    t = np.arange(SR) / SR
    tone = (0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    wav = np.concatenate([tone, np.zeros(SR, np.float32), tone])
    kept = apply_energy_vad(wav, SR)
    assert 2 * SR <= len(kept) < 2.1 * SR
    mask = energy_vad_mask(wav, SR)
    assert mask[:90].all() and not mask[110:190].any()
    silence = np.zeros(SR, np.float32)
    assert apply_energy_vad(silence, SR) is silence
    short_burst = np.concatenate([tone[:1600], np.zeros(SR, np.float32)])
    assert len(apply_energy_vad(short_burst, SR, EnergyVADConfig(min_speech_seconds=0.5))) == len(short_burst)
    with pytest.raises(ValueError, match="threshold_db"):
        EnergyVADConfig(threshold_db=3)


def test_vad_in_cropper(tmp_path):
    t = np.arange(SR) / SR
    tone = (0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    path = tmp_path / "gappy.wav"
    sf.write(path, np.concatenate([tone, np.zeros(3 * SR, np.float32), tone]), SR)

    def crop_peaks(vad):
        cropper = MultiCropper(MultiCropConfig(vad=vad, drop_silent=False, **CFG), sampling_rate=SR)
        items = [cropper(str(path), i) for i in range(6)]
        return np.concatenate(
            [
                np.abs(np.concatenate([it["global_crops"].ravel(), it["local_crops"].ravel()]))
                .reshape(-1, 4000)
                .max(axis=1)
                for it in items
            ]
        )

    # With VAD no crop (or quarter of a global crop) can fall in the 3 s gap; without, many do.
    assert (crop_peaks(True) > 0.1).all()
    assert (crop_peaks(False) < 1e-6).sum() >= 3


def test_global_only_views(corpus, fe):
    """n_local=0 (supervised training on pseudo-labels uses one crop per utterance)."""
    cfg = MultiCropConfig(n_global=1, global_seconds=0.5, n_local=0)
    batch = next(iter(build_multicrop_dataloader(corpus, cfg, AugmentConfig(), fe, batch_size=4, seed=1)))
    assert batch["global_features"].shape == (1, 4, 48, 80)
    assert batch["local_features"].shape[:2] == (0, 4)


def test_everything_at_the_feature_extractor_rate(corpus):
    """A telephone-band model (8 kHz) gets crops, augmentation and features at 8 kHz from 16 kHz files."""
    from modeling_dino_speech import DinoSpeechFeatureExtractor

    fe8 = DinoSpeechFeatureExtractor(sampling_rate=8000, high_freq=3800)
    cfg = MultiCropConfig(**CFG)
    loader = build_multicrop_dataloader(corpus, cfg, AugmentConfig(), fe8, batch_size=4, seed=1)
    assert loader.dataset.cropper.sampling_rate == 8000 and loader.dataset.cropper.augmenter.sampling_rate == 8000
    item = loader.dataset[0]
    assert item["global_crops"].shape == (2, 4000) and item["local_crops"].shape == (3, 2000)
    batch = next(iter(loader))
    assert batch["global_features"].shape == (2, 4, fe8.num_frames(4000), 80)
    with pytest.raises(ValueError, match="augmenter works at 16000 Hz but the crops are cut at 8000 Hz"):
        MultiCropper(cfg, Augmenter(AugmentConfig(), sampling_rate=16000), sampling_rate=8000)
    with pytest.raises(ValueError, match="8000 Hz gives 4000"):
        MultiCropCollator(cfg, fe8)([MultiCropper(cfg, sampling_rate=SR)(corpus[0], 0)])


def _peak_hz(crop: np.ndarray) -> float:
    return float(np.argmax(np.abs(np.fft.rfft(crop))) * SR / len(crop))


def test_speed_perturbation_moves_every_view_of_an_utterance_by_one_factor(tmp_path):
    path = tmp_path / "tone.wav"
    t = np.arange(3 * SR) / SR
    sf.write(path, (0.3 * np.sin(2 * np.pi * 400 * t)).astype(np.float32), SR, subtype="FLOAT")
    plain = MultiCropper(MultiCropConfig(**CFG), sampling_rate=SR)
    assert all(_peak_hz(c) == 400 for c in plain(str(path), 0)["global_crops"])
    fixed = MultiCropper(MultiCropConfig(**CFG, speed=(1.25, 1.25)), sampling_rate=SR)
    item = fixed(str(path), 0)
    assert item["global_crops"].shape == (2, 8000) and item["local_crops"].shape == (3, 4000)
    # A view is 1.25 times faster: the tone is 500 Hz, in the long and the short views alike.
    assert all(abs(_peak_hz(c) - 500) <= 4 for c in [*item["global_crops"], *item["local_crops"]])
    ranged = MultiCropper(MultiCropConfig(**CFG, speed=(0.8, 1.2)), sampling_rate=SR)
    peaks = []
    for index in range(8):
        views = ranged(str(path), index)["global_crops"]
        first, second = (_peak_hz(v) for v in views)
        assert abs(first - second) <= 2  # one factor per utterance
        peaks.append(first)
    assert min(peaks) < 380 and max(peaks) > 420 and all(315 <= p <= 485 for p in peaks)
    assert np.array_equal(ranged(str(path), 3)["local_crops"], ranged(str(path), 3)["local_crops"])


def test_speed_perturbation_setting_is_checked():
    with pytest.raises(ValueError, match="speed"):
        MultiCropConfig(speed=(1.1, 0.9))
    with pytest.raises(ValueError, match="speed"):
        MultiCropConfig(speed=(0.0, 1.0))
    assert from_dict(MultiCropConfig, {"speed": [0.9, 1.1]}).speed == (0.9, 1.1)
