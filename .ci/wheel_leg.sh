#!/usr/bin/env bash
# CI leg "what users see": build the wheel, install it (not editable) with the newest torch pip offers into a
# fresh venv, and from a folder outside the repository train a tiny DINO model to an exported final/ with its
# model card, load it with AutoModel, embed a file and load an `evaluate` metric.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/dino-speech-wheel.XXXXXX")"
trap 'rm -rf "$work"' EXIT
python="${PYTHON:-python3}"

"$python" -m pip wheel --quiet --no-deps --wheel-dir "$work/dist" "$repo"
wheel="$(ls "$work"/dist/dino_speech-*.whl)"
echo "wheel: $(basename "$wheel")"
# Only the package at the top level: no `eval` or `train` module of ours in site-packages.
"$python" - "$wheel" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
top = sorted({n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")})
assert top == ["modeling_dino_speech"], f"the wheel installs {top} at the top level"
for needed in ("modeling_dino_speech/model_card.md", "modeling_dino_speech/metrics/eer/eer.py"):
    assert needed in names, f"{needed} is missing from the wheel"
EOF

"$python" -m venv "$work/venv"
pip="$work/venv/bin/pip"
"$pip" install --quiet --upgrade pip
# `torch` unpinned: pip takes the newest release it is allowed to.
"$pip" install --quiet "$wheel[train,eval]" torch
"$work/venv/bin/python" -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__)"
if "$work/venv/bin/python" -c "import torchaudio" 2>/dev/null; then echo "torchaudio was pulled in by the core or an extra" >&2; exit 1; fi

mkdir -p "$work/outside"
cd "$work/outside"
"$work/venv/bin/python" - <<'EOF'
import numpy as np, soundfile as sf
# Eight "voices": harmonic tones with their own pitch and formant-like tilt, 8 kHz (resampled by the package).
rng = np.random.default_rng(0)
rows = ["path,speaker,duration"]
for v in range(8):
    f0, tilt = 90 + 25 * v, 0.5 + 0.1 * v
    for u in range(3):
        t = np.arange(int(8000 * 3.0)) / 8000
        pitch = f0 * (1 + 0.05 * np.sin(2 * np.pi * (0.5 + u) * t))
        phase = 2 * np.pi * np.cumsum(pitch) / 8000
        wave = sum(np.sin(k * phase) / k ** tilt for k in range(1, 12)) + 0.02 * rng.standard_normal(t.size)
        name = f"v{v}_{u}.wav"
        sf.write(name, (0.2 * wave / np.abs(wave).max()).astype(np.float32), 8000)
        rows.append(f"{name},v{v},3.0")
open("train.csv", "w").write("\n".join(rows) + "\n")
open("tiny.yaml", "w").write("""
output_dir: run
model: {backbone: ecapa_tdnn, ecapa_channels: 32, ecapa_se_channels: 16, ecapa_mfa_channels: 96,
        attention_channels: 16, embedding_size: 32, dino_hidden_size: 64, dino_bottleneck_size: 16,
        dino_num_prototypes: 64}
data: {train: train.csv, batch_size: 4, num_workers: 0,
       crops: {n_global: 2, global_seconds: 1.5, n_local: 2, local_seconds: 0.8}}
optim: {max_steps: 3, warmup_epochs: 0.1}
mixed_precision: "no"
log_every: 1
save_every: 0
""")
EOF
"$work/venv/bin/dino-speech" train dino --config tiny.yaml
test -f run/final/model.safetensors
test -f run/final/README.md
grep -q "DINO" run/final/README.md
"$work/venv/bin/python" - <<'EOF'
import evaluate, soundfile as sf, torch
import modeling_dino_speech
from modeling_dino_speech.metrics import metric_path
from transformers import AutoFeatureExtractor, AutoModel

model = AutoModel.from_pretrained("run/final").eval()
fe = AutoFeatureExtractor.from_pretrained("run/final")
wave, rate = sf.read("v0_0.wav", dtype="float32")
with torch.inference_mode():
    embedding = model(**fe(wave, sampling_rate=rate, return_tensors="pt")).embeddings
assert embedding.shape == (1, 32) and torch.isfinite(embedding).all(), embedding
eer = evaluate.load(metric_path("eer")).compute(predictions=[0.9, 0.8, 0.3, 0.1], references=[1, 0, 1, 0])
assert abs(eer["eer"] - 0.5) < 1e-9, eer
print("wheel leg: trained, exported, loaded with AutoModel, embedded", tuple(embedding.shape), "| eer metric", eer)
EOF
# Files in, scores out, from the installed console script (the checkpoint is not calibrated: no decision).
"$work/venv/bin/dino-speech" similarity run/final v0_0.wav v0_1.wav | grep -q "^score "
