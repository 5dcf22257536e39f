"""Reliability of whole runs (#15): one run per output folder, recipe values refused before any work, a
collapse that does not depend on the embeddings' scale recorded in the summary and the card whatever the
collapse_action, resumes that fall back past damaged checkpoints and refuse a changed recipe, and a
pseudo-labelling pool screened by the data section's file policy.

The runs train in this process (a few seconds each); tests/test_train_dino.py runs them through train.py.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import make_corpus
from safetensors.torch import load_file
from test_train_dino import TINY

from modeling_dino_speech.training import checkpoint as ckpt
from modeling_dino_speech.training.config import DinoTrainConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo.yaml"
SR = 16000


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"), speakers=4, per_speaker=6)


@pytest.fixture(autouse=True)
def fresh_accelerate():
    """Each test's runs start from accelerate's initial state."""
    from accelerate.state import AcceleratorState, GradientState

    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def recipe(manifest, out, steps, *extra) -> DinoTrainConfig:
    return load_config(
        DinoTrainConfig,
        DEMO,
        [f"data.train={manifest}", "data.augment.musan_root=null", *TINY, f"max_steps={steps}", f"output_dir={out}"]
        + list(extra),
    )


def train(manifest, out, steps, *extra, resume=False) -> Path:
    """`train.py dino` in this process."""
    from accelerate.state import AcceleratorState, GradientState

    from modeling_dino_speech.training.dino import train_dino

    try:
        return train_dino(recipe(manifest, out, steps, *extra), resume=resume)
    finally:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()


def logged_steps(out: Path) -> list:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [row["step"] for row in rows if "loss" in row]


# --------------------------------------------------------------------------------------------- the lock


def _lock():
    from modeling_dino_speech.training.lock import OutputDirBusy, OutputDirLock

    return OutputDirBusy, OutputDirLock


HOLD = """
import sys, time
from modeling_dino_speech.training.lock import OutputDirLock
OutputDirLock(sys.argv[1], command="train.py dino --output_dir somewhere").acquire()
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of `tmp_path / "run"`."""
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "held"
    yield out, proc
    proc.kill()
    proc.wait()


def test_a_busy_output_dir_is_refused_naming_its_holder(holder):
    OutputDirBusy, OutputDirLock = _lock()
    out, proc = holder
    with pytest.raises(OutputDirBusy) as caught:
        OutputDirLock(out).acquire()
    message = str(caught.value)
    assert f"pid {proc.pid}" in message and socket.gethostname() in message
    assert "train.py dino --output_dir somewhere" in message and str(out) in message
    # the holder dies (SIGKILL: no clean-up at all): its lock goes with it
    proc.kill()
    proc.wait()
    with OutputDirLock(out) as lock:
        assert lock.held
    again = OutputDirLock(out).acquire()  # released on leaving the block
    assert again.held
    again.release()


def test_a_run_on_a_busy_output_dir_stops_before_writing_anything(holder, corpus):
    from modeling_dino_speech.training.dino import train_dino

    OutputDirBusy, _ = _lock()
    out, proc = holder
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(OutputDirBusy, match=f"pid {proc.pid}"):
        train_dino(recipe(corpus, out, 2))
    assert sorted(p.name for p in out.iterdir()) == before == [".lock"]


def test_pseudo_labelling_on_a_busy_output_dir_stops_before_writing_anything(holder, corpus, tmp_path):
    from modeling_dino_speech.training.pseudo_label import PseudoLabelConfig, run_pseudo_labelling

    OutputDirBusy, _ = _lock()
    out, proc = holder
    cfg = load_config(PseudoLabelConfig, None, [f"init={tmp_path}", f"output_dir={out}", f"data.train={corpus}"])
    with pytest.raises(OutputDirBusy, match=f"pid {proc.pid}"):
        run_pseudo_labelling(cfg)
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


# --------------------------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    "override, key, allowed",
    [
        ("optim.lr=-0.05", "optim.lr", "> 0"),
        ("log_every=0", "log_every", ">= 1"),
        ("grad_accum=0", "optim.grad_accum", ">= 1"),
        ("max_steps=-5", "optim.max_steps", ">= 0"),
        ("teacher_momentum=1.5", "dino.teacher_momentum", "in [0, 1]"),
        ("center_momentum=-1", "dino.center_momentum", "in [0, 1]"),
        ("collapse_action=stopp", "monitor.collapse_action", "one of 'warn', 'stop'"),
        ("optim.betas=[0.9, 1.5]", "optim.betas", "each in [0, 1)"),
        ("student_temperature=0", "dino.student_temperature", "> 0"),
        ("data.batch_size=0", "data.batch_size", ">= 1"),
        ("optim.lr=.nan", "optim.lr", "> 0"),
        ("data.augment.noise_prob=1.5", "data.augment.noise_prob", "in [0, 1]"),
        ("data.crops.min_duration=-1", "data.crops.min_duration", ">= 0"),
    ],
)
def test_out_of_range_values_are_refused_naming_key_and_range(override, key, allowed):
    with pytest.raises(ValueError) as caught:
        load_config(DinoTrainConfig, DEMO, [override])
    assert getattr(caught.value, "key", None) == key, str(caught.value)
    assert f"{key}=" in str(caught.value) and allowed in str(caught.value) and "demo.yaml" in str(caught.value)


@pytest.mark.parametrize("override", ["optim.betas=0.9", "optim.betas=[0.9]", "optim.betas=[0.9, 0.99, 0.999]"])
def test_a_pair_must_be_two_values(override):
    with pytest.raises(ValueError, match="optim.betas must be a list of 2 values"):
        load_config(DinoTrainConfig, DEMO, [override])


def test_in_range_edges_are_accepted():
    cfg = load_config(
        DinoTrainConfig, DEMO, ["max_steps=0", "optim.clip_grad=null", "center_momentum=1", "save_every=0"]
    )
    assert cfg.optim.max_steps == 0 and cfg.dino.center_momentum == 1.0


def test_a_recipe_changed_after_loading_is_refused_before_any_work(tmp_path, corpus):
    from modeling_dino_speech.training.dino import train_dino
    from modeling_dino_speech.training.pseudo_label import PseudoLabelConfig, run_pseudo_labelling

    cfg = recipe(corpus, tmp_path / "run", 2)
    cfg.optim.lr = -0.05
    with pytest.raises(ValueError, match=r"optim\.lr=-0\.05 .*must be a number > 0"):
        train_dino(cfg)
    labelling = PseudoLabelConfig(init=str(tmp_path), output_dir=str(tmp_path / "pl"))
    labelling.supervised.batch_size = 0
    with pytest.raises(ValueError, match=r"supervised\.batch_size=0"):
        run_pseudo_labelling(labelling)
    assert not (tmp_path / "run").exists() and not (tmp_path / "pl").exists()


# --------------------------------------------------------------------------------------------- collapse


def test_teacher_output_independent_of_the_input_is_a_collapse():
    from modeling_dino_speech.training.monitor import CollapseMonitor, dino_statistics

    k, b = 64, 16
    # every sample gets the same distribution, neither one-hot nor flat (what lr=1000 does)
    same = torch.softmax(torch.randn(1, k) * 2, dim=-1).repeat(2 * b, 1)
    huge = 327 * torch.randn(1, 8) + torch.randn(2 * b, 8) * 1e-3  # a large spread, yet one direction
    stats = dino_statistics(same, torch.randn(2 * b, k), 0.1, 2, huge, torch.zeros(1, k))
    assert 0.05 < stats["teacher_entropy"] < 0.98 and stats["teacher_information"] == pytest.approx(0, abs=1e-6)
    assert stats["embedding_std"] > 1e-4 and stats["embedding_cosine"] > 0.999
    monitor = CollapseMonitor(patience=2)
    assert monitor.update(stats, 7) is None
    assert monitor.update(stats, 8) == "constant_embeddings"
    assert monitor.summary()["collapses"] == [
        {"kind": "constant_embeddings", "step": 8},
        {"kind": "same_output", "step": 8},
    ]
    # a healthy teacher: its distributions and embeddings vary with the input
    healthy = torch.softmax(torch.randn(2 * b, k) * 3, dim=-1)
    stats = dino_statistics(healthy, torch.randn(2 * b, k), 0.1, 2, torch.randn(2 * b, 8), torch.zeros(1, k))
    assert stats["teacher_information"] > 0.1 and abs(stats["embedding_cosine"]) < 0.2
    monitor = CollapseMonitor(patience=1)
    assert all(monitor.update(stats, i) is None for i in range(3))
    assert monitor.summary() == {
        "collapse": None,
        "collapses": [],
        "final_statistics": {**{k: round(v, 4) for k, v in monitor.last.items() if k != "step"}, "step": 2},
    }


def test_the_monitor_keeps_its_collapses_across_a_resume():
    from modeling_dino_speech.training.monitor import CollapseMonitor

    monitor = CollapseMonitor(patience=1)
    stats = {"teacher_batch_entropy": 0.0, "teacher_entropy": 0.0, "embedding_std": 1.0, "effective_rank": 3.0}
    assert monitor.update(stats, 5) == "one_prototype"
    again = CollapseMonitor(patience=1)
    again.load_state_dict(json.loads(json.dumps(monitor.state_dict())))
    assert again.summary()["collapses"] == [{"kind": "one_prototype", "step": 5}]
    assert again.summary()["final_statistics"]["effective_rank"] == 3.0
    assert again.update(stats, 6) is None  # reported once


@pytest.mark.slow
def test_a_blown_up_run_is_reported_as_collapsed_under_warn(corpus, tmp_path, caplog):
    """optim.lr=1000 gives every sample the same teacher distribution within a few steps."""
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        final = train(corpus, out, 14, "optim.lr=1000", "monitor.patience=3", "save_every=0")
    assert "DINO COLLAPSE DETECTED" in caplog.text and "SAME teacher distribution" in caplog.text
    summary = json.loads((final / "training_summary.json").read_text())
    assert summary["steps"] == 14  # warn: it went on
    kinds = [event["kind"] for event in summary["collapses"]]
    assert summary["collapse"] == kinds[0] and "same_output" in kinds
    assert all(3 <= event["step"] <= 14 for event in summary["collapses"])
    assert summary["final_statistics"]["teacher_information"] < 1e-3 and "effective_rank" in summary["final_statistics"]
    card = (final / "README.md").read_text()
    assert f"| collapse | {kinds[0]} |" in card and "same_output" in card


@pytest.mark.slow
def test_a_healthy_run_reports_no_collapse(corpus, tmp_path):
    final = train(corpus, tmp_path / "run", 12, "monitor.patience=3", "save_every=0")
    summary = json.loads((final / "training_summary.json").read_text())
    assert summary["collapse"] is None and summary["collapses"] == []
    assert summary["final_statistics"]["teacher_information"] > 0.1


# --------------------------------------------------------------------------------------------- resume


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40  # in the tensors, past the header: the file still parses
    path.write_bytes(bytes(data))


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["bit flip", "truncated", "bad json", "missing model"])
def test_resume_falls_back_past_a_damaged_checkpoint_to_the_same_weights(corpus, tmp_path, capsys, damage):
    straight = train(corpus, tmp_path / "straight", 4, "save_every=2")
    out = tmp_path / "run"
    train(corpus, out, 4, "save_every=2")
    newest = ckpt.checkpoint_path(out, 4)
    if damage == "bit flip":
        _flip_a_byte(newest / ckpt.TENSORS_FILE)
    elif damage == "truncated":
        model = newest / "model.safetensors"
        model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    elif damage == "bad json":
        (newest / ckpt.STATE_FILE).write_text('{"train_state": {"global_step": 4')
    else:
        (newest / "model.safetensors").unlink()
    capsys.readouterr()
    final = train(corpus, out, 4, "save_every=2", resume=True)
    said = capsys.readouterr().out
    assert "checkpoint_00000004 is damaged" in said and "falling back to checkpoint_00000002" in said
    assert "resumed from" in said and "at step 2" in said
    if damage == "missing model":
        assert "model.safetensors is missing" in said
    assert (out / "checkpoints" / "corrupt-checkpoint_00000004").is_dir()
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["checkpoint_00000002", "checkpoint_00000004"]
    a = load_file(straight.parent / "pretraining" / "teacher" / "model.safetensors")
    b = load_file(final.parent / "pretraining" / "teacher" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=0, rtol=0, msg=key)
    assert logged_steps(out) == [1, 2, 3, 4]


@pytest.mark.slow
def test_resume_with_no_intact_checkpoint_fails_clearly(corpus, tmp_path):
    from modeling_dino_speech.training.checkpoint import CheckpointError

    out = tmp_path / "run"
    train(corpus, out, 2, "save_every=2")
    _flip_a_byte(ckpt.checkpoint_path(out, 2) / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"(?s)no intact checkpoint.*checkpoint_00000002: model\.safetensors is"):
        train(corpus, out, 4, "save_every=2", resume=True)


@pytest.mark.slow
def test_resume_refuses_a_changed_recipe_and_keeps_the_first_one(corpus, tmp_path):
    out = tmp_path / "run"
    train(corpus, out, 2, "save_every=2")
    first = (out / "recipe.yaml").read_text()
    for changes, listed in [
        (["optim.lr=0.02"], ["optim.lr: 0.01 -> 0.02"]),
        (["data.batch_size=4", "seed=1"], ["data.batch_size: 8 -> 4", "seed: 0 -> 1"]),
        (["data.crops.n_local=3", "max_steps=6"], ["data.crops.n_local: 2 -> 3", "optim.max_steps: 2 -> 6"]),
        ([f"data.train={corpus.parent / 'other.csv'}"], ["data.train:"]),
    ]:
        with pytest.raises(ValueError, match="would make the continuation another run") as caught:
            train(corpus, out, 2, "save_every=2", *changes, resume=True)
        assert all(item in str(caught.value) for item in listed), str(caught.value)
        assert "another --output_dir" in str(caught.value)
        assert (out / "recipe.yaml").read_text() == first
    # harmless changes are allowed, and recorded beside the first recipe
    train(corpus, out, 2, "save_every=2", "log_every=2", "data.num_workers=1", "eval.every_steps=5", resume=True)
    assert (out / "recipe.yaml").read_text() == first
    assert "log_every: 2" in (out / "recipe.1.yaml").read_text()
    train(corpus, out, 2, "save_every=2", "log_every=2", "data.num_workers=1", "eval.every_steps=5", resume=True)
    assert not (out / "recipe.2.yaml").exists()  # the same recipe again adds nothing


@pytest.mark.slow
def test_replayed_steps_are_logged_once(corpus, tmp_path):
    out = tmp_path / "run"
    train(corpus, out, 4, "save_every=2")
    # as if killed after logging steps 3 and 4 but before their checkpoint, mid-way through a line
    shutil.rmtree(ckpt.checkpoint_path(out, 4))
    with open(out / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 5, "loss": 1.')
    train(corpus, out, 4, "save_every=2", resume=True)
    assert logged_steps(out) == [1, 2, 3, 4]
    # a new run (no --resume) in the folder starts a new log
    train(corpus, out, 2, "save_every=0")
    assert logged_steps(out) == [1, 2]


# --------------------------------------------------------------------------------------------- pools


def _bad_pool(folder: Path, manifest: Path) -> tuple[Path, dict]:
    """The manifest plus a file with a bad header, a 10 ms one, one with NaN samples and a silent one, each with
    a duration in the manifest (so that nothing but decoding finds them)."""
    folder.mkdir(parents=True, exist_ok=True)
    bad = {
        "header": folder / "bad_header.wav",
        "short": folder / "ten_ms.wav",
        "nan": folder / "nan.wav",
        "silent": folder / "silent.wav",
    }
    bad["header"].write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00garbage" + b"\x00" * 64)
    sf.write(bad["short"], 0.1 * np.random.default_rng(0).standard_normal(160).astype(np.float32), SR)
    wave = 0.1 * np.random.default_rng(1).standard_normal(SR * 2).astype(np.float32)
    wave[100] = np.nan
    sf.write(bad["nan"], wave, SR, subtype="FLOAT")
    sf.write(bad["silent"], np.zeros(SR * 2, np.float32), SR)
    header, *good = manifest.read_text().splitlines()
    good = [f"{manifest.parent / line.split(',', 1)[0]},{line.split(',', 1)[1]}" for line in good]
    out = folder / "with_bad.csv"
    out.write_text("\n".join([header, *good, *(f"{p},spk0,2.0" for p in bad.values())]) + "\n")
    return out, bad


@pytest.mark.parametrize("policy", ["skip", "fail"])
def test_the_pseudo_label_pool_is_screened_by_the_data_policy(corpus, tmp_path, caplog, policy):
    from modeling_dino_speech import DinoSpeechFeatureExtractor
    from modeling_dino_speech.data.corpora import load_manifest
    from modeling_dino_speech.training.config import DataConfig
    from modeling_dino_speech.training.pseudo_label import screen_pool

    manifest, bad = _bad_pool(tmp_path / "bad", corpus)
    pool = load_manifest(manifest, on_error="skip")
    assert len(pool) == 24 + 4  # what DINO training accepts
    data = load_config(DataConfig, None, [f"train={manifest}", f"crops.on_error={policy}"])
    single = types.SimpleNamespace(process_index=0, num_processes=1, is_local_main_process=True)
    if policy == "fail":
        with pytest.raises(ValueError, match="(?s)4 unusable audio file") as caught:
            screen_pool(single, pool, data, DinoSpeechFeatureExtractor())
        assert all(str(path) in str(caught.value) for path in bad.values())
        return
    with caplog.at_level(logging.WARNING):
        kept = screen_pool(single, pool, data, DinoSpeechFeatureExtractor())
    assert len(kept) == 24 and not set(kept["path"]) & {str(p) for p in bad.values()}
    warnings = [r for r in caplog.records if "unusable" in r.getMessage()]
    assert len(warnings) == 1
    for path, why in [("header", "unreadable"), ("short", "too short"), ("nan", "NaN"), ("silent", "silent")]:
        assert f"{bad[path]}: " in warnings[0].getMessage() and why in warnings[0].getMessage()


def test_the_export_whitening_leaves_out_files_it_cannot_embed(corpus, tmp_path, caplog):
    from modeling_dino_speech import DinoSpeechConfig, DinoSpeechFeatureExtractor, DinoSpeechModel
    from modeling_dino_speech.data.corpora import load_manifest
    from modeling_dino_speech.training.whitening import whiten_on_pool

    manifest, bad = _bad_pool(tmp_path / "bad", corpus)
    pool = load_manifest(manifest, on_error="skip")
    config = DinoSpeechConfig(resnet_layers=[1, 1, 1, 1], resnet_base_width=8, embedding_size=16)
    with caplog.at_level(logging.WARNING):
        summary = whiten_on_pool(DinoSpeechModel(config).eval(), DinoSpeechFeatureExtractor(), list(pool["path"]))
    assert summary["whitening_utterances"] == 25  # the silent file can be embedded
    assert str(bad["nan"]) in caplog.text and str(bad["short"]) in caplog.text


@pytest.mark.slow
def test_pseudo_labelling_runs_on_a_pool_dino_training_accepted(corpus, tmp_path):
    from test_pseudo_label import ENV, pseudo_label_command, tiny_dino_export

    manifest, bad = _bad_pool(tmp_path / "bad", corpus)
    init = tiny_dino_export(tmp_path / "dino_final")
    out = tmp_path / "pl"
    command = pseudo_label_command(manifest, init, out, "rounds=1", "eval.trials=null", "supervised.steps=2")
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    assert all(str(path) in result.stderr for path in bad.values())
    labelled = (out / "round_1" / "pseudo_labels.csv").read_text()
    assert not any(str(path) in labelled for path in bad.values())
    # the same pool under on_error=fail stops before any embedding, naming the files
    failing = tmp_path / "pl_fail"
    command = pseudo_label_command(manifest, init, failing, "rounds=1", "eval.trials=null", "data.crops.on_error=fail")
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=900)
    assert result.returncode != 0 and all(str(path) in result.stderr for path in bad.values())
    assert not (failing / "round_1").exists()


# --------------------------------------------------------------------------------------------- two processes


@pytest.mark.slow
def test_two_train_py_runs_on_one_output_dir(corpus, tmp_path):
    from test_train_dino import common, run_train

    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    first = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "dino", *common(corpus, out, 400, ["save_every=1"])],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not (out / "metrics.jsonl").exists():
            time.sleep(0.05)
        second = run_train(common(corpus, out, 2, ["save_every=1"]))
        assert second.returncode != 0
        assert "OutputDirBusy" in second.stderr and f"pid {first.pid}" in second.stderr
        # refused at once: before it read the pool (which the first run reports below), while the first trains
        assert "augmentation sources" not in second.stderr, second.stderr[-2000:]
        assert first.poll() is None, "the first run was disturbed"
    finally:
        first.kill()
        _, first_stderr = first.communicate()
    assert "augmentation sources" in first_stderr
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.endswith("}")]
    steps = [row["step"] for row in rows if "loss" in row]
    assert steps == sorted(set(steps))  # one run's rows only
