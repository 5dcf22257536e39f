"""DinoSpeechVerifier: files or arrays in, scores and decisions out; degenerate input never scores; galleries."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import SR, synth_voice

from modeling_dino_speech import (
    DegenerateAudioWarning,
    DinoSpeechConfig,
    DinoSpeechFeatureExtractor,
    DinoSpeechModel,
    DinoSpeechVerifier,
    SpeakerGallery,
)
from modeling_dino_speech.calibration import calibration_record, read_calibration, set_calibration

METRICS = {
    "eer": 7.5,
    "eer_threshold": 0.6,
    "min_dcf_0.01": 0.7,
    "min_dcf_0.01_threshold": 0.9,
    "min_dcf_0.05": 0.5,
    "min_dcf_0.05_threshold": 0.8,
    "num_trials": 2000,
    "num_targets": 1000,
    "num_nontargets": 1000,
    "trials": "data/demo/trials_synth.txt",
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny random model saved with a calibration record, as training's export writes it."""
    folder = tmp_path_factory.mktemp("verifier") / "final"
    config = DinoSpeechConfig(resnet_layers=[1, 1, 1, 1], resnet_base_width=8, embedding_size=32)
    set_calibration(config, METRICS)
    torch.manual_seed(0)
    DinoSpeechModel(config).save_pretrained(folder)
    DinoSpeechFeatureExtractor.from_model_config(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def voices(tmp_path_factory):
    """Two recordings of speaker 1 and one of speaker 3 (harmonic sources), as 16 kHz wavs."""
    folder = tmp_path_factory.mktemp("voices")
    rng = np.random.default_rng(0)
    paths = {}
    for name, speaker in (("a", 1), ("b", 1), ("c", 3)):
        paths[name] = folder / f"{name}.wav"
        sf.write(paths[name], synth_voice(speaker, 2.0, rng), SR, subtype="PCM_16")
    return paths


@pytest.fixture(scope="module")
def verifier(checkpoint):
    return DinoSpeechVerifier.from_pretrained(checkpoint, device="cpu")


def test_three_line_verification_decides_at_the_calibrated_threshold(checkpoint, voices):
    verifier = DinoSpeechVerifier.from_pretrained(checkpoint, device="cpu")
    score, same_speaker = verifier.verify_files(voices["a"], voices["b"])
    assert -1.0 <= score <= 1.0
    assert same_speaker == (score >= 0.6)
    assert verifier.threshold == 0.6 and "eer on trials_synth" in verifier.threshold_source
    assert verifier.verify_files(voices["a"], voices["b"], threshold=score + 0.01).same_speaker is False
    strict = DinoSpeechVerifier.from_pretrained(checkpoint, device="cpu", operating_point="min_dcf_0.01")
    assert strict.threshold == 0.9
    given = DinoSpeechVerifier.from_pretrained(checkpoint, device="cpu", threshold=-1.0)
    assert given.verify_files(voices["a"], voices["c"]).same_speaker is True


def test_every_kind_of_input_gives_the_same_embedding(verifier, voices):
    wave, rate = sf.read(voices["a"], dtype="float32")
    pcm, _ = sf.read(voices["a"], dtype="int16")
    reference = verifier.embed(voices["a"])
    assert reference.shape == (32,)
    import soxr

    inputs = [
        str(voices["a"]),
        (wave, rate),
        (pcm, rate),  # integer PCM is scaled
        (torch.from_numpy(wave), rate),
        {"array": wave, "sampling_rate": rate},
        (np.stack([wave, wave], axis=1), rate),  # stereo is averaged
        (soxr.resample(wave, rate, 8000), 8000),  # every input at its own rate
    ]
    embeddings = verifier.embed(inputs)
    assert embeddings.shape == (len(inputs), 32)
    cosines = verifier.cosine(embeddings, reference)
    np.testing.assert_allclose(cosines[:6], 1.0, atol=1e-5)
    assert cosines[6] > 0.95  # 8 kHz has lost the band above 4 kHz
    assert verifier.embed(wave, sampling_rate=rate).shape == (32,)
    with pytest.raises(ValueError, match="input 0: a waveform needs its sampling rate"):
        verifier.embed(wave)


def test_silence_dc_and_too_little_speech_never_score(verifier, voices, tmp_path):
    silent, dc, blip = tmp_path / "silent.wav", tmp_path / "dc.wav", tmp_path / "blip.wav"
    sf.write(silent, np.zeros(2 * SR, np.float32), SR)
    sf.write(dc, np.full(2 * SR, 0.25, np.float32), SR, subtype="FLOAT")
    short = np.zeros(3 * SR, np.float32)
    short[SR : SR + 3200] = synth_voice(1, 0.2, np.random.default_rng(1))  # 0.2 s of voice in 3 s of silence
    sf.write(blip, short, SR, subtype="FLOAT")
    with pytest.warns(DegenerateAudioWarning) as caught:
        score, decision = verifier.verify_files(silent, dc)
    assert np.isnan(score) and decision is None  # without the check two silent files score 1.0: "same speaker"
    messages = " ".join(str(w.message) for w in caught)
    assert "silent.wav: constant signal" in messages and "dc.wav: constant signal" in messages
    with pytest.warns(DegenerateAudioWarning, match=r"blip.wav: too little speech: 0.2\d s active in 3.00 s"):
        assert np.isnan(verifier.similarity(voices["a"], blip))
    strict = DinoSpeechVerifier(verifier.model, verifier.feature_extractor, on_degenerate="raise")
    with pytest.raises(ValueError, match="silent.wav: constant signal"):
        strict.embed(silent)
    lenient = DinoSpeechVerifier(verifier.model, verifier.feature_extractor, on_degenerate="ignore")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateAudioWarning)
        assert np.isfinite(lenient.embed(silent)).all()


def test_unreadable_input_is_named(verifier, voices, tmp_path):
    with pytest.raises(ValueError, match=r"nowhere.wav: file does not exist"):
        verifier.similarity(voices["a"], tmp_path / "nowhere.wav")
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF....WAVE")
    with pytest.raises(ValueError, match=r"broken.wav: "):
        verifier.embed([voices["a"], broken])


def test_no_threshold_means_no_decision(voices, tmp_path):
    config = DinoSpeechConfig(resnet_layers=[1, 1, 1, 1], resnet_base_width=8, embedding_size=16)
    model = DinoSpeechModel(config)
    verifier = DinoSpeechVerifier(model, DinoSpeechFeatureExtractor.from_model_config(config))
    with pytest.warns(UserWarning, match="no decision threshold"):
        score, decision = verifier.verify_files(voices["a"], voices["b"])
    assert np.isfinite(score) and decision is None


def test_long_audio_is_windowed_and_matches_whole_on_short_audio(verifier, voices):
    wave, rate = sf.read(voices["a"], dtype="float32")
    long = np.tile(wave, 20)  # 40 s: past max_whole_seconds (30 s)
    windowed = DinoSpeechVerifier(verifier.model, verifier.feature_extractor, window_seconds=10.0, hop_seconds=5.0)
    whole = DinoSpeechVerifier(verifier.model, verifier.feature_extractor, window_seconds=None)
    a, b = windowed.embed((long, rate)), whole.embed((long, rate))
    assert verifier.cosine(a, b) > 0.98  # a repeated recording: every window says the same
    np.testing.assert_allclose(windowed.embed(voices["a"]), whole.embed(voices["a"]), rtol=1e-5, atol=1e-6)


def test_enroll_and_identify(verifier, voices, tmp_path):
    gallery = verifier.enroll({"one": [voices["a"]], "three": [voices["c"]]})
    assert gallery.speakers == ["one", "three"] and gallery.counts.tolist() == [1, 1]
    best = verifier.identify(voices["b"], gallery, top_k=2)
    assert [s for s, _ in best] in (["one", "three"], ["three", "one"]) and best[0].score >= best[1].score
    again = SpeakerGallery.load(gallery.save(tmp_path / "g.npz"))
    assert again.speakers == gallery.speakers and np.allclose(again.centroids, gallery.centroids)
    assert verifier.identify([voices["a"], voices["c"]], again, top_k=1)[1][0].speaker == "three"
    with pytest.raises(ValueError, match="dimension 4 but the gallery 32"):
        again.identify(np.ones((1, 4)))


def test_calibration_record_in_config_and_card(checkpoint):
    record = read_calibration(checkpoint)
    assert record == calibration_record(METRICS)
    assert record["trials"] == "trials_synth" and record["threshold"] == 0.6 and record["operating_point"] == "eer"
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["verification_threshold"] == 0.6
    with pytest.raises(ValueError, match="operating_point"):
        calibration_record(METRICS, operating_point="best")
