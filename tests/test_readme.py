"""The README's promises: its first two commands are what CI and a new user run, and its Python example runs."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from modeling_dino_speech import DinoSpeechFeatureExtractor, DinoSpeechModel

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_first_commands_are_make_demo_then_make_test_and_ci_runs_the_latter():
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
    ci = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert ci[-1] == "make test"


def _checkpoint_and_voices(tmp_path, tiny_config):
    """`runs/demo/dino/final` as training exports it (calibrated), and two recordings at 22.05 kHz, one stereo."""
    from modeling_dino_speech.calibration import set_calibration

    final = tmp_path / "runs" / "demo" / "dino" / "final"
    set_calibration(tiny_config, {"eer": 10.0, "eer_threshold": 0.5, "trials": "trials_synth.txt"})
    DinoSpeechModel(tiny_config).save_pretrained(final)
    DinoSpeechFeatureExtractor.from_model_config(tiny_config).save_pretrained(final)
    rng = np.random.default_rng(0)
    t = np.arange(int(1.5 * 22050)) / 22050
    voice = 0.2 * np.sin(2 * np.pi * 150 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(t.size)
    sf.write(tmp_path / "a.wav", voice.astype(np.float32), 22050)
    sf.write(tmp_path / "b.wav", np.stack([voice, voice[::-1]], axis=1).astype(np.float32), 22050)


def _section():
    return README.split("## Use a checkpoint\n", 1)[1].split("\n## ", 1)[0]


def test_use_a_checkpoint_opens_with_three_lines_of_python_and_one_command(tmp_path, tiny_config):
    opening = re.match(r"\s*```python\n(.*?)```\s*```bash\n(.*?)```", _section(), re.S)
    assert opening, "the section opens with a python block and, right after it, a bash block"
    python, bash = opening.groups()
    assert len([line for line in python.splitlines() if line.strip()]) == 3
    assert len([line for line in bash.splitlines() if line.strip()]) == 1
    command = bash.split("#")[0].split()
    assert command[:2] == ["dino-speech", "similarity"]
    _checkpoint_and_voices(tmp_path, tiny_config)

    script = python + "\nprint(score, same_speaker)\n"
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    score, decision = proc.stdout.strip().splitlines()[-1].split()
    assert -1.0 <= float(score) <= 1.0 and decision == str(float(score) >= 0.5)

    binary = Path(sys.executable).with_name("dino-speech")
    proc = subprocess.run([str(binary), *command[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout.strip()
    assert out.startswith(f"score {float(score):.4f}  ")
    assert ("same speaker" if float(score) >= 0.5 else "different speakers") in out and "threshold 0.5000" in out
