"""A saved checkpoint carries its code: it loads with trust_remote_code=True where the package is absent, and
resamples audio at any rate without torchaudio."""

import json
import subprocess
import sys
import sysconfig
import textwrap

import torch

from modeling_dino_speech import DinoSpeechConfig, DinoSpeechFeatureExtractor, DinoSpeechForXVector


def test_trust_remote_code_without_the_package(tmp_path):
    config = DinoSpeechConfig(resnet_layers=[1, 1, 1, 1], resnet_base_width=8, embedding_size=24, num_labels=4)
    model = DinoSpeechForXVector(config).eval()
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    DinoSpeechFeatureExtractor.from_model_config(config).save_pretrained(checkpoint)
    wave = torch.linspace(-0.5, 0.5, 16000).sin().numpy()
    fe = DinoSpeechFeatureExtractor.from_model_config(config)
    with torch.no_grad():
        expected = model.dino_speech(**fe(wave, sampling_rate=16000, return_tensors="pt")).embeddings[0].tolist()
        expected_8k = model.dino_speech(**fe(wave[::2], sampling_rate=8000, return_tensors="pt")).embeddings[0].tolist()

    script = tmp_path / "load.py"
    script.write_text(
        textwrap.dedent(f"""
        import importlib.util, json, sys
        # site-packages without its .pth hooks: transformers is importable, the editable package is not
        sys.path.append({sysconfig.get_paths()["purelib"]!r})
        assert importlib.util.find_spec("modeling_dino_speech") is None, "package should not be importable"
        sys.modules["torchaudio"] = None  # as if it were not installed: importing it raises ImportError
        import torch
        from transformers import AutoFeatureExtractor, AutoModel, AutoModelForAudioXVector
        path = {str(checkpoint)!r}
        fe = AutoFeatureExtractor.from_pretrained(path, trust_remote_code=True)
        model = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
        xvector = AutoModelForAudioXVector.from_pretrained(path, trust_remote_code=True).eval()
        wave = torch.linspace(-0.5, 0.5, 16000).sin().numpy()
        with torch.no_grad():
            emb = model(**fe(wave, sampling_rate=16000, return_tensors="pt")).embeddings[0].tolist()
            emb_8k = model(**fe(wave[::2], sampling_rate=8000, return_tensors="pt")).embeddings[0].tolist()
        print(json.dumps({{"model": type(model).__name__, "xvector": type(xvector).__name__,
                          "fe": type(fe).__name__, "module": type(model).__module__, "emb": emb, "emb_8k": emb_8k}}))
    """)
    )
    env = {"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-S", str(script)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["model"] == "DinoSpeechModel" and out["xvector"] == "DinoSpeechForXVector"
    assert out["fe"] == "DinoSpeechFeatureExtractor"
    assert out["module"].startswith("transformers_modules"), out["module"]
    torch.testing.assert_close(torch.tensor(out["emb"]), torch.tensor(expected), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.tensor(out["emb_8k"]), torch.tensor(expected_8k), atol=1e-5, rtol=1e-5)


def test_pipeline_ships_with_the_checkpoint(tmp_path):
    """pipeline("speaker-embedding" | "feature-extraction", model=dir, trust_remote_code=True) without the package:
    files, (array, rate) pairs and datasets-style dicts in, the model's embeddings out."""
    import numpy as np
    import soundfile as sf

    config = DinoSpeechConfig(resnet_layers=[1, 1, 1, 1], resnet_base_width=8, embedding_size=24, num_labels=3)
    model = DinoSpeechForXVector(config).eval()
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)  # a pseudo-label round's checkpoint: the pipeline loads its AutoModel
    DinoSpeechFeatureExtractor.from_model_config(config).save_pretrained(checkpoint)
    assert (checkpoint / "pipeline_dino_speech.py").is_file()
    assert set(json.loads((checkpoint / "config.json").read_text())["custom_pipelines"]) == {
        "speaker-embedding",
        "feature-extraction",
    }
    wave = (0.3 * np.sin(np.linspace(0, 2000, 24000)) * np.linspace(0, 1, 24000)).astype(np.float32)
    sf.write(tmp_path / "a.wav", wave, 24000, subtype="FLOAT")
    fe = DinoSpeechFeatureExtractor.from_model_config(config)
    with torch.no_grad():
        expected = model.dino_speech(**fe(wave, sampling_rate=24000, return_tensors="pt")).embeddings[0].tolist()

    script = tmp_path / "pipe.py"
    script.write_text(
        textwrap.dedent(f"""
        import importlib.util, json, sys
        sys.path.append({sysconfig.get_paths()["purelib"]!r})
        assert importlib.util.find_spec("modeling_dino_speech") is None, "package should not be importable"
        import soundfile as sf
        from transformers import pipeline
        out = {{}}
        for task in ("speaker-embedding", "feature-extraction"):
            embed = pipeline(task, model={str(checkpoint)!r}, trust_remote_code=True)
            wave, rate = sf.read({str(tmp_path / "a.wav")!r}, dtype="float32")
            results = embed([{str(tmp_path / "a.wav")!r}, (wave, rate), {{"array": wave, "sampling_rate": rate}}])
            out[task] = [r.tolist() for r in results]
            out[task + " class"] = type(embed).__name__
        print(json.dumps(out))
    """)
    )
    env = {"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-S", str(script)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    for task in ("speaker-embedding", "feature-extraction"):
        assert out[task + " class"] == "DinoSpeechEmbeddingPipeline"
        for embedding in out[task]:
            torch.testing.assert_close(torch.tensor(embedding), torch.tensor(expected), atol=1e-5, rtol=1e-5)
