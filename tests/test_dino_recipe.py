"""The pieces of the DINO recipe, each against a hand computation."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from modeling_dino_speech import DINOLoss
from modeling_dino_speech.training.config import DinoTrainConfig, load_config
from modeling_dino_speech.training.dino import MultiCropWrapper, ema_update, freeze_batchnorm_statistics, param_groups
from modeling_dino_speech.training.monitor import CollapseMonitor, dino_statistics, effective_rank
from modeling_dino_speech.training.schedules import DinoSchedules, cosine_scheduler, linear_warmup


def test_dino_loss_matches_hand_computation():
    # 2 global + 1 local view, batch 1, K = 3
    teacher = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    student = torch.tensor([[0.5, 0.1, 0.0], [0.0, 0.3, 0.2], [0.1, 0.1, 0.9]])
    loss = DINOLoss(3, num_global_crops=2, student_temperature=0.1, center_momentum=0.9)
    loss.center.copy_(torch.tensor([[0.1, 0.2, 0.3]]))
    t_temp = 0.04

    def softmax(x):
        e = np.exp(x - x.max())
        return e / e.sum()

    t = [softmax((teacher[i].numpy() - loss.center[0].numpy()) / t_temp) for i in range(2)]
    s = [np.log(softmax(student[j].numpy() / 0.1)) for j in range(3)]
    pairs = [(0, 1), (0, 2), (1, 0), (1, 2)]  # (teacher view, student view), never the same view
    expected = np.mean([-(t[a] * s[b]).sum() for a, b in pairs])
    assert loss(student, teacher, t_temp).item() == pytest.approx(expected, rel=1e-5)


def test_centre_is_an_ema_of_teacher_batch_means():
    loss = DINOLoss(4, center_momentum=0.9)
    out = torch.tensor([[1.0, 2.0, 3.0, 4.0], [3.0, 2.0, 1.0, 0.0]])
    loss.update_center(out)
    torch.testing.assert_close(loss.center, 0.1 * out.mean(0, keepdim=True))
    loss.update_center(out, all_reduce=lambda x: x * 0 + 10.0)  # the reduced mean is what counts
    torch.testing.assert_close(loss.center, 0.9 * 0.1 * out.mean(0, keepdim=True) + 0.1 * 10.0)


def test_ema_update_of_parameters_and_batchnorm_statistics():
    student = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    teacher = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    freeze_batchnorm_statistics(teacher)
    student.train()(torch.randn(8, 2))  # give the student non-trivial running statistics
    t0 = [p.clone() for p in teacher.parameters()]
    tb0 = teacher[1].running_mean.clone()
    ema_update(teacher, student, 0.75)
    for before, t, s in zip(t0, teacher.parameters(), student.parameters()):
        torch.testing.assert_close(t, 0.75 * before + 0.25 * s)
    torch.testing.assert_close(teacher[1].running_mean, 0.75 * tb0 + 0.25 * student[1].running_mean)
    assert teacher[1].num_batches_tracked == student[1].num_batches_tracked
    # the teacher's own forward passes never move its running statistics
    running = teacher[1].running_mean.clone()
    teacher.train()(torch.randn(8, 2) * 5 + 3)
    torch.testing.assert_close(teacher[1].running_mean, running)


def test_no_weight_decay_on_biases_and_norms():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    decay, no_decay = param_groups(model)
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 3])]
    assert len(no_decay["params"]) == 3 and no_decay["weight_decay"] == 0.0


def test_cosine_scheduler_and_warmups():
    s = cosine_scheduler(1.0, 0.0, total_steps=110, warmup_steps=10)
    assert len(s) == 110
    np.testing.assert_allclose(s[:10], np.linspace(0, 1, 10, endpoint=False))
    assert s[10] == pytest.approx(1.0)
    assert s[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 99 / 100)))
    assert np.all(np.diff(s[10:]) <= 0)
    m = cosine_scheduler(0.996, 1.0, 50)
    assert m[0] == pytest.approx(0.996) and np.all(np.diff(m) >= 0) and m[-1] < 1.0
    t = linear_warmup(0.02, 0.04, 20, 5)
    np.testing.assert_allclose(t[:6], [0.02, 0.024, 0.028, 0.032, 0.036, 0.04])
    assert np.all(t[5:] == 0.04)


def test_schedules_follow_the_recipe():
    cfg = DinoTrainConfig()
    sched = DinoSchedules.build(cfg.optim, cfg.dino, total_steps=700, steps_per_epoch=10, effective_batch=96)
    assert sched.learning_rate.max() == pytest.approx(0.005 * 96 / 256)
    assert int(np.argmax(sched.learning_rate)) == 100  # 10 warm-up epochs
    assert sched.freeze_last_layer_steps == 10
    assert sched.teacher_momentum[0] == pytest.approx(0.996)


def test_multicrop_wrapper_groups_by_length(tiny_config):
    from modeling_dino_speech import DinoSpeechForPreTraining

    model = DinoSpeechForPreTraining(tiny_config).eval()
    wrapper = MultiCropWrapper(model)
    g, l = torch.randn(4, 60, 80), torch.randn(6, 30, 80)
    logits, emb = wrapper([g, l])
    assert logits.shape == (10, 128) and emb.shape == (10, 32)
    torch.testing.assert_close(logits[4:], model(l).logits)


def test_collapse_monitor_flags_one_prototype_and_uniform():
    k, b = 64, 16
    one_hot = torch.zeros(2 * b, k)
    one_hot[:, 3] = 1.0
    emb = torch.randn(2 * b, 8)
    stats = dino_statistics(one_hot, torch.randn(2 * b, k), 0.1, 2, emb, torch.zeros(1, k))
    assert stats["teacher_batch_entropy"] < 0.01
    monitor = CollapseMonitor(patience=3)
    assert [monitor.update(stats, i) for i in range(3)] == [None, None, "one_prototype"]
    assert monitor.update(stats, 4) is None  # reported once
    uniform = torch.full((2 * b, k), 1.0 / k)
    stats = dino_statistics(uniform, torch.randn(2 * b, k), 0.1, 2, emb, torch.zeros(1, k))
    assert stats["teacher_entropy"] == pytest.approx(1.0, abs=1e-5)
    assert [CollapseMonitor(patience=2).update(stats, i) for i in range(1)] == [None]
    healthy = torch.softmax(torch.randn(2 * b, k) * 3, dim=-1)
    stats = dino_statistics(healthy, torch.randn(2 * b, k), 0.1, 2, emb, torch.zeros(1, k))
    assert all(CollapseMonitor(patience=1).update(stats, i) is None for i in range(3))


def test_collapse_monitor_from_the_recipe_section():
    cfg = load_config(DinoTrainConfig, None, ["monitor.patience=4", "monitor.min_embedding_std=0.5"])
    monitor = CollapseMonitor.from_config(cfg.monitor)
    assert (monitor.patience, monitor.min_embedding_std) == (4, 0.5)
    assert (monitor.min_batch_entropy, monitor.max_sample_entropy) == (
        cfg.monitor.min_batch_entropy,
        cfg.monitor.max_sample_entropy,
    )


def test_effective_rank():
    assert effective_rank(torch.randn(200, 1) @ torch.randn(1, 16)) == pytest.approx(1.0, abs=0.05)
    assert effective_rank(torch.randn(2000, 16)) > 14


def test_config_strict_keys_and_overrides(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model: {embedding_size: 64}\noptim: {lr: 0.01}\ndata: {crops: {n_local: 2}}\n")
    cfg = load_config(
        DinoTrainConfig,
        path,
        ["max_steps=50", "optim.clip_grad=null", "model.backbone=ecapa_tdnn", "data.crops.local_seconds=1.5"],
    )
    assert cfg.optim.max_steps == 50 and cfg.optim.clip_grad is None and cfg.optim.lr == 0.01
    assert cfg.model == {"embedding_size": 64, "backbone": "ecapa_tdnn"}
    assert cfg.data.crops.n_local == 2 and cfg.data.crops.local_seconds == 1.5
    path.write_text("optim: {learning_rate: 0.01}\n")
    with pytest.raises(ValueError, match="learning_rate"):
        load_config(DinoTrainConfig, path)
    path.write_text("model: {embeding_size: 64}\n")
    with pytest.raises(ValueError, match="embeding_size"):
        load_config(DinoTrainConfig, path)
    with pytest.raises(ValueError, match="no such setting"):
        load_config(DinoTrainConfig, None, ["nonsense=1"])
    with pytest.raises(ValueError, match="must be int"):
        load_config(DinoTrainConfig, None, ["log_every=often"])


@pytest.mark.parametrize("name", ["paper_lresnet34", "wespeaker_ecapa512", "demo"])
def test_shipped_recipes_load(name):
    from modeling_dino_speech import DinoSpeechConfig

    cfg = load_config(DinoTrainConfig, Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml")
    DinoSpeechConfig(**cfg.model)


@pytest.mark.parametrize(
    "cuda, cuda_bf16, cpu_bf16, expected",
    [
        (False, False, False, "no"),
        (False, False, True, "bf16"),
        (True, True, False, "bf16"),
        (True, False, True, "fp16"),
    ],
)
def test_auto_mixed_precision_takes_bf16_where_the_hardware_computes_it(
    monkeypatch, cuda, cuda_bf16, cpu_bf16, expected
):
    from modeling_dino_speech.training import setup

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: cuda_bf16)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: cpu_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert setup.resolve_mixed_precision("auto") == expected
    assert setup.resolve_mixed_precision("no") == "no"  # an explicit choice is kept
