"""Training's exports are calibrated: final/ (DINO) and each pseudo-label round's final/ carry the EER threshold of
their last evaluation in config.json and state it in the card, with the evaluations made during training."""

import json
import subprocess

import pytest
from helpers import make_corpus, write_trials
from test_pseudo_label import ENV, pseudo_label_command, tiny_dino_export
from test_train_dino import common, run_train

from modeling_dino_speech import DinoSpeechVerifier


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("calibration")
    manifest = make_corpus(root / "corpus", speakers=4, per_speaker=6, seconds=(1.2, 2.0))
    return manifest, write_trials(root / "corpus", manifest, root / "corpus" / "trials.txt")


@pytest.mark.slow
def test_dino_export_records_its_threshold_and_the_evaluations_during_training(corpus, tmp_path):
    manifest, trials = corpus
    out = tmp_path / "run"
    args = common(manifest, out, 4, ["save_every=0", "eval.every_steps=2", "export.whitening=true"])
    args = [a for a in args if a != "eval.trials=null"] + [f"eval.trials={trials}", f"eval.audio_root={trials.parent}"]
    result = run_train(args)
    assert result.returncode == 0, result.stderr[-4000:]
    final = out / "final"
    config = json.loads((final / "config.json").read_text())
    record = config["verification_calibration"]
    assert config["verification_threshold"] == record["threshold"] == record["eer_threshold"]
    assert record["trials"] == "trials" and record["num_trials"] == 276 and record["operating_point"] == "eer"
    summary = json.loads((final / "training_summary.json").read_text())
    assert [e["step"] for e in summary["evaluations"]] == [2, 4]
    assert summary["mixed_precision"] == "no"  # the precision the run trained in, as resolved
    card = (final / "README.md").read_text()
    assert f"at least **{record['threshold']:.4f}**" in card and "No evaluation results" not in card
    assert "Evaluations during training" in card and "| 4 | " in card
    verifier = DinoSpeechVerifier.from_pretrained(final, device="cpu")
    assert verifier.threshold == record["threshold"]


@pytest.mark.slow
def test_pseudo_label_round_records_its_threshold_and_describes_itself(corpus, tmp_path):
    manifest, trials = corpus
    init = tiny_dino_export(tmp_path / "dino_final")
    out = tmp_path / "pl"
    args = pseudo_label_command(
        manifest, init, out, "rounds=1", f"eval.trials={trials}", f"eval.audio_root={trials.parent}"
    )
    result = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    final = out / "round_1" / "final"
    report = json.loads((out / "round_1" / "report.json").read_text())
    config = json.loads((final / "config.json").read_text())
    assert config["verification_threshold"] == pytest.approx(report["eer_threshold"])
    card = (final / "README.md").read_text()
    assert "iterative pseudo-labelling" in card and "(round 1, 4 clusters)" in card
    assert "teacher" not in card.split("## Results")[0]
    assert f"| trials | {report['num_trials']:,} | {report['eer']:.2f} |" in card  # its own evaluation as results


def test_a_min_dcf_reached_only_by_rejecting_every_trial_is_left_out_of_the_calibration(tmp_path):
    from modeling_dino_speech.calibration import calibration_record, read_calibration, set_calibration
    from modeling_dino_speech.model_card import write_model_card

    metrics = {"eer": 46.9, "eer_threshold": -0.03, "min_dcf_0.01": 1.0, "min_dcf_0.01_threshold": float("inf")}
    record = calibration_record(metrics, trials="trials.txt")
    assert record["threshold"] == -0.03 and "min_dcf_0.01_threshold" not in record and record["min_dcf_0.01"] == 1.0
    with pytest.raises(ValueError, match="min_dcf_0.01 operating point has no finite threshold"):
        calibration_record(metrics, operating_point="min_dcf_0.01")
    # saved, read back and written into a model card, as a pseudo-label round does
    folder = tiny_dino_export(tmp_path / "model")
    from modeling_dino_speech import DinoSpeechConfig

    config = DinoSpeechConfig.from_pretrained(folder)
    set_calibration(config, metrics, trials="trials.txt")
    config.save_pretrained(folder)
    assert read_calibration(folder)["threshold"] == -0.03
    assert "-0.0300" in write_model_card(folder, title="tiny").read_text()
    # a checkpoint saved before holds transformers' encoding of the infinity: it is read without it
    raw = json.loads((folder / "config.json").read_text())
    raw["verification_calibration"]["min_dcf_0.05_threshold"] = {"__float__": "Infinity"}
    (folder / "config.json").write_text(json.dumps(raw))
    assert "min_dcf_0.05_threshold" not in read_calibration(folder)
    write_model_card(folder, title="tiny")
