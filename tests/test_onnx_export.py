"""ONNX export with the fbank inside: waveform in, embedding out, equal to PyTorch's under onnxruntime."""

import numpy as np
import pytest
import torch
from helpers import SR, real_speech, synth_voice

from modeling_dino_speech import DinoSpeechConfig, DinoSpeechFeatureExtractor, DinoSpeechModel
from modeling_dino_speech.onnx_export import MIN_COSINE, KaldiFbank, check_onnx, export_onnx

onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

ECAPA = dict(
    backbone="ecapa_tdnn",
    ecapa_channels=64,
    ecapa_mfa_channels=192,
    ecapa_se_channels=32,
    pooling="attentive_statistics",
    attention_channels=32,
    embedding_size=48,
)
RESNET = dict(resnet_layers=[1, 1, 1, 1], resnet_base_width=8, embedding_size=32)


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"mean_normalization": "utterance"},
        {"mean_normalization": None},
        {"sampling_rate": 8000, "high_freq": 3800, "num_mel_bins": 64},
        {"frame_length_ms": 32.0, "frame_shift_ms": 12.0},
    ],
)
def test_graph_fbank_matches_the_feature_extractor(settings):
    config = DinoSpeechConfig(**settings)
    fe = DinoSpeechFeatureExtractor.from_model_config(config)
    rng = np.random.default_rng(0)
    for seconds in (0.3, 1.0, 2.77):
        wave = synth_voice(2, seconds, rng)[: int(seconds * fe.sampling_rate)] + 0.05  # with a DC offset
        expected = fe(wave, sampling_rate=fe.sampling_rate, return_tensors="pt")["input_features"]
        got = KaldiFbank(fe)(torch.from_numpy(wave)[None])
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, atol=2e-3, rtol=1e-4)


def _export(tmp_path, settings, check_waveforms=(), whiten=False):
    torch.manual_seed(0)
    config = DinoSpeechConfig(**settings)
    model = DinoSpeechModel(config).eval()
    if whiten:  # a whitening of the layer the embeddings come from, as an export stores one
        size = model.output_size
        model.set_embedding_whitening(
            torch.randn(size), torch.randn(size, size) / size**0.5, layer=config.embedding_layer
        )
    fe = DinoSpeechFeatureExtractor.from_model_config(config)
    report = export_onnx(model, fe, tmp_path / "model.onnx", check_waveforms=list(check_waveforms))
    return model, fe, report


@pytest.mark.parametrize("layer", ["embedding", "pooled"])
def test_onnx_embeddings_match_pytorch_for_any_length_and_batch(tmp_path, layer):
    model, fe, report = _export(tmp_path, {**RESNET, "embedding_layer": layer}, whiten=True)
    assert report["min_cosine"] > MIN_COSINE
    rng = np.random.default_rng(1)
    waves = [synth_voice(s, seconds, rng) for s, seconds in ((0, 0.7), (1, 4.1), (3, 9.3))]
    assert min(check_onnx(tmp_path / "model.onnx", model, fe, waves)) > MIN_COSINE
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    batch = np.stack([waves[1][: 2 * SR], waves[2][: 2 * SR]])
    together = session.run(None, {"waveform": batch})[0]
    alone = np.concatenate([session.run(None, {"waveform": row[None]})[0] for row in batch])
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-5)
    metadata = {p.key: p.value for p in __import__("onnx").load(str(tmp_path / "model.onnx")).metadata_props}
    expected = 32 if layer == "embedding" else model.pooling.output_size
    assert model.output_size == expected and together.shape == (2, expected)
    assert metadata["sampling_rate"] == "16000" and metadata["embedding_size"] == str(model.output_size)


@pytest.mark.slow
def test_ecapa_export_on_real_speech(tmp_path):
    from modeling_dino_speech.data.audio import load_audio

    speech = real_speech(per_speaker=2)
    if not speech:
        pytest.skip("no real recordings offline (make demo, or the demo corpus's Debian-package cache)")
    waves = [load_audio(p, SR) for files in speech.values() for p in files]
    _, _, report = _export(tmp_path, ECAPA, waves)
    assert len(report["cosines"]) == 2 + len(waves) and report["min_cosine"] > MIN_COSINE


@pytest.mark.slow
def test_export_onnx_command(tmp_path, capsys):
    from modeling_dino_speech.cli import main

    torch.manual_seed(0)
    config = DinoSpeechConfig(**RESNET)
    DinoSpeechModel(config).save_pretrained(tmp_path / "ckpt")
    DinoSpeechFeatureExtractor.from_model_config(config).save_pretrained(tmp_path / "ckpt")
    assert main(["export-onnx", str(tmp_path / "ckpt"), str(tmp_path / "out" / "m.onnx")]) == 0
    assert "onnxruntime matches PyTorch" in capsys.readouterr().out
    assert (tmp_path / "out" / "m.onnx").stat().st_size > 10_000
