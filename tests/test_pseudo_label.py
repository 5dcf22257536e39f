"""End to end: `train.py pseudo-label` runs rounds of embed -> cluster -> AAM-softmax training."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import make_corpus, write_trials

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_rounds_from_a_dino_export(tmp_path):
    from transformers import AutoModel, AutoModelForAudioXVector

    import modeling_dino_speech  # noqa: F401
    from modeling_dino_speech import DinoSpeechConfig, DinoSpeechFeatureExtractor, DinoSpeechModel

    manifest = make_corpus(tmp_path / "corpus", speakers=4, per_speaker=8, seconds=(1.2, 2.0))
    trials = write_trials(tmp_path / "corpus", manifest, tmp_path / "corpus" / "trials.txt")
    init = tmp_path / "dino_final"
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
    DinoSpeechModel(config).save_pretrained(init)
    DinoSpeechFeatureExtractor.from_model_config(config).save_pretrained(init)
    out = tmp_path / "pl"
    args = [
        sys.executable,
        str(ROOT / "train.py"),
        "pseudo-label",
        "--config",
        str(ROOT / "configs" / "pseudo_label_demo.yaml"),
        "--init",
        str(init),
        "--output_dir",
        str(out),
        f"train={manifest}",
        "rounds=2",
        "augment.musan_root=null",
        "num_workers=0",
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
        f"eval.trials={trials}",
        f"eval.audio_root={tmp_path / 'corpus'}",
        "mixed_precision=no",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    for r in (1, 2):
        round_dir = out / f"round_{r}"
        report = json.loads((round_dir / "report.json").read_text())
        assert report["clusters"] == 4
        assert 0 < report["kept_fraction"] <= 1
        for key in ("purity", "nmi", "ari", "eer"):
            assert key in report, key
        clustering = json.loads((round_dir / "clustering_report.json").read_text())
        assert clustering["n_clusters"] == 4
        assert (round_dir / "embeddings.npy").exists() and (round_dir / "pseudo_labels.csv").exists()
        xvector = AutoModelForAudioXVector.from_pretrained(round_dir / "final")
        assert xvector.config.num_labels == 4
        base = AutoModel.from_pretrained(round_dir / "final")
        assert type(base).__name__ == "DinoSpeechModel"
        torch.testing.assert_close(base.embedding.weight, xvector.dino_speech.embedding.weight)
    # the second round starts from the first round's model
    assert "round_1/final" in (out / "round_2" / "final" / "README.md").read_text()
