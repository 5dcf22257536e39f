"""evaluation.emotion: the protocols' folds (no speaker or session on both sides), the corpus wiring on tiny
copies of each official layout, and the end-to-end classifier run."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from modeling_dino_speech.evaluation.emotion import (
    check_disjoint,
    cross_validate,
    evaluate_emotion,
    group_k_fold,
    leave_one_group_out,
    load_task,
    main,
    predefined_split,
)

SR = 16000
EMOTION_PITCH = {"neutral": 140.0, "happy": 260.0, "angry": 200.0, "sad": 100.0, "fear": 320.0, "disgust": 170.0}


def _utterance(path: Path, emotion: str, speaker: int, rng: np.random.Generator, seconds: float = 0.4) -> None:
    """A tone whose pitch says the emotion, shifted a little per speaker, in noise."""
    t = np.arange(int(seconds * SR)) / SR
    f0 = EMOTION_PITCH[emotion] * (1 + 0.03 * (speaker % 4))
    wave = sum(np.sin(2 * np.pi * h * f0 * t) / h for h in range(1, 6)) + 0.05 * rng.standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.2 * wave / np.abs(wave).max()).astype(np.float32), SR, subtype="PCM_16")


# --------------------------------------------------------------------------------------------- folds


def test_leave_one_group_out_tests_each_group_once():
    sessions = np.array([1, 1, 2, 3, 3, 3, 4, 5, 5, 2])
    folds = leave_one_group_out(sessions)
    assert len(folds) == 5
    tested = np.sort(np.concatenate([test for _, test in folds]))
    np.testing.assert_array_equal(tested, np.arange(sessions.size))
    for k, (train, test) in enumerate(folds):
        assert set(sessions[test]) == {k + 1}
        assert k + 1 not in set(sessions[train])
        assert train.size + test.size == sessions.size
    check_disjoint(folds, sessions, "session")


def test_group_k_fold_is_speaker_disjoint_and_complete():
    rng = np.random.default_rng(0)
    speakers = rng.integers(1001, 1092, 600).astype(str)
    folds = group_k_fold(speakers, 5)
    assert len(folds) == 5
    check_disjoint(folds, speakers)
    tested = np.sort(np.concatenate([test for _, test in folds]))
    np.testing.assert_array_equal(tested, np.arange(speakers.size))
    with pytest.raises(ValueError, match="at least 5 speakers"):
        group_k_fold(["a", "b", "a", "c"], 5)


def test_predefined_split_and_leak_detection():
    splits = ["Train", "Train", "Development", "Test1", "Test1", "Test2"]
    ((train, test),) = predefined_split(splits, train=["Train"], test=["Test1"])
    assert train.tolist() == [0, 1] and test.tolist() == [3, 4]
    with pytest.raises(ValueError, match="0 test"):
        predefined_split(splits, train=["Train"], test=["Test9"])
    speakers = np.array(["s1", "s1", "s2", "s1", "s3", "s4"])
    with pytest.raises(ValueError, match=r"fold 0: speaker\(s\) \['s1'\]"):
        check_disjoint([(train, test)], speakers)


def test_cross_validate_predicts_every_test_utterance_once():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.array(["a", "b", "c"]), 20)
    embeddings = rng.standard_normal((60, 5))
    embeddings[:, :3] += 3.0 * (labels[:, None] == np.array(["a", "b", "c"]))
    groups = np.tile(np.arange(5), 12)
    predictions, per_fold = cross_validate(embeddings, labels, leave_one_group_out(groups))
    assert len(per_fold) == 5 and (predictions != "").all()
    assert np.mean(predictions == labels) > 0.9
    mlp_predictions, _ = cross_validate(embeddings, labels, leave_one_group_out(groups), classifier="mlp")
    assert np.mean(mlp_predictions == labels) > 0.8


# ------------------------------------------------------------------------------------ corpus layouts


def _iemocap(root: Path, rng) -> Path:
    codes = {"neu": "neutral", "hap": "happy", "exc": "happy", "ang": "angry", "sad": "sad", "fru": None}
    for session in range(1, 6):
        for gender in "FM":
            dialog = f"Ses0{session}{gender}_impro01"
            lines = []
            for i, (code, emotion) in enumerate(codes.items()):
                utt = f"{dialog}_{'FM'[i % 2]}{i:03d}"
                lines.append(f"[{i:.4f} - {i + 0.4:.4f}]\t{utt}\t{code}\t[2.5000, 3.0000, 2.0000]")
                speaker = 2 * session + (i % 2)
                _utterance(
                    root / f"Session{session}" / "sentences" / "wav" / dialog / f"{utt}.wav",
                    emotion or "neutral",
                    speaker,
                    rng,
                )
            evaluation = root / f"Session{session}" / "dialog" / "EmoEvaluation" / f"{dialog}.txt"
            evaluation.parent.mkdir(parents=True, exist_ok=True)
            evaluation.write_text("% header\n\n" + "\n\n".join(lines) + "\n")
    return root


def _cremad(root: Path, rng) -> Path:
    codes = {"ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
    for actor in range(1001, 1011):
        for code, emotion in codes.items():
            _utterance(root / "AudioWAV" / f"{actor}_IEO_{code}_HI.wav", emotion, actor, rng)
    return root


def _msp_podcast(root: Path, rng) -> Path:
    rows = []
    codes = {"N": "neutral", "H": "happy", "A": "angry", "S": "sad"}
    for i in range(48):
        code = "NHAS"[i % 4]
        split = ["Train", "Train", "Development", "Test1"][(i // 4) % 4]
        name = f"MSP-PODCAST_{i:04d}_0001.wav"
        _utterance(root / "Audios" / name, codes[code], i // 4, rng)
        rows.append([name, code, "3.0", "4.0", "3.5", str(i // 4), "Female", split])
    (root / "Labels").mkdir(parents=True)
    with open(root / "Labels" / "labels_consensus.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set"])
        writer.writerows(rows)
    return root


def _demo(root: Path, rng) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split, voices in (("train", range(0, 6)), ("test", range(6, 9))):
        rows = []
        for voice in voices:
            for emotion in ("neutral", "happy", "sad", "angry"):
                for take in range(2):
                    relative = f"prosody/v{voice}_{emotion}_{take}.wav"
                    _utterance(root / relative, emotion, voice, rng)
                    rows.append([relative, emotion, f"voice{voice}", "0.400"])
        with open(root / f"prosody_{split}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label", "speaker", "duration"])
            writer.writerows(rows)
    return root


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    rng = np.random.default_rng(0)
    base = tmp_path_factory.mktemp("emotion")
    return {
        "iemocap": _iemocap(base / "iemocap", rng),
        "crema_d": _cremad(base / "crema_d", rng),
        "msp_podcast": _msp_podcast(base / "msp_podcast", rng),
        "demo": _demo(base / "demo", rng),
    }


def test_iemocap_protocol(corpora):
    task = load_task("iemocap", corpora["iemocap"])
    assert sorted(set(task.labels)) == ["angry", "happy", "neutral", "sad"]  # exc merged, fru dropped
    assert len(task.paths) == 5 * 2 * 5
    assert len(task.folds) == 5
    sessions = np.array([int(s[3:5]) for s in task.speakers])
    for k, (train, test) in enumerate(task.folds):
        assert set(sessions[test]) == {k + 1} and k + 1 not in set(sessions[train])
        assert not set(task.speakers[test]) & set(task.speakers[train])


def test_cremad_protocol(corpora):
    task = load_task("crema_d", corpora["crema_d"])
    assert len(set(task.labels)) == 6 and len(task.folds) == 5
    for train, test in task.folds:
        assert not set(task.speakers[test]) & set(task.speakers[train])
        assert len(set(task.speakers[test])) == 2  # 10 actors over 5 folds


def test_msp_podcast_protocol(corpora):
    task = load_task("msp_podcast", corpora["msp_podcast"])
    ((train, test),) = task.folds
    assert len(train) == 24 and len(test) == 12  # Train and Test1 only; Development unused
    assert len(task.paths) == 36


def test_demo_end_to_end(corpora, tmp_path, capsys):
    out = tmp_path / "emotion.json"
    assert main(["--model", "fbank-stats", "--corpus", "demo", "--root", str(corpora["demo"]), "--out", str(out)]) == 0
    assert "micro-F1" in capsys.readouterr().out
    report = json.loads(out.read_text())
    result = report["emotion_recognition"]["demo"]
    assert result["num_utterances"] == 24 and result["num_speakers"] == 9
    assert result["classes"] == ["angry", "happy", "neutral", "sad"]
    assert np.array(result["confusion"]).sum() == 24
    # Pitch carries the emotion in these utterances: far above the 25% chance level.
    assert result["micro_f1"] > 70.0
    assert 0.0 <= result["macro_f1"] <= 100.0 and 0.0 <= result["unweighted_accuracy"] <= 100.0
    image = Path(report["plots"]["confusion_demo"])
    assert image.is_file() and image.stat().st_size > 5000


def test_cremad_end_to_end_pools_all_folds(corpora):
    report = evaluate_emotion("fbank-stats", "crema_d", corpora["crema_d"], progress=False)
    result = report["emotion_recognition"]["crema_d"]
    assert result["num_utterances"] == 60 and len(result["folds"]) == 5
    # Pooled micro-F1 is the utterance-weighted mean of the fold accuracies.
    sizes = np.array([12] * 5)
    assert result["micro_f1"] == pytest.approx(np.average([f["micro_f1"] for f in result["folds"]], weights=sizes))
