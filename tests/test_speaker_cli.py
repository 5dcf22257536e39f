"""The dino-speech command line as a new user meets it: similarity, score, enroll, identify; one-line errors."""

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import SR, synth_voice
from test_verifier import METRICS

from modeling_dino_speech import DinoSpeechConfig, DinoSpeechFeatureExtractor, DinoSpeechModel
from modeling_dino_speech.calibration import set_calibration
from modeling_dino_speech.cli import main


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    config = DinoSpeechConfig(resnet_layers=[1, 1, 1, 1], resnet_base_width=8, embedding_size=32)
    set_calibration(config, METRICS)
    torch.manual_seed(0)
    DinoSpeechModel(config).save_pretrained(root / "model")
    DinoSpeechFeatureExtractor.from_model_config(config).save_pretrained(root / "model")
    rng = np.random.default_rng(0)
    for speaker in (1, 3):
        for u in range(2):
            folder = root / "gallery" / f"spk{speaker}"
            folder.mkdir(parents=True, exist_ok=True)
            sf.write(folder / f"u{u}.wav", synth_voice(speaker, 1.5, rng), SR, subtype="PCM_16")
    sf.write(root / "query.wav", synth_voice(3, 1.5, rng), SR, subtype="PCM_16")
    sf.write(root / "silence.wav", np.zeros(SR, np.float32), SR)
    return root


def test_similarity_prints_score_and_decision(setup, capsys):
    a, b = setup / "gallery" / "spk1" / "u0.wav", setup / "gallery" / "spk1" / "u1.wav"
    assert main(["similarity", str(setup / "model"), str(a), str(b)]) == 0
    out = capsys.readouterr().out.strip()
    score = float(out.split()[1])
    expected = "same speaker" if score >= 0.6 else "different speakers"
    assert (
        out.startswith("score ") and f"{expected} (threshold 0.6000, calibrated at export: eer on trials_synth)" in out
    )
    assert main(["similarity", str(setup / "model"), str(a), str(b), "--threshold", "2", "--json"]) == 0
    assert '"same_speaker": false' in capsys.readouterr().out


def test_similarity_of_silence_is_no_score(setup, capsys):
    silence = str(setup / "silence.wav")
    assert main(["similarity", str(setup / "model"), silence, silence]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("score nan  no decision")
    assert "silence.wav: constant signal" in captured.err


def test_score_writes_one_line_per_pair_and_metrics_with_labels(setup, capsys):
    labelled = setup / "pairs.txt"
    labelled.write_text(
        "1 gallery/spk1/u0.wav gallery/spk1/u1.wav\n0 gallery/spk1/u0.wav gallery/spk3/u0.wav\n"
        "1 gallery/spk3/u0.wav gallery/spk3/u1.wav\n0 gallery/spk1/u1.wav query.wav\n"
        "0 gallery/spk1/u1.wav silence.wav\n"
    )
    out = setup / "scores.txt"
    assert main(["score", "--model", str(setup / "model"), "--pairs", str(labelled), "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 5 and lines[0].startswith("gallery/spk1/u0.wav gallery/spk1/u1.wav ")
    assert lines[4].endswith(" nan")
    captured = capsys.readouterr()
    assert "EER " in captured.out and "on 4 pairs" in captured.out and "silence.wav" in captured.err
    unlabelled = setup / "unlabelled.txt"
    unlabelled.write_text("gallery/spk1/u0.wav query.wav\n")
    assert main(["score", "--model", str(setup / "model"), "--pairs", str(unlabelled), "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 1 and "EER" not in capsys.readouterr().out
    # The scores may not go over the list they come from.
    assert main(["score", "--model", str(setup / "model"), "--pairs", str(unlabelled), "--out", str(unlabelled)]) == 2
    assert "would overwrite the input" in capsys.readouterr().err


def test_enroll_then_identify(setup, capsys):
    gallery = setup / "speakers.npz"
    assert (
        main(["enroll", "--model", str(setup / "model"), "--gallery", str(setup / "gallery"), "--out", str(gallery)])
        == 0
    )
    assert "2 speakers (4 files)" in capsys.readouterr().out
    assert main(["identify", "--gallery", str(gallery), str(setup / "query.wav"), "--top-k", "2", "--json"]) == 0
    import json

    result = json.loads(capsys.readouterr().out)
    assert {entry["speaker"] for entry in result["top"]} == {"spk1", "spk3"}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["similarity", "tiny/fnal", "a.wav", "b.wav"], "dino-speech: error: a.wav: audio file does not exist"),
        (["similarity", "./nowhere", "{q}", "{q}"], "dino-speech: error: ./nowhere: model folder does not exist"),
        (["identify", "--gallery", "none.npz", "{q}"], "dino-speech: error: none.npz: gallery file does not exist"),
        (["score", "--model", "{m}", "--pairs", "nolist.txt", "--out", "x"], "nolist.txt: trial list does not exist"),
    ],
)
def test_user_errors_are_one_line(setup, capsys, argv, message):
    argv = [a.format(q=setup / "query.wav", m=setup / "model") for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dino-speech: error: ") and message in err
    assert len(err.splitlines()) == 1


def test_debug_shows_the_traceback(setup):
    with pytest.raises(FileNotFoundError):
        main(["--debug", "similarity", "./nowhere", str(setup / "query.wav"), str(setup / "query.wav")])


def test_a_mistyped_local_model_path_fails_without_the_network(setup, tmp_path):
    (tmp_path / "tiny").mkdir()
    query = str(setup / "query.wav")
    proc = subprocess.run(
        [sys.executable, "-m", "modeling_dino_speech", "similarity", "tiny/fnal", query, query],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "0", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "dino-speech: error: tiny/fnal: model folder does not exist"
