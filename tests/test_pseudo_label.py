"""End to end: `train.py pseudo-label` runs rounds of embed -> cluster -> AAM-softmax training, stops cleanly on
Ctrl-C and resumes by round; its recipe takes the `data` section of a DINO recipe."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from helpers import make_corpus, write_trials

from modeling_dino_speech.training.config import from_dict, load_config
from modeling_dino_speech.training.pseudo_label import PseudoLabelConfig

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "pseudo_label_demo.yaml"


def tiny_dino_export(folder: Path) -> Path:
    """A randomly initialised model saved the way a DINO run exports its teacher."""
    from modeling_dino_speech import DinoSpeechConfig, DinoSpeechFeatureExtractor, DinoSpeechModel

    torch.manual_seed(0)
    config = DinoSpeechConfig(
        backbone="ecapa_tdnn",
        ecapa_channels=32,
        ecapa_mfa_channels=64,
        ecapa_se_channels=16,
        pooling="attentive_statistics",
        attention_channels=16,
        embedding_size=32,
    )
    DinoSpeechModel(config).save_pretrained(folder)
    DinoSpeechFeatureExtractor.from_model_config(config).save_pretrained(folder)
    return folder


def pseudo_label_command(manifest: Path, init: Path, out: Path, *extra: str) -> list:
    return [
        sys.executable,
        str(ROOT / "train.py"),
        "pseudo-label",
        "--config",
        str(RECIPE),
        "--init",
        str(init),
        "--output_dir",
        str(out),
        f"data.train={manifest}",
        "data.augment.musan_root=null",
        "data.num_workers=0",
        "clustering.n_clusters=4",
        "clustering.min_cluster_size=2",
        "clustering.max_cluster_size=20",
        "clustering.kmeans_samples_per_cluster=2",
        "supervised.head_steps=3",
        "supervised.steps=6",
        "supervised.batch_size=8",
        "supervised.warmup_steps=2",
        "supervised.margin_warmup_steps=4",
        "supervised.crop_seconds=1.0",
        "log_every=2",
        "mixed_precision=no",
        # The rounds' mechanics on a tiny untrained model: the demo's partial whitening, chosen for trained
        # embeddings, leaves its four voices in three clusters of two or more.
        "export.whitening_power=0.5",
        *extra,
    ]


ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


@pytest.mark.slow
def test_two_rounds_from_a_dino_export(tmp_path):
    from transformers import AutoModel, AutoModelForAudioXVector

    import modeling_dino_speech  # noqa: F401

    manifest = make_corpus(tmp_path / "corpus", speakers=4, per_speaker=8, seconds=(1.2, 2.0))
    trials = write_trials(tmp_path / "corpus", manifest, tmp_path / "corpus" / "trials.txt")
    init = tiny_dino_export(tmp_path / "dino_final")
    out = tmp_path / "pl"
    args = pseudo_label_command(
        manifest, init, out, "rounds=2", f"eval.trials={trials}", f"eval.audio_root={tmp_path / 'corpus'}"
    )
    result = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    for r in (1, 2):
        round_dir = out / f"round_{r}"
        report = json.loads((round_dir / "report.json").read_text())
        assert report["clusters"] == 4
        assert 0 < report["kept_fraction"] <= 1
        assert report["mixed_precision"] == "no"  # the precision the round trained in, as resolved
        for key in ("purity", "nmi", "ari", "eer"):
            assert key in report, key
        clustering = json.loads((round_dir / "clustering_report.json").read_text())
        assert clustering["n_clusters"] == 4
        # a target count (clustering.n_clusters) ignores the threshold: none is reported
        assert report["similarity_threshold"] is None and "similarity_threshold" not in clustering["stages"]
        assert (round_dir / "embeddings.npy").exists() and (round_dir / "pseudo_labels.csv").exists()
        xvector = AutoModelForAudioXVector.from_pretrained(round_dir / "final")
        assert xvector.config.num_labels == 4
        base = AutoModel.from_pretrained(round_dir / "final")
        assert type(base).__name__ == "DinoSpeechModel"
        torch.testing.assert_close(base.embedding.weight, xvector.dino_speech.embedding.weight)
    # the second round starts from the first round's model
    assert "round_1/final" in (out / "round_2" / "final" / "README.md").read_text()


@pytest.mark.slow
def test_rounds_without_training_store_a_within_class_whitening_of_their_clusters(tmp_path):
    from modeling_dino_speech import DinoSpeechModel

    manifest = make_corpus(tmp_path / "corpus", speakers=4, per_speaker=8, seconds=(1.2, 2.0))
    init = tiny_dino_export(tmp_path / "dino_final")
    out = tmp_path / "pl"
    args = pseudo_label_command(
        manifest,
        init,
        out,
        "rounds=2",
        "eval.trials=null",
        "supervised.head_steps=0",
        "supervised.steps=0",
        "within_class_whitening=0.1",
    )
    result = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "AAM-softmax" not in result.stderr  # no round trained
    dino = DinoSpeechModel.from_pretrained(init)
    for r in (1, 2):
        report = json.loads((out / f"round_{r}" / "report.json").read_text())
        assert report["within_class_whitening"] == 0.1 and report["within_class_classes"] == 4
        assert report["within_class_utterances"] == round(report["kept_fraction"] * 32)
        assert "train_loss" not in report or report["train_loss"] is None
        assert (
            "(no training, within-class whitening on the clusters)"
            in (out / f"round_{r}" / "final" / "README.md").read_text()
        )
        final = json.loads((out / f"round_{r}" / "final" / "config.json").read_text())
        assert final["architectures"] == ["DinoSpeechModel"]  # no classifier was trained, none is exported
        model = DinoSpeechModel.from_pretrained(out / f"round_{r}" / "final")
        # the network is the DINO export's; only the stored whitening differs from a PCA whitening
        torch.testing.assert_close(model.embedding.weight, dino.embedding.weight)
        transform = model.whitening.transform
        assert not torch.allclose(transform @ transform.T, torch.diag(torch.diagonal(transform @ transform.T)))


def test_within_class_whitening_needs_the_pca_whitening():
    with pytest.raises(ValueError, match="export.whitening"):
        from_dict(PseudoLabelConfig, {"within_class_whitening": 0.1, "export": {"whitening": False}})
    with pytest.raises(ValueError, match="within_class_whitening"):
        from_dict(PseudoLabelConfig, {"within_class_whitening": 2.0, "export": {"whitening": True}})


@pytest.mark.slow
def test_ctrl_c_stops_after_a_step_and_resume_does_the_round_again(tmp_path):
    manifest = make_corpus(tmp_path / "corpus", speakers=4, per_speaker=8, seconds=(1.2, 2.0))
    init = tiny_dino_export(tmp_path / "dino_final")
    out = tmp_path / "pl"
    once = ("rounds=1", "eval.trials=null")
    endless = pseudo_label_command(manifest, init, out, *once, "supervised.steps=100000", "log_every=1")
    proc = subprocess.Popen(endless, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    chunks = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: proc.stdout.read1(4096), b"")), daemon=True)
    reader.start()
    # the progress bar shows the accuracy once the AAM-softmax training has taken a step
    deadline = time.time() + 600
    while time.time() < deadline and b"acc=" not in b"".join(chunks) and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=300)
    reader.join(timeout=60)
    output = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 130, output[-4000:]
    assert "SIGINT: stopping after the step in progress" in output
    assert "interrupted at step" in output and "AAM-softmax training" in output
    assert "interrupted: run the same command with --resume to continue from the last finished round" in output
    assert "Traceback" not in output
    round_dir = out / "round_1"
    assert not (round_dir / "final").exists() and not (round_dir / "report.json").exists()
    assert not [p.name for p in round_dir.iterdir() if p.name.startswith(".")], "temporary files left behind"

    resumed = subprocess.run(
        pseudo_label_command(manifest, init, out, *once, "--resume"),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "reusing" not in resumed.stdout  # the interrupted round is done again, not taken as finished
    assert json.loads((round_dir / "report.json").read_text())["clusters"] == 4
    assert (round_dir / "final" / "config.json").exists()


def test_recipe_takes_the_dino_data_section():
    cfg = load_config(PseudoLabelConfig, RECIPE, ["data.train=pool.csv", "data.augment.musan_root=null"])
    assert cfg.data.train == "pool.csv" and cfg.data.corpus == "manifest" and cfg.data.augment.musan_root is None
    # a bare leaf still names its setting when unambiguous
    assert load_config(PseudoLabelConfig, RECIPE, ["num_workers=3"]).data.num_workers == 3
    with pytest.raises(ValueError, match="'augment.musan_root': no such setting"):
        load_config(PseudoLabelConfig, None, ["augment.musan_root=/data/musan"])
    with pytest.raises(ValueError, match="unknown key.*'train'"):
        from_dict(PseudoLabelConfig, {"train": "pool.csv"})
    # the crops' file policies are used (on the AAM-softmax crops and the pool)
    cfg = load_config(PseudoLabelConfig, RECIPE, ["data.crops.on_error=fail", "data.crops.min_duration=1.0"])
    assert cfg.data.crops.on_error == "fail" and cfg.data.crops.min_duration == 1.0


@pytest.mark.parametrize(
    "setting, hint",
    [
        ("data.batch_size=64", "supervised.batch_size"),
        ("data.streaming=true", "map-style"),
        ("data.crops.global_seconds=2.0", "supervised.crop_seconds"),
        ("data.crops.n_local=2", "no local crops"),
        ("data.crops.speed=[0.9,1.1]", "new voices"),
    ],
)
def test_recipe_refuses_data_settings_it_would_ignore(setting, hint):
    with pytest.raises(ValueError, match=f"does not use data.{setting.split('=')[0][5:]}=.*{hint}"):
        load_config(PseudoLabelConfig, RECIPE, [setting])


def test_dino_weight_makes_the_export_a_weight_space_ensemble_with_the_dino_export(tmp_path):
    from modeling_dino_speech import DinoSpeechModel
    from modeling_dino_speech.training.pseudo_label import ensemble_with_dino

    init = tiny_dino_export(tmp_path / "dino_final")
    dino = DinoSpeechModel.from_pretrained(init)
    # the DINO export's whitening is not part of the network the round trained
    dino.set_embedding_whitening(torch.randn(32), torch.randn(32, 32))
    dino.save_pretrained(init)
    torch.manual_seed(1)
    trained = DinoSpeechModel(dino.config.__class__(**{**dino.config.to_dict(), "embedding_whitening": False}))
    for buffer in trained.buffers():  # BatchNorm statistics that differ from the export's
        if buffer.dtype.is_floating_point:
            buffer.uniform_(0.5, 1.5)
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    reference = DinoSpeechModel.from_pretrained(init).state_dict()
    ensemble_with_dino(trained, init, 0.25)
    after = trained.state_dict()
    assert set(after) == set(before) and not any(k.startswith("whitening.") for k in after)
    for key, value in after.items():
        if value.dtype.is_floating_point:
            torch.testing.assert_close(value, 0.75 * before[key] + 0.25 * reference[key])
    assert trained.whitening is None


def test_dino_weight_refuses_an_export_of_another_network_and_a_share_of_one(tmp_path):
    from modeling_dino_speech import DinoSpeechConfig, DinoSpeechModel
    from modeling_dino_speech.training.pseudo_label import ensemble_with_dino

    init = tiny_dino_export(tmp_path / "dino_final")
    wider = DinoSpeechConfig(**{**DinoSpeechConfig.from_pretrained(init).to_dict(), "ecapa_channels": 48})
    other = DinoSpeechModel(wider)  # the same parameter names, other shapes
    with pytest.raises(ValueError, match=r"the DINO export .*dino_final does not have this network.*\(48, "):
        ensemble_with_dino(other, init, 0.5)
    with pytest.raises(ValueError, match="dino_weight"):
        load_config(PseudoLabelConfig, RECIPE, ["dino_weight=1.0"])


def test_restart_from_dino_trains_later_rounds_from_the_dino_export(tmp_path):
    from modeling_dino_speech import DinoSpeechModel
    from modeling_dino_speech.training.pseudo_label import starting_weights

    init = tiny_dino_export(tmp_path / "dino_final")
    dino = DinoSpeechModel.from_pretrained(init)
    torch.manual_seed(3)
    previous = DinoSpeechModel(dino.config)  # stands in for round 1's export
    previous.set_embedding_whitening(torch.zeros(32), torch.eye(32))
    current = tmp_path / "round_1" / "final"
    for restart, round_index, expected, folder in [
        (False, 2, previous, current),
        (True, 1, previous, current),  # round 1's current model is the DINO export itself
        (True, 2, dino, init),
    ]:
        cfg = from_dict(PseudoLabelConfig, {"init": str(init), "restart_from_dino": restart})
        start, weights = starting_weights(cfg, round_index, current, previous)
        assert start == folder, (restart, round_index)
        assert not any(k.startswith("whitening.") for k in weights)
        reference = expected.state_dict()
        assert all(torch.equal(v, reference[k]) for k, v in weights.items()), (restart, round_index)


@pytest.mark.slow
def test_dino_anchor_holds_the_round_near_the_dino_export_on_the_whole_pool(tmp_path):
    import csv

    import numpy as np

    from modeling_dino_speech import DinoSpeechFeatureExtractor, DinoSpeechModel
    from modeling_dino_speech.inference import embed_files

    manifest = make_corpus(tmp_path / "corpus", speakers=4, per_speaker=8, seconds=(1.2, 2.0))
    init = tiny_dino_export(tmp_path / "dino_final")
    with open(manifest, newline="") as handle:
        paths = [str(manifest.parent / row["path"]) for row in csv.DictReader(handle)]
    fe = DinoSpeechFeatureExtractor.from_pretrained(init)

    def embed(folder: Path) -> np.ndarray:
        values = embed_files(DinoSpeechModel.from_pretrained(folder).eval(), fe, paths, progress=False)
        return values / np.linalg.norm(values, axis=1, keepdims=True)

    dino = embed(init)
    similarity = {}
    for weight in (0.0, 100.0):
        out = tmp_path / f"anchor_{weight:g}"
        args = pseudo_label_command(
            manifest,
            init,
            out,
            "rounds=1",
            "dino_weight=0.0",
            "export.whitening=false",
            "within_class_whitening=null",
            "eval.trials=null",
            "supervised.lr=0.01",
            f"supervised.dino_anchor_weight={weight}",
            "supervised.anchor_batch_size=4",
        )
        result = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-4000:]
        report = json.loads((out / "round_1" / "report.json").read_text())
        assert ("train_anchor" in report) == (weight > 0)
        similarity[weight] = float(np.mean(np.sum(embed(out / "round_1" / "final") * dino, axis=1)))
    # the AAM-softmax steps move the network; the anchor keeps every file's embedding close to DINO's
    assert similarity[100.0] > similarity[0.0] + 0.02, similarity
