"""inference: one embedding per file, in input order, independent of batching; baselines; file formats."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import SR, make_corpus

from modeling_dino_speech.inference import embed_files, load_model, main, read_embeddings, write_embeddings


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random-init DinoSpeechModel saved the way training exports it (shared by the eval tests)."""
    from modeling_dino_speech import DinoSpeechConfig, DinoSpeechFeatureExtractor, DinoSpeechModel

    folder = tmp_path_factory.mktemp("checkpoint")
    config = DinoSpeechConfig(
        resnet_layers=[1, 1, 1, 1],
        resnet_base_width=8,
        embedding_size=32,
        dino_hidden_size=64,
        dino_bottleneck_size=16,
        dino_num_prototypes=128,
    )
    torch.manual_seed(0)
    DinoSpeechModel(config).save_pretrained(folder)
    DinoSpeechFeatureExtractor.from_model_config(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> Path:
    """4 synthetic speakers x 4 utterances of 1-2.5 s; returns the manifest (path,speaker,duration)."""
    return make_corpus(tmp_path_factory.mktemp("corpus"), speakers=4, per_speaker=4, seconds=(1.0, 2.5))


def _paths(manifest: Path):
    from modeling_dino_speech.data.corpora import load_manifest

    return load_manifest(manifest)


def test_embeddings_follow_input_order_and_ignore_batching(tiny_checkpoint, tiny_corpus):
    files = _paths(tiny_corpus)
    model, feature_extractor = load_model(tiny_checkpoint, device="cpu")
    together = embed_files(model, feature_extractor, files["path"], batch_size=5, progress=False)
    assert together.shape == (16, 32) and together.dtype == np.float32
    assert np.isfinite(together).all()
    # Each file alone (no padding at all) must give what it gave inside a padded, length-sorted batch.
    for i in (0, 7, 15):
        alone = embed_files(model, feature_extractor, [files["path"][i]], progress=False)
        np.testing.assert_allclose(alone[0], together[i], rtol=1e-4, atol=1e-5)
    # Reversed input order -> reversed rows; a tiny padded-seconds budget -> one file per batch.
    reversed_rows = embed_files(model, feature_extractor, files["path"][::-1], max_batch_seconds=0.1, progress=False)
    np.testing.assert_allclose(reversed_rows[::-1], together, rtol=1e-4, atol=1e-5)


def test_model_mode_is_restored(tiny_checkpoint, tiny_corpus):
    model, feature_extractor = load_model(tiny_checkpoint, device="cpu")
    model.train()
    embed_files(model, feature_extractor, _paths(tiny_corpus)["path"][:2], progress=False)
    assert model.training


def test_fbank_statistics_baseline_is_normalised_mean_and_std_of_fbank(tiny_corpus):
    from modeling_dino_speech.data.audio import load_audio

    files = _paths(tiny_corpus)
    model, feature_extractor = load_model("fbank-stats", device="cpu")
    embeddings = embed_files(model, feature_extractor, files["path"][:3], progress=False)
    assert embeddings.shape == (3, 160)
    batch = feature_extractor(load_audio(files["path"][1], SR), sampling_rate=SR, return_tensors="np")
    features = batch["input_features"][0]
    shape = features.mean(axis=0) - features.mean()  # level (average log energy) removed
    std = features.std(axis=0)
    expected = np.concatenate([shape / np.linalg.norm(shape), std / np.linalg.norm(std)])
    np.testing.assert_allclose(embeddings[1], expected, rtol=1e-4, atol=1e-4)


def test_random_init_baseline_keeps_architecture(tiny_checkpoint, tiny_corpus):
    trained, _ = load_model(tiny_checkpoint, device="cpu")
    fresh, feature_extractor = load_model(f"random-init:{tiny_checkpoint}", device="cpu", seed=1)
    assert type(fresh) is type(trained)
    differs = [
        not torch.equal(a, b)
        for a, b in zip(fresh.state_dict().values(), trained.state_dict().values())
        if a.is_floating_point() and a.numel() > 1
    ]
    assert any(differs)
    again, _ = load_model(f"random-init:{tiny_checkpoint}", device="cpu", seed=1)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), again.state_dict().values()))
    assert embed_files(fresh, feature_extractor, _paths(tiny_corpus)["path"][:2], progress=False).shape == (2, 32)


def test_bad_inputs_are_named(tiny_checkpoint, tmp_path):
    model, feature_extractor = load_model(tiny_checkpoint, device="cpu")
    short = tmp_path / "click.wav"
    sf.write(short, np.zeros(160, dtype=np.float32), SR)  # 10 ms: less than one 25 ms window
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really a wav")
    with pytest.raises(ValueError, match="click.wav: 10.0 ms"):
        embed_files(model, feature_extractor, [str(short)], progress=False)
    with pytest.raises(ValueError, match="broken.wav"):
        embed_files(model, feature_extractor, [str(broken)], progress=False)
    with pytest.raises(FileNotFoundError, match="model folder does not exist"):
        load_model(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(tmp_path)


@pytest.mark.parametrize("suffix", [".parquet", ".npy"])
def test_embeddings_file_round_trip(tmp_path, suffix):
    import pandas as pd

    matrix = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    table = pd.DataFrame({"path": [f"/x/{i}.wav" for i in range(5)], "speaker": list("aabbc")})
    write_embeddings(tmp_path / f"e{suffix}", matrix, table)
    loaded, columns = read_embeddings(tmp_path / f"e{suffix}")
    np.testing.assert_array_equal(loaded, matrix)
    assert columns["speaker"].tolist() == list("aabbc")
    with pytest.raises(ValueError, match="rows"):
        write_embeddings(tmp_path / f"f{suffix}", matrix[:4], table)


def test_cli_embeds_a_manifest(tiny_checkpoint, tiny_corpus, tmp_path, capsys):
    out = tmp_path / "emb.parquet"
    arguments = ["--model", str(tiny_checkpoint), "--input", str(tiny_corpus), "--out", str(out), "--device", "cpu"]
    assert main(arguments) == 0
    matrix, table = read_embeddings(out)
    assert matrix.shape == (16, 32)
    assert sorted(set(table["speaker"])) == ["spk0", "spk1", "spk2", "spk3"]
    assert "16 embeddings of dimension 32" in capsys.readouterr().out
    # A folder works as input too.
    assert main(["--model", "fbank-stats", "--input", str(tiny_corpus.parent), "--out", str(tmp_path / "f.npy")]) == 0
    assert read_embeddings(tmp_path / "f.npy")[0].shape == (16, 160)


def test_fbank_statistics_ignore_recording_level(tiny_corpus, tmp_path):
    from modeling_dino_speech.data.audio import load_audio

    original = _paths(tiny_corpus)["path"][0]
    quieter = tmp_path / "quieter.wav"
    sf.write(quieter, 0.25 * load_audio(original, SR), SR, subtype="FLOAT")
    model, feature_extractor = load_model("fbank-stats", device="cpu")
    a, b = embed_files(model, feature_extractor, [original, str(quieter)], progress=False)
    np.testing.assert_allclose(a, b, atol=1e-3)
    assert float(a @ b) / 2 == pytest.approx(1.0, abs=1e-6)  # two unit halves: cosine = dot / 2


# ------------------------------------------------------------------------ long audio, bad audio, paths


def test_window_starts_cover_the_audio_with_full_windows():
    from modeling_dino_speech.inference import window_starts

    assert window_starts(50, 100, 50) == [0]
    assert window_starts(100, 100, 50) == [0]
    assert window_starts(260, 100, 50) == [0, 50, 100, 150, 160]
    assert window_starts(250, 100, 100) == [0, 100, 150]
    with pytest.raises(ValueError, match="positive"):
        window_starts(10, 0, 5)


def test_long_audio_is_embedded_in_windows_merged_into_one(tiny_checkpoint, tmp_path):
    from helpers import synth_voice

    from modeling_dino_speech.inference import embed_sources

    model, feature_extractor = load_model(tiny_checkpoint, device="cpu")
    rng = np.random.default_rng(0)
    wave = np.concatenate([synth_voice(1, 4.0, rng), synth_voice(1, 4.0, rng), synth_voice(1, 4.5, rng)])
    path = tmp_path / "long.wav"
    sf.write(path, wave, SR, subtype="FLOAT")
    options = dict(window_seconds=4.0, hop_seconds=2.0, max_whole_seconds=5.0, progress=False)
    from_file = embed_sources(model, feature_extractor, [str(path)], **options)
    from_array = embed_sources(model, feature_extractor, [wave], **options)
    assert from_file.windows.tolist() == [6] and from_array.windows.tolist() == [6]  # 0 2 4 6 8 8.5
    np.testing.assert_allclose(from_file.embeddings, from_array.embeddings, rtol=1e-4, atol=1e-5)
    # The merge: the windows' unit embeddings averaged with weights by their speech seconds.
    windows = [wave[int(s * SR) : int(s * SR) + 4 * SR] for s in (0, 2, 4, 6, 8, 8.5)]
    each = embed_sources(model, feature_extractor, windows, progress=False)
    unit = each.embeddings / np.linalg.norm(each.embeddings, axis=1, keepdims=True)
    merged = (each.speech_seconds[:, None] * unit).sum(axis=0)
    cosine = merged @ from_file.embeddings[0] / np.linalg.norm(merged) / np.linalg.norm(from_file.embeddings[0])
    assert cosine == pytest.approx(1.0, abs=1e-5)
    # Short inputs stay whole: the same embedding as embed_files gives.
    whole = embed_sources(model, feature_extractor, [str(path)], progress=False)
    assert whole.windows.tolist() == [1]
    np.testing.assert_allclose(whole.embeddings, embed_files(model, feature_extractor, [str(path)], progress=False))


def test_unreadable_files_do_not_cost_the_others(tiny_checkpoint, tiny_corpus, tmp_path):
    from modeling_dino_speech.inference import EmbeddingError

    model, feature_extractor = load_model(tiny_checkpoint, device="cpu")
    good = list(_paths(tiny_corpus)["path"][:3])
    wave = np.full(16000, 0.1, dtype=np.float32)
    wave[5] = np.inf
    bad = tmp_path / "inf.wav"
    sf.write(bad, wave, SR, subtype="FLOAT")
    with pytest.raises(EmbeddingError, match=r"1 input\(s\) could not be embedded:\n  .*inf.wav: 1 NaN/Inf") as err:
        embed_files(model, feature_extractor, [good[0], str(bad), *good[1:]], batch_size=2, progress=False)
    kept = err.value.result.embeddings
    assert np.isnan(kept[1]).all() and np.isfinite(kept[[0, 2, 3]]).all()
    np.testing.assert_allclose(kept[[0, 2, 3]], embed_files(model, feature_extractor, good, progress=False), atol=1e-5)


def test_cli_embeds_one_file_keeps_going_past_bad_ones_and_never_overwrites_its_input(
    tiny_checkpoint, tiny_corpus, tmp_path, capsys
):
    import pandas as pd

    one = _paths(tiny_corpus)["path"][0]
    assert main(["--model", str(tiny_checkpoint), "--input", one, "--out", str(tmp_path / "one.npy")]) == 0
    assert read_embeddings(tmp_path / "one.npy")[0].shape == (1, 32)
    # --out corpus/train.npy would write its side table over corpus/train.csv, the input.
    with pytest.raises(ValueError, match=r"train.csv: would overwrite the input"):
        main(["--model", "fbank-stats", "--input", str(tiny_corpus), "--out", str(tiny_corpus.with_suffix(".npy"))])
    manifest = pd.read_csv(tiny_corpus)
    broken = tmp_path / "nan.wav"
    wave = np.zeros(8000, dtype=np.float32)
    wave[3] = np.nan
    sf.write(broken, wave, SR, subtype="FLOAT")
    rows = pd.concat(
        [
            manifest.assign(path=[str(tiny_corpus.parent / p) for p in manifest["path"]])[:3],
            pd.DataFrame({"path": [str(broken)], "speaker": ["x"], "duration": [0.5]}),
        ]
    )
    listed = tmp_path / "with_bad.csv"
    rows.to_csv(listed, index=False)
    capsys.readouterr()
    assert main(["--model", "fbank-stats", "--input", str(listed), "--out", str(tmp_path / "e.parquet")]) == 1
    matrix, table = read_embeddings(tmp_path / "e.parquet")
    assert matrix.shape == (3, 160) and str(broken) not in set(table["path"])
    assert "speech_seconds" in table.columns
    assert "nan.wav: 1 NaN/Inf sample(s)" in capsys.readouterr().err


def test_local_looking_model_paths_fail_at_once(tmp_path, monkeypatch):
    from transformers import AutoFeatureExtractor, AutoModel

    from modeling_dino_speech.inference import looks_like_local_path

    def hub_lookup(*args, **kwargs):
        raise AssertionError(f"looked {args[0]!r} up on the Hub instead of failing at once")

    # at once = before transformers is asked to resolve the name (which would try the Hub)
    monkeypatch.setattr(AutoModel, "from_pretrained", hub_lookup)
    monkeypatch.setattr(AutoFeatureExtractor, "from_pretrained", hub_lookup)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").mkdir()
    for spec in ("tiny/fnal", "./x", "x/y/z", "~/nowhere", "final", "runs/"):
        assert looks_like_local_path(spec), spec
        with pytest.raises(FileNotFoundError, match="model folder does not exist"):
            load_model(spec)
    assert not looks_like_local_path("someone/model-name")


def test_remote_code_runs_only_when_allowed(tmp_path):
    import json

    folder = tmp_path / "custom"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "mystery",
                "auto_map": {"AutoConfig": "configuration_x.XConfig", "AutoModel": "modeling_x.XModel"},
            }
        )
    )
    marker = tmp_path / "ran"
    (folder / "configuration_x.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    with pytest.raises(ValueError, match=r"custom: its model type is unknown.*--trust-remote-code"):
        load_model(folder)
    assert not marker.exists()
    with pytest.raises(Exception):  # noqa: B017 (allowed to run: the code runs, and is broken)
        load_model(folder, trust_remote_code=True)
    assert marker.exists()
