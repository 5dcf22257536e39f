"""`num_threads: auto` (training.threads) and `sync_batchnorm` (training.dino.sync_batchnorm)."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from modeling_dino_speech.training import threads
from modeling_dino_speech.training.config import DinoTrainConfig, from_dict
from modeling_dino_speech.training.dino import MultiCropWrapper, sync_batchnorm


@pytest.mark.parametrize(
    "cores, busy, expected",
    [
        (2, 0.0, 2),
        (2, 0.1, 2),
        (2, 0.4, 2),
        (2, 0.6, 1),
        (2, 1.0, 1),
        (2, 3.0, 1),
        (8, 2.2, 6),
        (8, 0.0, 8),
        (1, 0.0, 1),
    ],
)
def test_the_rule_leaves_the_busy_cores_alone(cores, busy, expected):
    assert threads.choose_threads(cores, busy) == expected


class FakeMachine:
    """/proc/stat and os.times() of a machine whose other processes keep `busy` cores busy."""

    def __init__(self):
        self.now, self.machine, self.own, self.busy, self.own_rate = 0.0, 0.0, 0.0, 0.0, 1.0

    def advance(self, seconds):
        self.now += seconds
        self.own += self.own_rate * seconds
        self.machine += (self.busy + self.own_rate) * seconds


def test_governor_follows_the_load_and_sets_torch(monkeypatch):
    machine = FakeMachine()
    calls = []
    monkeypatch.setattr(threads.torch, "set_num_threads", calls.append)
    governor = threads.ThreadGovernor(
        cores=2, interval_s=10, reader=lambda: machine.machine, own=lambda: machine.own, clock=lambda: machine.now
    )
    machine.advance(10)
    assert governor.maybe_update() == 2
    machine.busy = 1.0  # a competing process appears
    machine.advance(5)
    assert governor.maybe_update() is None  # not yet time to look
    machine.advance(5)
    assert governor.maybe_update() == 1 and calls[-1] == 1
    machine.busy = 0.05
    machine.advance(10)
    assert governor.maybe_update() == 2 and calls[-1] == 2
    assert [t for _, t in governor.history] == [2, 1, 2]
    # our own threads' time is never counted as load, however busy they are
    machine.own_rate = 2.0
    machine.advance(10)
    assert governor.update() == 2


def test_governor_without_proc_stat_uses_every_core(monkeypatch):
    monkeypatch.setattr(threads.torch, "set_num_threads", lambda n: None)
    governor = threads.ThreadGovernor(cores=3, reader=lambda: None)
    assert governor.update() == 3


def test_thread_settings_are_checked():
    assert from_dict(DinoTrainConfig, {"num_threads": "auto"}).num_threads == "auto"
    assert from_dict(DinoTrainConfig, {"num_threads": 2}).num_threads == 2
    for bad in ("many", -1, 1.5):
        with pytest.raises(ValueError, match="num_threads"):
            from_dict(DinoTrainConfig, {"num_threads": bad})


def test_apply_num_threads_auto_measures_and_keeps_a_governor():
    before = torch.get_num_threads()
    try:
        governor = threads.apply_num_threads("auto", probe_s=0.05)
        assert threads.current_governor() is governor and 1 <= governor.threads <= threads.available_cores()
        assert torch.get_num_threads() == governor.threads
        assert threads.apply_num_threads(1) is None and threads.current_governor() is None
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def _model():
    from modeling_dino_speech import DinoSpeechConfig, DinoSpeechForPreTraining

    config = DinoSpeechConfig(
        backbone="ecapa_tdnn",
        ecapa_channels=32,
        ecapa_mfa_channels=64,
        ecapa_se_channels=16,
        attention_channels=16,
        embedding_size=16,
        dino_hidden_size=32,
        dino_bottleneck_size=8,
        dino_num_prototypes=16,
    )
    return MultiCropWrapper(DinoSpeechForPreTraining(config))


def _accelerator(processes, device):
    printed = []
    return SimpleNamespace(num_processes=processes, device=torch.device(device), print=printed.append), printed


def _count(module, kind):
    return sum(isinstance(m, kind) for m in module.modules())


def test_sync_batchnorm_converts_every_batchnorm_for_gpu_processes():
    model = _model()
    norms = _count(model, nn.modules.batchnorm._BatchNorm)
    accelerator, _ = _accelerator(2, "cuda")
    converted = sync_batchnorm(model, accelerator)
    assert norms > 0 and _count(converted, nn.SyncBatchNorm) == norms
    assert _count(converted, nn.BatchNorm1d) == 0
    # the state (what checkpoints and the export carry) keeps its names
    assert set(converted.state_dict()) == set(_model().state_dict())


def test_sync_batchnorm_is_a_no_op_for_one_process_and_refused_on_cpu_processes():
    model = _model()
    accelerator, printed = _accelerator(1, "cpu")
    assert sync_batchnorm(model, accelerator) is model and _count(model, nn.SyncBatchNorm) == 0
    assert "one process" in printed[0]
    with pytest.raises(ValueError, match="GPUs only"):
        sync_batchnorm(model, _accelerator(2, "cpu")[0])
