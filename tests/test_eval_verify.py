"""evaluation.verification end to end on tiny generated audio, and the scoring it uses (cosine, AS-norm)."""

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import make_corpus, write_trials
from test_eval_embed import tiny_checkpoint  # noqa: F401  (fixture)

from modeling_dino_speech.evaluation.verification import main, verify, verify_lists
from modeling_dino_speech.metrics.detection_error_tradeoff import detection_curve
from modeling_dino_speech.scoring import as_norm, cohort_statistics, cosine_scores, l2_normalize


@pytest.fixture(scope="module")
def trial_setup(tmp_path_factory):
    """A held-out corpus (4 speakers x 4 utterances) with its VoxCeleb-format trials, and a separate
    cohort corpus of other speakers."""
    root = tmp_path_factory.mktemp("verification")
    manifest = make_corpus(root / "test", speakers=4, per_speaker=4, seconds=(1.0, 2.0), seed=1)
    trials = write_trials(root / "test", manifest, root / "test" / "trials.txt")
    cohort = make_corpus(root / "cohort", speakers=3, per_speaker=3, seconds=(1.0, 2.0), seed=2, prefix="other")
    return root, trials, cohort


# ------------------------------------------------------------------------------------------- scoring


def test_cosine_scores_match_direct_computation():
    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((6, 8)).astype(np.float32)
    enroll, test = rng.integers(0, 6, 20), rng.integers(0, 6, 20)
    expected = [
        embeddings[a] @ embeddings[b] / np.linalg.norm(embeddings[a]) / np.linalg.norm(embeddings[b])
        for a, b in zip(enroll, test)
    ]
    np.testing.assert_allclose(cosine_scores(embeddings, enroll, test), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(l2_normalize(embeddings), axis=1), 1.0, rtol=1e-6)


def test_as_norm_matches_a_direct_loop():
    rng = np.random.default_rng(1)
    embeddings = rng.standard_normal((5, 4))
    cohort = rng.standard_normal((40, 4))
    enroll, test = np.array([0, 1, 2, 3]), np.array([1, 2, 3, 4])
    top_k = 7
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    cohort_unit = cohort / np.linalg.norm(cohort, axis=1, keepdims=True)
    expected = []
    for a, b in zip(enroll, test):
        raw = unit[a] @ unit[b]
        top_a = np.sort(cohort_unit @ unit[a])[-top_k:]
        top_b = np.sort(cohort_unit @ unit[b])[-top_k:]
        expected.append(0.5 * ((raw - top_a.mean()) / top_a.std() + (raw - top_b.mean()) / top_b.std()))
    statistics = cohort_statistics(embeddings, cohort, top_k=top_k, chunk_size=2)  # chunking must not matter
    normed = as_norm(cosine_scores(embeddings, enroll, test), enroll, test, statistics)
    np.testing.assert_allclose(normed, expected, rtol=1e-4, atol=1e-5)
    # top_k larger than the cohort uses the whole cohort.
    whole = cohort_statistics(embeddings, cohort[:3], top_k=300)
    np.testing.assert_allclose(whole.mean[0], (l2_normalize(cohort[:3]) @ unit[0]).mean(), rtol=1e-5)


def test_scoring_rejects_bad_cohorts():
    embeddings = np.ones((2, 4))
    with pytest.raises(ValueError, match="dimension"):
        cohort_statistics(embeddings, np.ones((3, 5)))
    with pytest.raises(ValueError, match="non-empty"):
        cohort_statistics(embeddings, np.ones((0, 4)))
    with pytest.raises(ValueError, match="top_k"):
        cohort_statistics(embeddings, np.ones((3, 4)), top_k=0)


# -------------------------------------------------------------------------------------- verification


def test_missing_files_are_all_named_before_any_work(trial_setup, tmp_path):
    root, _trials, _ = trial_setup
    broken = tmp_path / "broken_trials.txt"
    broken.write_text("1 spk0/utt0.wav spk0/gone_a.wav\n0 spk1/gone_b.wav spk2/utt0.wav\n1 spk9/x.wav spk9/y.wav\n")
    # The model does not exist either: the audio check must come first and name every missing file.
    with pytest.raises(FileNotFoundError) as error:
        verify("/no/such/model", broken, audio_root=root / "test")
    message = str(error.value)
    assert "4 audio file(s)" in message
    for name in ("spk0/gone_a.wav", "spk1/gone_b.wav", "spk9/x.wav", "spk9/y.wav"):
        assert name in message
    assert "spk0/utt0.wav" not in message


def test_bad_trial_line_names_file_and_line(trial_setup, tmp_path):
    root, _, _ = trial_setup
    bad = tmp_path / "bad.txt"
    bad.write_text("1 spk0/utt0.wav spk0/utt1.wav\n2 spk0/utt0.wav\n")
    with pytest.raises(ValueError, match=r"bad.txt:2"):
        verify("fbank-stats", bad, audio_root=root / "test")


def test_verify_end_to_end(tiny_checkpoint, trial_setup, tmp_path):  # noqa: F811
    _root, trials, cohort = trial_setup
    out = tmp_path / "results" / "vox.json"
    report = verify_lists(tiny_checkpoint, [trials], cohort=cohort, top_k=4, device="cpu", progress=False, out=out)
    metrics = report["speaker_verification"]["trials"]
    assert metrics["num_trials"] == 120 and metrics["num_targets"] == 24 and metrics["num_files"] == 16
    assert 0.0 <= metrics["eer"] <= 100.0 and 0.0 <= metrics["min_dcf_0.01"] <= 1.0
    assert metrics["as_norm"]["cohort_size"] == 9 and metrics["as_norm"]["top_k"] == 4

    # The same numbers from the independent route: embed, cosine, sklearn-checked metrics.
    from modeling_dino_speech.data.trials import read_trials
    from modeling_dino_speech.inference import embed_files, load_model

    model, feature_extractor = load_model(tiny_checkpoint, device="cpu")
    parsed = read_trials(trials, audio_root=trials.parent)
    files = sorted({t.enroll for t in parsed} | {t.test for t in parsed})
    embeddings = embed_files(model, feature_extractor, files, progress=False)
    index = {f: i for i, f in enumerate(files)}
    scores = cosine_scores(embeddings, [index[t.enroll] for t in parsed], [index[t.test] for t in parsed])
    expected = detection_curve(scores, [t.label for t in parsed]).equal_error_rate().value
    assert metrics["eer"] == pytest.approx(100 * expected, abs=1e-6)

    written = json.loads(out.read_text())
    assert written["speaker_verification"]["trials"]["eer"] == metrics["eer"]
    for key in ("det", "scores_trials"):
        image = Path(written["plots"][key])
        assert image.is_file() and image.stat().st_size > 5000 and image.read_bytes()[:4] == b"\x89PNG"


def test_verify_flat_result_for_training_and_in_memory_model(tiny_checkpoint, trial_setup):  # noqa: F811
    from modeling_dino_speech.inference import load_model

    _root, trials, _ = trial_setup
    model, feature_extractor = load_model(tiny_checkpoint, device="cpu")
    model.train()
    result = verify(model, trials, feature_extractor=feature_extractor, progress=False)
    assert {"eer", "min_dcf_0.01", "min_dcf_0.05", "num_trials", "embedding_seconds"} <= set(result)
    assert model.training  # training's model comes back in its own mode
    # Without an explicit feature extractor the one of the model's config is used.
    assert verify(model, trials, progress=False)["eer"] == pytest.approx(result["eer"], abs=1e-9)


def test_fbank_baseline_separates_generated_speakers(trial_setup):
    """Synthetic speakers differ in pitch and spectral tilt, which fbank statistics capture."""
    _, trials, _ = trial_setup
    result = verify("fbank-stats", trials, progress=False)
    assert result["eer"] < 20.0


def test_several_lists_and_kaldi_format_share_embeddings(trial_setup, tmp_path, capsys):
    root, trials, _ = trial_setup
    # The same trials in the Kaldi/wespeaker '<enroll> <test> target|nontarget' format.
    kaldi = tmp_path / "kaldi_trials.txt"
    lines = []
    for line in trials.read_text().splitlines()[:40]:
        label, a, b = line.split()
        lines.append(f"{a} {b} {'target' if label == '1' else 'nontarget'}")
    kaldi.write_text("\n".join(lines) + "\n")
    out = tmp_path / "both.json"
    assert (
        main(
            [
                "--model",
                "fbank-stats",
                "--trials",
                str(trials),
                str(kaldi),
                "--audio-root",
                str(root / "test"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "trials" in printed and "kaldi_trials" in printed
    report = json.loads(out.read_text())
    assert set(report["speaker_verification"]) == {"trials", "kaldi_trials"}
    assert report["num_files"] == 16  # the union, embedded once
    assert report["speaker_verification"]["kaldi_trials"]["num_trials"] == 40


def test_one_class_lists_fail_before_the_model_loads(trial_setup, tmp_path):
    from modeling_dino_speech.evaluation.verification import trial_list_evaluator

    root, trials, _ = trial_setup
    targets = tmp_path / "targets_only.txt"
    targets.write_text("\n".join(line for line in trials.read_text().splitlines() if line.startswith("1")) + "\n")
    with pytest.raises(ValueError, match="targets_only.txt: all 24 trials are target"):
        verify("/no/such/model", targets, audio_root=root / "test")
    with pytest.raises(ValueError, match="all 24 trials are target"):  # training's hook: at set-up, not after steps
        trial_list_evaluator(targets, root / "test")


def test_unreadable_audio_found_while_embedding_drops_its_trials_only(trial_setup, tmp_path):
    import shutil

    import soundfile as sf

    root, trials, _ = trial_setup
    audio = tmp_path / "audio"
    shutil.copytree(root / "test", audio)
    bad = audio / "spk0" / "utt0.wav"
    wave = np.zeros(16000, dtype=np.float32)
    wave[100] = np.nan
    sf.write(bad, wave, 16000, subtype="FLOAT")  # a sound header: only decoding finds the NaN
    with pytest.warns(UserWarning, match=r"utt0.wav: 1 NaN/Inf sample"):
        result = verify("fbank-stats", trials, audio_root=audio, progress=False)
    uses_bad = sum("spk0/utt0.wav" in line for line in trials.read_text().splitlines())
    assert result["num_trials_skipped"] == uses_bad and result["num_trials"] == 120 - uses_bad
    assert list(result["skipped_files"]) == [str(bad)] and result["num_files"] == 15


def test_results_file_may_not_overwrite_a_trial_list(trial_setup):
    _root, trials, _ = trial_setup
    with pytest.raises(ValueError, match="would overwrite the input"):
        main(["--model", "fbank-stats", "--trials", str(trials), "--out", str(trials)])
