"""A resumed streaming epoch continues where it stopped: the same items in the same order, not a fresh epoch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from modeling_dino_speech import DinoSpeechFeatureExtractor
from modeling_dino_speech.data.multicrop import (
    MultiCropConfig,
    build_multicrop_dataloader,
    count_stream_rows,
    streaming_source,
)

datasets = pytest.importorskip("datasets")

SR = 16000
ROOT = Path(__file__).resolve().parents[1]
CROPS = MultiCropConfig(n_global=1, global_seconds=0.1, n_local=0)


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pool")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(22):  # 22 rows over 4 shards: uneven shards, workers that run dry at different times
        path = folder / f"u{i:02d}.wav"
        sf.write(path, (0.1 * rng.standard_normal(int(0.3 * SR))).astype(np.float32), SR, subtype="PCM_16")
        paths.append(str(path))
    return datasets.Dataset.from_dict({"path": paths})


def _loader(pool, workers, skip_rows=None, epoch=1):
    source = streaming_source(pool, num_shards=4, seed=5 + epoch)
    return build_multicrop_dataloader(
        source,
        CROPS,
        None,
        DinoSpeechFeatureExtractor(),
        batch_size=2,
        num_workers=workers,
        seed=5,
        epoch=epoch,
        skip_rows=skip_rows,
    )


@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_stream_continues_with_the_same_items_in_the_same_order(pool, workers):
    full = [b for b in _loader(pool, workers)]
    order = [b["index"].tolist() for b in full]
    assert len(order) >= 8 and len({i for b in order for i in b}) == sum(len(b) for b in order)
    for stop in (1, 3, len(order) - 2):
        rows: list = []
        for batch in full[:stop]:
            count_stream_rows(rows, batch)
        resumed = list(_loader(pool, workers, skip_rows=rows))
        replayed = [b for b in resumed if b.get("placeholder")]
        rest = [b for b in resumed if not b.get("placeholder")]
        assert len(replayed) == stop
        assert [b["index"].tolist() for b in rest] == order[stop:]
        for a, b in zip(full[stop:], rest):
            assert torch.equal(a["global_features"], b["global_features"])


def test_skip_rows_only_for_streams(pool):
    with pytest.raises(ValueError, match="skip_rows"):
        build_multicrop_dataloader(list(pool["path"]), CROPS, None, DinoSpeechFeatureExtractor(), skip_rows=[2])


STREAMING = [
    "data.batch_size=4",
    "data.streaming=true",
    "data.num_workers=2",
    "data.augment.musan_root=null",
    "save_every=3",
    "keep_checkpoints=10",
]


def _train(manifest, out, extra=()):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    from test_train_dino import TINY

    args = ["--config", str(ROOT / "configs" / "demo.yaml"), "--output_dir", str(out), f"data.train={manifest}"]
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "dino", *args, *TINY, *STREAMING, "max_steps=8", *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout + result.stderr


def _forget_after(out, step):
    """Leave the run as a crash after checkpoint `step` would have left it."""
    import shutil

    for checkpoint in (out / "checkpoints").iterdir():
        if int(checkpoint.name.split("_")[1]) > step:
            shutil.rmtree(checkpoint)
    for name in ("final", "pretraining"):
        shutil.rmtree(out / name, ignore_errors=True)


def _teacher(out):
    return load_file(out / "pretraining" / "teacher" / "model.safetensors")


@pytest.mark.slow
def test_training_resumed_mid_stream_equals_the_uninterrupted_run(tmp_path):
    from helpers import make_corpus

    manifest = make_corpus(tmp_path / "corpus", speakers=4, per_speaker=5)  # 20 rows: an epoch of 4 batches
    straight = tmp_path / "straight"
    _train(manifest, straight)
    state = json.loads((straight / "checkpoints" / "checkpoint_00000003" / "train_state.json").read_text())
    position = state["train_state"]
    assert position["epoch"] == 0 and position["batch_in_epoch"] == 3 and position["stream_epoch"] == 0
    assert sum(position["stream_rows"]) == 12  # 3 batches of 4 rows, between the two workers

    resumed = tmp_path / "resumed"
    _train(manifest, resumed)
    _forget_after(resumed, 3)
    log = _train(manifest, resumed, ["--resume"])
    assert "at step 3 (epoch 0, batch 3)" in log and "the epoch restarts" not in log
    a, b = _teacher(straight), _teacher(resumed)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=0, rtol=0, msg=key)

    # the same checkpoint without its stream position restarts the epoch: another run
    restarted = tmp_path / "restarted"
    _train(manifest, restarted)
    _forget_after(restarted, 3)
    state_file = restarted / "checkpoints" / "checkpoint_00000003" / "train_state.json"
    saved = json.loads(state_file.read_text())
    saved["train_state"].pop("stream_rows")
    saved["train_state"].pop("stream_epoch")
    # as a version without stream positions would have written it: resealed, so the digest check accepts it
    from modeling_dino_speech.training.checkpoint import DIGEST_KEY, _content_digest

    saved[DIGEST_KEY] = _content_digest(saved)
    state_file.write_text(json.dumps(saved))
    assert "the epoch restarts" in _train(manifest, restarted, ["--resume"])
    c = _teacher(restarted)
    assert any(not torch.equal(a[key], c[key]) for key in a)


def test_a_stream_of_raw_crops_resumes_too(pool):
    from modeling_dino_speech.data.augment import AugmentConfig
    from modeling_dino_speech.data.device_augment import DeviceAugmenter

    fe = DinoSpeechFeatureExtractor()
    device = DeviceAugmenter(AugmentConfig(), fe, "cpu")

    def loader(skip_rows=None):
        source = streaming_source(pool, num_shards=4, seed=9)
        return build_multicrop_dataloader(
            source,
            CROPS,
            AugmentConfig(),
            fe,
            batch_size=3,
            num_workers=2,
            seed=9,
            device_augmenter=device,
            skip_rows=skip_rows,
        )

    full = list(loader())
    rows: list = []
    for batch in full[:2]:
        count_stream_rows(rows, batch)
    rest = [b for b in loader(rows) if not b.get("placeholder")]
    assert [b["index"].tolist() for b in rest] == [b["index"].tolist() for b in full[2:]]
    for a, b in zip(full[2:], rest):
        assert torch.equal(a["global_crops"], b["global_crops"])
        assert torch.equal(a["global_plan"]["snr"], b["global_plan"]["snr"])
        assert torch.equal(device(a)["global_features"], device(b)["global_features"])
