"""Benchmark: peak memory and time to embed one long recording, whole vs in windows.

A recording of H hours (a harmonic "voice" with pauses, 16 kHz 16-bit WAV, written once to a temporary folder)
is embedded with random weights of the demo recipe's model (thin ECAPA-TDNN) and of the paper's light ResNet34
(`configs/paper_lresnet34.yaml`):

- **whole**: the file decoded at once and embedded in one forward pass (what `dino-speech verify` does with an
  utterance, and every command did before windowing);
- **windowed**: what `DinoSpeechVerifier` and `dino-speech embed/similarity/score` do with audio longer than 30 s:
  10 s windows every 5 s, read from the file 16 windows (160 s) at a time, merged into one embedding.

Each run is its own subprocess, so its peak resident memory (`ru_maxrss`) is its own. The table gives the
resident memory after set-up (model built, nothing decoded), the peak while embedding, the difference (what the
recording costs), that difference per hour of audio, and the wall time.

Usage (about 15 minutes on 2 shared cores with the defaults):
    .venv/bin/python benchmarks/bench_long_audio.py
    .venv/bin/python benchmarks/bench_long_audio.py --hours 0.25 1 2 --models demo --modes windowed
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import ROOT, machine_line, peak_rss_mb, table

RECIPES = {"demo": ROOT / "configs" / "demo.yaml", "paper": ROOT / "configs" / "paper_lresnet34.yaml"}
NAMES = {"demo": "demo ECAPA-TDNN (C=128)", "paper": "light ResNet34 (paper)"}
RATE = 16000


def current_rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def write_recording(path: Path, hours: float) -> None:
    """`hours` of a voice-like signal (syllables of a gliding harmonic tone, pauses between phrases), written a
    minute at a time."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", samplerate=RATE, channels=1, subtype="PCM_16") as out:
        for minute in range(int(round(hours * 60))):
            t = np.arange(60 * RATE) / RATE
            f0 = 110 + 20 * np.sin(2 * np.pi * 0.3 * t + minute)
            phase = 2 * np.pi * np.cumsum(f0) / RATE
            voice = sum(0.6**h * np.sin(h * phase) for h in range(1, 12))
            syllables = np.sin(2 * np.pi * 3.0 * t) ** 2 * (np.sin(2 * np.pi * 0.2 * t) > -0.3)
            wave = 0.2 * voice * syllables / 3 + 0.003 * rng.standard_normal(t.size)
            out.write(wave.astype(np.float32))


def run_worker(recipe: str, path: str, mode: str, threads: int) -> dict:
    import torch

    from modeling_dino_speech import DinoSpeechConfig, DinoSpeechFeatureExtractor, DinoSpeechModel
    from modeling_dino_speech.inference import embed_sources
    from modeling_dino_speech.training.config import DinoTrainConfig, load_config

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = DinoSpeechConfig(**load_config(DinoTrainConfig, RECIPES[recipe]).model)
    model = DinoSpeechModel(config).eval()
    fe = DinoSpeechFeatureExtractor.from_model_config(config)
    options = (
        dict(window_seconds=10.0, hop_seconds=5.0, max_whole_seconds=30.0, batch_size=16, max_batch_seconds=320.0)
        if mode == "windowed"
        else dict(batch_size=1, max_batch_seconds=float("inf"))
    )
    setup = current_rss_mb()
    started = time.perf_counter()
    result = embed_sources(model, fe, [path], progress=False, **options)
    seconds = time.perf_counter() - started
    return {
        "setup_mb": setup,
        "peak_mb": peak_rss_mb(),
        "seconds": seconds,
        "windows": int(result.windows[0]),
        "finite": bool(torch.isfinite(torch.from_numpy(result.embeddings)).all()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, nargs="+", default=[0.25, 1.0])
    parser.add_argument("--models", nargs="+", choices=sorted(RECIPES), default=["demo", "paper"])
    parser.add_argument("--modes", nargs="+", choices=["whole", "windowed"], default=["whole", "windowed"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", nargs=3, metavar=("RECIPE", "PATH", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_worker(*args.worker, threads=args.threads)))
        return 0

    print(machine_line(args.threads))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_long_audio_") as scratch:
        for hours in args.hours:
            path = Path(scratch) / f"recording_{hours:g}h.wav"
            write_recording(path, hours)
            for recipe in args.models:
                for mode in args.modes:
                    env = {**os.environ, "PYTHONPATH": str(ROOT)}
                    command = [sys.executable, __file__, "--threads", str(args.threads)]
                    proc = subprocess.run(
                        [*command, "--worker", recipe, str(path), mode], capture_output=True, text=True, env=env
                    )
                    if proc.returncode != 0:
                        print(f"{recipe} {mode} {hours:g} h failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                        continue
                    m = json.loads(proc.stdout.strip().splitlines()[-1])
                    cost = m["peak_mb"] - m["setup_mb"]
                    rows.append(
                        [
                            NAMES[recipe],
                            f"{hours:g} h",
                            mode + (f" ({m['windows']} windows)" if mode == "windowed" else ""),
                            f"{m['setup_mb']:.0f}",
                            f"{m['peak_mb']:.0f}",
                            f"{cost:.0f}",
                            f"{cost / hours / 1024:.2f}",
                            f"{m['seconds']:.0f}",
                        ]
                    )
                    print(" | ".join(rows[-1]), flush=True)
            path.unlink()
    headers = [
        "model",
        "audio",
        "mode",
        "RSS after set-up (MiB)",
        "peak RSS (MiB)",
        "recording's cost (MiB)",
        "cost per hour of audio (GiB)",
        "wall s",
    ]
    print()
    print(table(headers, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
