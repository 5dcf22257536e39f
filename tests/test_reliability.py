"""Reliability: checkpoints survive a crash mid-save, nothing is unpickled, exports are atomic, a training
epoch survives files that vanish or rot after the manifest was read, and the fast inference paths compute
what the plain ones do.

The audio matrix (corrupt, empty, silent, short, NaN/Inf, clipped, multi-channel, other rates, unsupported
formats) lives in tests/test_audio.py and tests/test_multicrop.py; only what they miss is here.
"""

from __future__ import annotations

import ast
import errno
import json
import os
import re
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from modeling_dino_speech import (
    DinoSpeechConfig,
    DinoSpeechFeatureExtractor,
    DinoSpeechForPreTraining,
    DinoSpeechForXVector,
    DinoSpeechModel,
)
from modeling_dino_speech.training import checkpoint as ckpt
from modeling_dino_speech.utils import atomic
from modeling_dino_speech.utils.atomic import write_folder_atomically

ROOT = Path(__file__).resolve().parents[1]
SR = 16000
TINY = dict(
    resnet_layers=[1, 1, 1, 1],
    resnet_base_width=8,
    embedding_size=16,
    dino_hidden_size=32,
    dino_bottleneck_size=8,
    dino_num_prototypes=32,
    num_labels=3,
)


# --------------------------------------------------------------------------------------------- checkpoints


@pytest.fixture
def accelerator():
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    acc = Accelerator(cpu=True)
    yield acc
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


@pytest.fixture
def trainable(accelerator):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    return model, optimizer


def _train_step(model, optimizer):
    model(torch.randn(8, 4)).pow(2).mean().backward()
    optimizer.step()
    optimizer.zero_grad()


def _snapshot(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _save(accelerator, out, step, model, keep=2):
    tensors = {f"teacher.{k}": v for k, v in model.state_dict().items()}
    return ckpt.save_checkpoint(accelerator, out, step, tensors, {"train_state": {"global_step": step}}, keep=keep)


def _os_with(**overrides):
    """The os module as utils/atomic.py (which renames checkpoints into place) sees it, with some functions
    replaced."""
    namespace = {name: getattr(os, name) for name in dir(os) if not name.startswith("__")}
    return types.SimpleNamespace(**{**namespace, **overrides})


@pytest.mark.parametrize("crash_in", ["extra tensors", "rename into place"])
def test_crash_mid_save_leaves_previous_checkpoint_usable(accelerator, trainable, tmp_path, monkeypatch, crash_in):
    model, optimizer = trainable
    _train_step(model, optimizer)
    first = _save(accelerator, tmp_path, 1, model, keep=1)
    saved_weights = _snapshot(model)
    _train_step(model, optimizer)

    def partial_save_file(tensors, filename, *args, **kwargs):
        Path(filename).write_bytes(b"\x00" * 17)  # half a file, then the process "dies"
        raise OSError("disk full")

    if crash_in == "extra tensors":  # accelerate has written model, optimiser and RNG states by then
        monkeypatch.setattr(ckpt, "save_file", partial_save_file)
    else:
        monkeypatch.setattr(atomic, "os", _os_with(replace=lambda *a, **k: (_ for _ in ()).throw(OSError("EIO"))))
    with pytest.raises(OSError):
        _save(accelerator, tmp_path, 2, model, keep=1)
    monkeypatch.undo()

    # keep=1 must not have pruned the only complete checkpoint before the new one existed
    assert ckpt.latest_checkpoint(tmp_path) == first
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == [first.name]
    leftovers = [p.name for p in ckpt.checkpoint_dir(tmp_path).iterdir() if p.name.startswith(".tmp-")]
    assert leftovers == [".tmp-checkpoint_00000002"]

    tensors, state = ckpt.load_checkpoint(accelerator, first)
    assert state["train_state"]["global_step"] == 1
    for name, value in saved_weights.items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=0, atol=0)
        torch.testing.assert_close(tensors[f"teacher.{name}"], value, rtol=0, atol=0)


def _stale_temporary(tmp_path) -> Path:
    """What a crash mid-save leaves: a hidden, incomplete folder (here even with a state file in it)."""
    stale = ckpt.checkpoint_dir(tmp_path) / ".tmp-checkpoint_00000007"
    stale.mkdir(parents=True)
    (stale / ckpt.STATE_FILE).write_text("{}")
    (stale / "model.safetensors").write_bytes(b"truncated")
    return stale


def test_leftover_temporary_checkpoint_is_ignored(accelerator, trainable, tmp_path):
    model, optimizer = trainable
    first = _save(accelerator, tmp_path, 1, model)
    _stale_temporary(tmp_path)
    assert ckpt.latest_checkpoint(tmp_path) == first
    _train_step(model, optimizer)
    second = _save(accelerator, tmp_path, 2, model)
    assert ckpt.list_checkpoints(tmp_path) == [first, second]
    _, state = ckpt.load_checkpoint(accelerator, ckpt.latest_checkpoint(tmp_path))
    assert state["train_state"]["global_step"] == 2


def test_leftover_temporary_checkpoint_is_cleaned_by_the_next_save(accelerator, trainable, tmp_path):
    model, _ = trainable
    _stale_temporary(tmp_path)
    _save(accelerator, tmp_path, 2, model)
    assert sorted(p.name for p in ckpt.checkpoint_dir(tmp_path).iterdir()) == ["checkpoint_00000002"]


def test_checkpoint_files_load_without_unpickling_code(accelerator, trainable, tmp_path):
    """accelerate writes optimiser and RNG states with torch.save and reads them back with weights_only=True,
    allowing numpy arrays (the RNG states) and nothing else: check that nothing more is needed."""
    from accelerate.utils.other import TORCH_SAFE_GLOBALS

    model, optimizer = trainable
    _train_step(model, optimizer)
    folder = _save(accelerator, tmp_path, 1, model)
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in files)
    for path in files:
        if path.suffix == ".safetensors":
            load_file(str(path))
        elif path.suffix == ".json":
            json.loads(path.read_text())
        else:
            with torch.serialization.safe_globals(TORCH_SAFE_GLOBALS):  # numpy arrays and dtypes only
                torch.load(path, weights_only=True, map_location="cpu")  # raises on anything but plain data


def _damage(folder: Path, how: str) -> str:
    """Damage a saved checkpoint as a disk, a copy or a person might; returns the file that the report names."""
    if how == "truncated":
        model = folder / "model.safetensors"
        model.write_bytes(model.read_bytes()[:-100])
        return "model.safetensors"
    if how == "bit flip":  # past the header: the file still parses, with one weight changed
        tensors = folder / ckpt.TENSORS_FILE
        data = bytearray(tensors.read_bytes())
        data[-3] ^= 0x10
        tensors.write_bytes(bytes(data))
        return ckpt.TENSORS_FILE
    if how == "bad json":
        (folder / ckpt.STATE_FILE).write_text('{"train_state": {"global_step": 2')
        return ckpt.STATE_FILE
    if how == "edited json":  # still valid JSON, another step
        state = json.loads((folder / ckpt.STATE_FILE).read_text())
        state["train_state"]["global_step"] = 3
        (folder / ckpt.STATE_FILE).write_text(json.dumps(state))
        return ckpt.STATE_FILE
    (folder / "model.safetensors").unlink()
    return "model.safetensors"


@pytest.mark.parametrize("how", ["truncated", "bit flip", "bad json", "edited json", "missing"])
def test_a_damaged_checkpoint_is_never_loaded_and_resume_falls_back(accelerator, trainable, tmp_path, how):
    model, optimizer = trainable
    _train_step(model, optimizer)
    first = _save(accelerator, tmp_path, 1, model, keep=3)
    weights = _snapshot(model)
    _train_step(model, optimizer)
    second = _save(accelerator, tmp_path, 2, model, keep=3)
    assert ckpt.verify_checkpoint(first) == ckpt.verify_checkpoint(second) == []
    named = _damage(second, how)
    problems = ckpt.verify_checkpoint(second)
    assert len(problems) == 1 and problems[0].startswith(named), problems
    if how == "missing":
        assert problems == ["model.safetensors is missing"]
    _train_step(model, optimizer)
    changed = _snapshot(model)
    with pytest.raises(ckpt.CheckpointError, match=re.escape(named)):
        ckpt.load_checkpoint(accelerator, second)
    for name, value in changed.items():  # nothing of the damaged checkpoint was loaded
        torch.testing.assert_close(model.state_dict()[name], value, rtol=0, atol=0)
    said = []
    assert ckpt.newest_intact_checkpoint(tmp_path, said.append) == first
    assert f"checkpoint_00000002 is damaged ({named}" in said[0] and "falling back to checkpoint_00000001" in said[1]
    assert ckpt.list_checkpoints(tmp_path) == [first]
    assert (ckpt.checkpoint_dir(tmp_path) / "corrupt-checkpoint_00000002").is_dir()  # kept for inspection
    ckpt.load_checkpoint(accelerator, first)
    for name, value in weights.items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=0, atol=0)


def test_no_intact_checkpoint_is_a_clear_error(accelerator, trainable, tmp_path):
    model, _ = trainable
    only = _save(accelerator, tmp_path, 1, model)
    _damage(only, "bit flip")
    with pytest.raises(ckpt.CheckpointError, match=r"no intact checkpoint .*\n  checkpoint_00000001: dino_state"):
        ckpt.newest_intact_checkpoint(tmp_path, print)
    assert ckpt.newest_intact_checkpoint(tmp_path / "elsewhere", print) is None  # no checkpoint at all


@pytest.mark.parametrize(
    "failure",
    [
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4480 vs 4372"),
        OSError(errno.ENOSPC, "No space left on device"),
    ],
    ids=["torch writer", "ENOSPC"],
)
def test_a_full_disk_is_one_clear_error_and_keeps_the_previous_checkpoint(
    accelerator, trainable, tmp_path, monkeypatch, failure
):
    model, optimizer = trainable
    first = _save(accelerator, tmp_path, 1, model)
    _train_step(model, optimizer)
    real_save_state = accelerator.save_state

    def full_disk(output_dir, **kwargs):
        real_save_state(output_dir, **kwargs)
        (Path(output_dir) / "optimizer.bin").write_bytes(b"half")
        raise failure

    monkeypatch.setattr(accelerator, "save_state", full_disk)
    with pytest.raises(ckpt.CheckpointWriteError) as caught:
        _save(accelerator, tmp_path, 2, model)
    message = str(caught.value)
    assert caught.value.errno == errno.ENOSPC and isinstance(caught.value, OSError)
    assert "no space left on device while writing checkpoint" in message and "checkpoint_00000002" in message
    assert f"previous checkpoint {first} is intact" in message
    assert sorted(p.name for p in ckpt.checkpoint_dir(tmp_path).iterdir()) == [first.name]  # staging removed
    assert ckpt.verify_checkpoint(first) == []


def test_a_half_pruned_checkpoint_is_pruned_by_the_next_save(accelerator, trainable, tmp_path):
    model, _ = trainable
    for step in (1, 2, 3):
        _save(accelerator, tmp_path, step, model, keep=3)
    # a crash while deleting checkpoint 1 (its state file went first) and one while deleting a renamed one
    (ckpt.checkpoint_path(tmp_path, 1) / ckpt.STATE_FILE).unlink()
    leftover = ckpt.checkpoint_dir(tmp_path) / ".del-checkpoint_00000000"
    leftover.mkdir()
    _save(accelerator, tmp_path, 4, model, keep=3)
    names = sorted(p.name for p in ckpt.checkpoint_dir(tmp_path).iterdir())
    assert names == ["checkpoint_00000002", "checkpoint_00000003", "checkpoint_00000004"]


def test_the_checkpoints_folder_is_flushed_after_each_rename(accelerator, trainable, tmp_path, monkeypatch):
    """Already true before #15 (utils.atomic.commit_folder flushes the target's parent): kept as a guard."""
    model, _ = trainable
    events = []
    real_replace, real_fsync = atomic.os.replace, atomic.fsync_folder
    monkeypatch.setattr(
        atomic, "os", _os_with(replace=lambda a, b: (events.append(("rename", Path(b))), real_replace(a, b)))
    )
    monkeypatch.setattr(atomic, "fsync_folder", lambda f: (events.append(("fsync", Path(f))), real_fsync(f)))
    final = _save(accelerator, tmp_path, 1, model)
    rename = events.index(("rename", final))
    assert ("fsync", final.parent) in events[rename + 1 :]


# --------------------------------------------------------------------------------------------- safety


def _python_files():
    files = sorted((ROOT / "modeling_dino_speech").rglob("*.py")) + sorted((ROOT / "eval").rglob("*.py"))
    return files + [ROOT / "train.py"]


def _unsafe_calls(path: Path) -> list:
    """`torch.load(...)` without `weights_only=True`, any `pickle.load(s)`, `np.load(..., allow_pickle=True)`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    aliases = {}  # local name -> "module.function" for `from torch import load` and friends
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("torch", "pickle", "numpy", "dill", "joblib"):
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    problems = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            name = f"{func.value.id}.{func.attr}"
        elif isinstance(func, ast.Name):
            name = aliases.get(func.id, func.id)
        else:
            continue
        name = name.replace("np.", "numpy.", 1) if name.startswith("np.") else name
        keywords = {k.arg: k.value for k in node.keywords}
        where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{node.lineno}"
        if name == "torch.load":
            flag = keywords.get("weights_only")
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                problems.append(f"{where}: torch.load without weights_only=True")
        elif name in ("pickle.load", "pickle.loads", "dill.load", "dill.loads", "joblib.load"):
            problems.append(f"{where}: {name} unpickles")
        elif name == "numpy.load":
            flag = keywords.get("allow_pickle")
            if flag is not None and not (isinstance(flag, ast.Constant) and flag.value is False):
                problems.append(f"{where}: numpy.load with allow_pickle")
    return problems


def test_scanner_catches_what_it_should(tmp_path):
    bad = tmp_path / "probe.py"
    bad.write_text(
        "import pickle, torch\nfrom torch import load\nimport numpy as np\n"
        "torch.load('a')\ntorch.load('a', weights_only=False)\nload('a')\npickle.loads(b'')\n"
        "np.load('a', allow_pickle=True)\ntorch.load('a', weights_only=True)\nnp.load('a')\n"
    )
    problems = _unsafe_calls(bad)
    assert [int(p.split(":")[1]) for p in problems] == [4, 5, 6, 7, 8], problems


def test_no_code_path_unpickles():
    problems = [p for path in _python_files() for p in _unsafe_calls(path)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("cls", [DinoSpeechModel, DinoSpeechForXVector, DinoSpeechForPreTraining])
def test_saved_models_hold_only_safetensors_weights(tmp_path, cls):
    config = DinoSpeechConfig(**TINY)
    cls(config).save_pretrained(tmp_path)
    DinoSpeechFeatureExtractor.from_model_config(config).save_pretrained(tmp_path)
    names = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert "model.safetensors" in names
    pickled = [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt", ".pickle"))]
    assert not pickled, pickled


def test_dino_export_holds_only_safetensors_weights(tmp_path):
    from modeling_dino_speech.losses import DINOLoss
    from modeling_dino_speech.training.config import DinoTrainConfig
    from modeling_dino_speech.training.export import export_dino

    config = DinoSpeechConfig(**TINY)
    student, teacher = DinoSpeechForPreTraining(config), DinoSpeechForPreTraining(config)
    cfg = DinoTrainConfig()
    cfg.model = {k: v for k, v in TINY.items() if k != "num_labels"}
    final = export_dino(
        student,
        teacher,
        DINOLoss(config.dino_num_prototypes),
        DinoSpeechFeatureExtractor.from_model_config(config),
        cfg,
        tmp_path,
        summary={"steps": 0},
    )
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert (final / "model.safetensors").is_file()
    assert {p.suffix for p in files if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt", ".pickle")} == set()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".tmp-", ".old-"))]


# --------------------------------------------------------------------------------------------- export


def test_failed_export_leaves_the_previous_export_intact(tmp_path):
    target = tmp_path / "final"

    def fill_v1(folder: Path) -> None:
        (folder / "model.safetensors").write_text("v1")

    write_folder_atomically(target, fill_v1)

    def fill_crashing(folder: Path) -> None:
        (folder / "model.safetensors").write_text("v2, half")
        raise RuntimeError("killed while writing")

    with pytest.raises(RuntimeError, match="killed"):
        write_folder_atomically(target, fill_crashing)
    assert sorted(p.name for p in target.iterdir()) == ["model.safetensors"]
    assert (target / "model.safetensors").read_text() == "v1"

    def fill_v3(folder: Path) -> None:
        (folder / "model.safetensors").write_text("v3")
        (folder / "config.json").write_text("{}")

    write_folder_atomically(target, fill_v3)
    assert (target / "model.safetensors").read_text() == "v3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]  # no .tmp-/.old- leftovers


def test_file_written_atomically_or_not_at_all(tmp_path):
    target = tmp_path / "sub" / "report.json"
    atomic.write_text_atomic(target, "v1")
    with pytest.raises(RuntimeError, match="killed"), atomic.atomic_path(target) as tmp:
        tmp.write_text("v2, half")
        raise RuntimeError("killed while writing")
    assert target.read_text() == "v1"
    atomic.write_bytes_atomic(target, b"v3")
    assert target.read_bytes() == b"v3"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.json"]  # no temporary left behind


# --------------------------------------------------------------------------------------------- data


def _write_corpus(folder: Path, n: int = 10) -> list:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"utt{i:02d}.wav"
        sf.write(path, (0.1 * rng.standard_normal(int(SR * rng.uniform(1.0, 1.5)))).astype(np.float32), SR)
        paths.append(path)
    return paths


@pytest.fixture
def rotten_manifest(tmp_path):
    """A manifest read while every file was fine; then one file vanished and another got corrupted."""
    from modeling_dino_speech.data.corpora import load_manifest

    paths = _write_corpus(tmp_path)
    manifest = tmp_path / "train.csv"
    manifest.write_text("path,speaker,duration\n" + "".join(f"{p.name},s{i % 2},\n" for i, p in enumerate(paths)))
    dataset = load_manifest(manifest)
    assert len(dataset) == 10
    paths[3].unlink()
    paths[7].write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00garbage")
    return dataset, paths


CROPS = dict(n_global=2, global_seconds=0.5, n_local=2, local_seconds=0.25)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_epoch_with_vanished_and_corrupt_files_skips_and_counts(rotten_manifest, num_workers):
    from modeling_dino_speech.data.multicrop import MultiCropConfig, build_multicrop_dataloader

    dataset, _ = rotten_manifest
    loader = build_multicrop_dataloader(
        dataset,
        MultiCropConfig(on_error="skip", **CROPS),
        None,
        DinoSpeechFeatureExtractor(),
        batch_size=5,
        num_workers=num_workers,
        drop_last=False,
    )
    batches = list(loader)
    assert len(batches) == 2
    assert sum(int(b["num_skipped"]) for b in batches) == 2
    delivered = sorted(i for b in batches for i in b["index"].tolist())
    assert delivered == [0, 1, 2, 4, 5, 6, 8, 9]
    for b in batches:
        assert b["global_features"].shape[:2] == (2, len(b["index"]))
        assert torch.isfinite(b["global_features"]).all()


def test_epoch_with_a_bad_file_fails_naming_it_when_asked(rotten_manifest):
    from modeling_dino_speech.data.multicrop import MultiCropConfig, build_multicrop_dataloader

    dataset, paths = rotten_manifest
    keep = [i for i in range(10) if i != 3]  # only the corrupt file left
    loader = build_multicrop_dataloader(
        dataset.select(keep),
        MultiCropConfig(on_error="fail", **CROPS),
        None,
        DinoSpeechFeatureExtractor(),
        batch_size=9,
        num_workers=0,
    )
    with pytest.raises(Exception, match=paths[7].name):
        list(loader)
    missing = build_multicrop_dataloader(
        dataset.select([0, 3]),
        MultiCropConfig(on_error="fail", **CROPS),
        None,
        DinoSpeechFeatureExtractor(),
        batch_size=2,
        num_workers=0,
    )
    with pytest.raises(Exception, match=paths[3].name):
        list(missing)


@pytest.mark.parametrize("duration", ["-1.5", "nan", "inf", "0"])
def test_a_manifest_duration_that_is_not_a_positive_number_is_named_or_skipped(tmp_path, caplog, duration):
    from modeling_dino_speech.data.corpora import load_manifest

    paths = _write_corpus(tmp_path, n=3)
    manifest = tmp_path / "train.csv"
    rows = [f"{p.name},s{i},{duration if i == 1 else '1.2'}" for i, p in enumerate(paths)]
    manifest.write_text("path,speaker,duration\n" + "\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=rf"train\.csv:3: duration '{duration}' is not a positive number"):
        load_manifest(manifest)
    dataset = load_manifest(manifest, on_error="skip")
    assert dataset["path"] == [str(paths[0]), str(paths[2])]
    assert "train.csv:3" in caplog.text


def test_a_symlink_loop_is_reported_as_one(tmp_path):
    from modeling_dino_speech.data.audio import AudioError, load_audio
    from modeling_dino_speech.data.corpora import load_audio_folder, load_manifest

    good = _write_corpus(tmp_path, n=1)[0]
    (tmp_path / "loop_a.wav").symlink_to(tmp_path / "loop_b.wav")
    (tmp_path / "loop_b.wav").symlink_to(tmp_path / "loop_a.wav")
    (tmp_path / "dangling.wav").symlink_to(tmp_path / "gone.wav")
    with pytest.raises(AudioError, match="symlink loop"):
        load_audio(tmp_path / "loop_a.wav", SR)
    with pytest.raises(AudioError, match="broken symlink .*gone.wav"):
        load_audio(tmp_path / "dangling.wav", SR)
    manifest = tmp_path / "train.csv"
    manifest.write_text(f"path,speaker\n{good.name},s\nloop_a.wav,s\ndangling.wav,s\n")
    with pytest.raises(FileNotFoundError, match=r"(?s)loop_a\.wav \(symlink loop.*dangling\.wav \(broken symlink"):
        load_manifest(manifest)
    (tmp_path / "dir_loop").symlink_to(tmp_path / "dir_loop")
    with pytest.raises(FileNotFoundError, match="symlink loop"):
        load_audio_folder(tmp_path / "dir_loop")
    with pytest.raises(FileNotFoundError, match="manifest: symlink loop"):
        load_manifest(tmp_path / "dir_loop")


# --------------------------------------------------------------------------------------------- fast paths


@pytest.mark.parametrize("kind", ["resnet", "ecapa_tdnn"])
def test_fast_inference_paths_match_the_plain_computation(kind):
    """The no-padding fast path, channels-last activations and eval-mode conv+BN folding change no result."""
    torch.manual_seed(0)
    extra = (
        dict(
            backbone="ecapa_tdnn",
            ecapa_channels=32,
            ecapa_mfa_channels=96,
            pooling="attentive_statistics",
            attention_channels=8,
        )
        if kind == "ecapa_tdnn"
        else {}
    )
    model = DinoSpeechModel(DinoSpeechConfig(**{**TINY, **extra})).eval()
    for m in model.modules():  # running statistics away from (0, 1), so folding them is exercised
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(3, 57, 80)
    with torch.no_grad():
        fast = model(x).embeddings
        ones = model(x, torch.ones(3, 57, dtype=torch.long)).embeddings
        # padding one extra (garbage) frame forces the masked path everywhere
        padded = torch.cat([x, 1e3 * torch.ones(3, 1, 80)], dim=1)
        mask = torch.ones(3, 58, dtype=torch.long)
        mask[:, -1] = 0
        masked = model(padded, mask).embeddings
        torch.testing.assert_close(fast, ones, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fast, masked, atol=1e-4, rtol=1e-4)
        if kind == "resnet":
            model.backbone.channels_last = False
            torch.testing.assert_close(model(x).embeddings, fast, atol=1e-5, rtol=1e-5)
            # train-mode BatchNorm with momentum 0 normalises with batch statistics: no folding there
            model.train()
            for m in model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.momentum = 0.0
            a = model(x).embeddings
            model.backbone.channels_last = True
            torch.testing.assert_close(model(x).embeddings, a, atol=1e-4, rtol=1e-4)


def test_export_recovers_from_a_crash_between_its_two_renames(tmp_path):
    target = tmp_path / "final"
    (tmp_path / ".old-final").mkdir()
    (tmp_path / ".old-final" / "model.safetensors").write_bytes(b"previous")

    def fail(folder):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_folder_atomically(target, fail)
    assert (target / "model.safetensors").read_bytes() == b"previous"


def test_resume_takes_a_relative_and_an_absolute_path_to_the_same_file_as_the_same_recipe(tmp_path, monkeypatch):
    from modeling_dino_speech.training.config import DataConfig, DinoTrainConfig, to_dict
    from modeling_dino_speech.training.dino import check_resume_recipe

    def recipe(train: str) -> DinoTrainConfig:
        return DinoTrainConfig(data=DataConfig(train=train))

    (tmp_path / "data").mkdir()
    for name in ("train.csv", "other.csv"):
        (tmp_path / "data" / name).write_text("path\n")
    monkeypatch.chdir(tmp_path)
    recorded = to_dict(recipe("data/train.csv"))
    check_resume_recipe(recorded, recipe(str(tmp_path / "data" / "train.csv")), tmp_path)
    for changed in (str(tmp_path / "data" / "other.csv"), str(tmp_path / "data" / "gone.csv")):
        with pytest.raises(ValueError, match="data.train: 'data/train.csv' ->"):
            check_resume_recipe(recorded, recipe(changed), tmp_path)
