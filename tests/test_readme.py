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


def test_python_example_runs(tmp_path, tiny_config):
    example = re.search(r"## Use a checkpoint\n+```python\n(.*?)```", README, re.S).group(1)
    final = tmp_path / "runs" / "demo" / "dino" / "final"
    DinoSpeechModel(tiny_config).save_pretrained(final)
    DinoSpeechFeatureExtractor.from_model_config(tiny_config).save_pretrained(final)
    rng = np.random.default_rng(0)
    for name, seconds in (("a.wav", 1.5), ("b.wav", 2.0)):
        sf.write(tmp_path / name, (0.1 * rng.standard_normal(int(seconds * 22050))).astype(np.float32), 22050)
    proc = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    similarity = float(proc.stdout.strip().splitlines()[-1])
    assert -1.0 <= similarity <= 1.0
