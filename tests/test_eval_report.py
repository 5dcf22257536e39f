"""model_card: the filled model card is valid Hub metadata (YAML with a model-index) carrying the numbers."""

import json

import pytest
import yaml

from modeling_dino_speech.model_card import TEMPLATE, main, merge_results, results_table, write_model_card

VERIFY = {
    "model": "runs/demo/dino/final",
    "speaker_verification": {
        "trials_real_crosslang": {
            "eer": 38.125,
            "min_dcf_0.01": 0.9731,
            "min_dcf_0.05": 0.8812,
            "num_trials": 1200,
            "num_targets": 200,
            "num_nontargets": 1000,
        },
        "veri_test2": {
            "eer": 4.3812,
            "min_dcf_0.01": 0.4123,
            "min_dcf_0.05": 0.2811,
            "num_trials": 37611,
            "as_norm": {
                "eer": 4.0107,
                "min_dcf_0.01": 0.3811,
                "min_dcf_0.05": 0.2533,
                "cohort_size": 2000,
                "top_k": 300,
            },
        },
    },
}
EMOTION = {
    "model": "runs/demo/dino/final",
    "emotion_recognition": {
        "iemocap": {
            "micro_f1": 60.87,
            "macro_f1": 58.2,
            "unweighted_accuracy": 59.1,
            "num_utterances": 5531,
            "protocol": "4 classes, leave-one-session-out (5 folds)",
            "classifier": "logreg",
        }
    },
}


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


@pytest.fixture
def results_files(tmp_path):
    plot = tmp_path / "vox_det.png"
    plot.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 100)
    (tmp_path / "vox.json").write_text(json.dumps({**VERIFY, "plots": {"det": str(plot)}}))
    (tmp_path / "emo.json").write_text(json.dumps(EMOTION))
    return tmp_path / "vox.json", tmp_path / "emo.json"


def test_card_metadata_holds_the_numbers(results_files, tmp_path):
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"model_type": "dino_speech", "backbone": "resnet", "embedding_size": 256})
    )
    path = write_model_card(
        folder, title="DINO LResNet34", training={"method": "DINO", "steps": 1000}, results=list(results_files)
    )
    text = path.read_text()
    meta = _front_matter(text)
    assert meta["library_name"] == "transformers" and meta["license"] == "apache-2.0"
    assert "speaker-verification" in meta["tags"] and "emotion-recognition" in meta["tags"]
    assert set(meta["datasets"]) == {"voxceleb", "dino-speech-demo", "iemocap"}
    (index,) = meta["model-index"]
    assert index["name"] == "DINO LResNet34"
    values = {(r["dataset"]["name"], m["name"]): m["value"] for r in index["results"] for m in r["metrics"]}
    assert values[("VoxCeleb1-O (cleaned)", "EER (%)")] == 4.3812
    assert values[("VoxCeleb1-O (cleaned)", "EER (%) AS-norm")] == 4.0107
    assert values[("VoxCeleb1-O (cleaned)", "minDCF (p_target=0.01)")] == 0.4123
    assert values[("demo: Asterisk voices, cross-language", "minDCF (p_target=0.05)")] == 0.8812
    assert values[("IEMOCAP", "micro-F1 (%)")] == 60.87
    tasks = {r["task"]["type"] for r in index["results"]}
    assert tasks == {"speaker-verification", "audio-classification"}
    # The body: tables with the same numbers, the copied plot, the training summary, the model config.
    assert "| VoxCeleb1-O (cleaned) | 37,611 | 4.38 | 0.4123 | 0.2811 |" in text
    assert "| IEMOCAP | 4 classes, leave-one-session-out (5 folds) | 5,531 | 60.87 |" in text
    assert "![det](eval/vox_det.png)" in text and (folder / "eval" / "vox_det.png").is_file()
    assert "| steps | 1000 |" in text and "| backbone | resnet |" in text
    assert "{{" not in text and "{#" not in text
    # huggingface_hub reads it back.
    from huggingface_hub import ModelCard

    card = ModelCard.load(path)
    assert any(r.metric_value == 60.87 for r in card.data.eval_results)


def test_card_without_results_as_training_export_writes_it(tmp_path):
    path = write_model_card(tmp_path, title="DINO speech embeddings", training={"method": "DINO"}, results={})
    meta = _front_matter(path.read_text())
    assert "model-index" not in meta and meta["library_name"] == "transformers"
    assert "No evaluation results were recorded" in path.read_text()


def test_cli_card_and_comparison_table(results_files, tmp_path, capsys):
    vox, emo = results_files
    folder = tmp_path / "ckpt"
    folder.mkdir()
    assert main(["--model", str(folder), "--results", str(vox), str(emo), "--dataset", "voxceleb2"]) == 0
    assert _front_matter((folder / "README.md").read_text())["datasets"] == ["voxceleb2"]
    capsys.readouterr()

    fbank = tmp_path / "fbank.json"
    fbank.write_text(
        json.dumps(
            {
                "model": "fbank-stats",
                "speaker_verification": {
                    "trials_real_crosslang": {"eer": 55.0, "min_dcf_0.01": 1.0, "min_dcf_0.05": 1.0, "num_trials": 1200}
                },
            }
        )
    )
    table_file = tmp_path / "table.md"
    assert main(["--compare", f"DINO={vox},{emo}", f"fbank stats={fbank}", "--out", str(table_file)]) == 0
    table = table_file.read_text().splitlines()
    assert table[0].startswith(
        "| system | demo: Asterisk voices, cross-language EER (%) | VoxCeleb1-O (cleaned) EER (%)"
    )
    assert table[2] == "| DINO | 38.12 | 4.38 | 0.9731 | 0.4123 | 60.87 |"
    assert table[3] == "| fbank stats | 55.00 |  | 1.0000 |  |  |"
    assert results_table({"x": merge_results([vox])}).count("\n") == 2


def test_results_table_measures_and_intervals():
    results = {
        "speaker_verification": {
            "trials_real_new": {"eer": 9.94, "eer_ci95": [6.21, 13.04], "min_dcf_0.01": 0.6238},
            "trials_synth": {"eer": 7.1, "min_dcf_0.01": 0.733},
        },
        "emotion_recognition": {"demo": {"micro_f1": 31.77}},
    }
    eer = results_table({"DINO": results}, measures=("eer", "micro_f1")).splitlines()
    assert eer[0] == (
        "| system | demo: held-out real voices EER (%) | demo: held-out synthetic voices EER (%) | "
        "demo: prosody-style stand-in micro-F1 (%) |"
    )
    assert eer[2] == "| DINO | 9.94 [6.2, 13.0] | 7.10 | 31.77 |"
    assert results_table({"DINO": results}, measures=("min_dcf_0.01",)).splitlines()[2] == "| DINO | 0.6238 | 0.7330 |"
    with pytest.raises(ValueError, match="unknown measure 'auc'"):
        results_table({"DINO": results}, measures=("auc",))


def test_bad_results_are_clear_errors(tmp_path):
    (tmp_path / "other.json").write_text(json.dumps({"loss": 1.0}))
    with pytest.raises(ValueError, match="no 'speaker_verification' or 'emotion_recognition'"):
        merge_results([tmp_path / "other.json"])
    with pytest.raises(FileNotFoundError, match="results file does not exist"):
        merge_results([tmp_path / "none.json"])
    with pytest.raises(FileNotFoundError, match="checkpoint folder does not exist"):
        write_model_card(tmp_path / "nowhere")


def test_template_is_the_repository_card():
    assert TEMPLATE.name == "model_card.md" and TEMPLATE.is_file()
    assert "{{ card_data }}" in TEMPLATE.read_text()


def _lists(*names):
    return {
        "speaker_verification": {
            n: {"eer": 1.0 + i, "min_dcf_0.01": 0.1, "min_dcf_0.05": 0.05, "num_trials": 100, "eer_threshold": 0.5}
            for i, n in enumerate(names)
        }
    }


def test_each_trial_list_is_its_own_model_index_entry(tmp_path):
    results = _lists("veri_test2", "list_test_all2", "list_test_hard2", "trials_real", "trials_real_crosslang")
    results["speaker_verification"]["trials_synth"] = _lists("x")["speaker_verification"]["x"]
    meta = _front_matter(write_model_card(tmp_path, results=results).read_text())
    (index,) = meta["model-index"]
    entries = {(r["dataset"]["name"], r["dataset"]["config"]): r for r in index["results"]}
    assert set(entries) == {
        ("VoxCeleb1-O (cleaned)", "veri_test2"),
        ("VoxCeleb1-E (cleaned)", "list_test_all2"),
        ("VoxCeleb1-H (cleaned)", "list_test_hard2"),
        ("demo: Asterisk voices", "trials_real"),
        ("demo: Asterisk voices, cross-language", "trials_real_crosslang"),
        ("demo: held-out synthetic voices", "trials_synth"),
    }
    eers = {key: [m["value"] for m in r["metrics"] if m["type"] == "eer"] for key, r in entries.items()}
    assert eers[("demo: Asterisk voices, cross-language", "trials_real_crosslang")] == [5.0]


def test_cards_describe_their_own_backbone_and_method(tmp_path):
    ecapa = tmp_path / "ecapa"
    ecapa.mkdir()
    (ecapa / "config.json").write_text(
        json.dumps(
            {
                "model_type": "dino_speech",
                "architectures": ["DinoSpeechForXVector"],
                "backbone": "ecapa_tdnn",
                "ecapa_channels": 128,
                "resnet_layers": [3, 4, 6, 3],
                "resnet_base_width": 16,
                "pooling": "attentive_statistics",
                "attention_channels": 64,
                "num_labels": 46,
            }
        )
    )
    summary = {"method": "DINO then iterative pseudo-labelling (AAM-softmax)", "round": 2, "clusters": 46}
    text = write_model_card(ecapa, title="round 2", training=summary).read_text()
    assert "| ecapa_channels | 128 |" in text and "| attention_channels | 64 |" in text
    assert "resnet" not in text.split("## Model")[1].split("## Training")[0]
    assert "iterative pseudo-labelling" in text and "(round 2, 46 clusters)" in text
    assert "teacher" not in text.split("## Results")[0]
    assert "| classes (AAM-softmax) | 46 |" in text
    dino = write_model_card(tmp_path, training={"method": "DINO (self-distillation, no labels)"}).read_text()
    assert "The embeddings are those of the teacher network" in dino


@pytest.mark.parametrize("layer", ["embedding", "pooled"])
def test_card_states_the_dimensions_of_the_embeddings_the_model_gives(tmp_path, tiny_config, layer):
    from modeling_dino_speech import DinoSpeechConfig, DinoSpeechModel

    model = DinoSpeechModel(DinoSpeechConfig(**{**tiny_config.to_dict(), "embedding_layer": layer}))
    model.save_pretrained(tmp_path)
    text = write_model_card(tmp_path, training={"method": "DINO (self-distillation, no labels)"}).read_text()
    assert f"| embedding_layer | {layer} |" in text
    assert f"| embedding dimensions | {model.output_size} |" in text


def test_training_card_shows_its_calibration_and_the_evaluations_made_while_training(tmp_path):
    from modeling_dino_speech.calibration import calibrate_checkpoint, read_calibration

    folder = tmp_path / "final"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "dino_speech", "backbone": "resnet"}))
    (folder / "training_summary.json").write_text(json.dumps({"method": "DINO (self-distillation, no labels)"}))
    write_model_card(folder, title="DINO speech embeddings", training={"method": "DINO"})
    assert "records no calibrated threshold" in (folder / "README.md").read_text()
    metrics_file = tmp_path / "metrics.jsonl"
    metrics_file.write_text(
        json.dumps({"step": 10, "loss": 3.0})
        + "\n"
        + json.dumps({"step": 100, "eval/eer": 26.2, "eval/eer_threshold": 0.77, "eval/min_dcf_0.01": 0.967})
        + "\n"
        + json.dumps({"step": 300, "eval/eer": 11.8, "eval/eer_threshold": 0.81, "eval/min_dcf_0.01": 0.837})
        + "\n"
        + '{"step": 301, "eval/eer": 1'  # a line cut short by a crash
    )
    metrics = {
        "eer": 11.8,
        "eer_threshold": 0.8146,
        "min_dcf_0.01": 0.837,
        "min_dcf_0.01_threshold": 0.98,
        "min_dcf_0.05": 0.648,
        "min_dcf_0.05_threshold": 0.937,
        "num_trials": 2000,
        "trials": "data/demo/trials_synth.txt",
    }
    record = calibrate_checkpoint(folder, metrics=metrics, history=metrics_file)
    assert read_calibration(folder) == record and record["threshold"] == 0.8146
    text = (folder / "README.md").read_text()
    assert text.count("# DINO speech embeddings") == 1
    assert "No evaluation results" not in text
    assert "| demo: held-out synthetic voices | 2,000 | 11.80 | 0.8370 | 0.6480 | 0.8146 |" in text
    assert "at least **0.8146**: the equal error rate operating point on demo: held-out synthetic voices" in text
    assert "minDCF (p_target 0.01): 0.9800" in text
    assert "| 100 | 26.20 | 0.7700 | 0.9670 |" in text and "| 300 | 11.80 | 0.8100 | 0.8370 |" in text
    summary = json.loads((folder / "training_summary.json").read_text())
    assert [e["step"] for e in summary["evaluations"]] == [100, 300]
    (index,) = _front_matter(text)["model-index"]
    assert index["results"][0]["dataset"]["config"] == "trials_synth"


def test_report_never_writes_over_its_inputs(results_files, tmp_path):
    vox, _ = results_files
    with pytest.raises(ValueError, match="vox.json: would overwrite the input"):
        main(["--compare", f"DINO={vox}", "--out", str(vox)])
    (tmp_path / "README.md").write_text("{}")
    with pytest.raises(ValueError, match="README.md: would overwrite the input"):
        main(["--model", str(tmp_path), "--training", str(tmp_path / "README.md")])
