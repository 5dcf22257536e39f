"""Benchmark: our batched Kaldi fbank against a per-utterance `torchaudio.compliance.kaldi.fbank` loop.

The baseline is what wespeaker and 3D-Speaker do in their data pipelines: one `kaldi.fbank` call per
utterance (16-bit scale, 80 bins, 20-7600 Hz, no dither), then the utterance mean subtracted. A second
baseline replaces that mean with `torchaudio.functional.sliding_window_cmn` (150 frames, centred), the
torchaudio route to the sliding normalisation that is our default. Ours:

- `compute_features` on a `(B, N)` float tensor (the collate-function path), utterance mean normalisation
  (same output as the baseline; the max difference is printed) and the default sliding normalisation;
- `__call__` on a list of 1-D numpy arrays (the Hugging Face path: conversion, padding and the attention
  mask included).

All rows of one batch size are timed round-robin in one run (median of `--rounds`), so the ratios are
measured side by side.

Usage (about a minute on 2 shared cores):
    .venv/bin/python benchmarks/bench_features.py
    .venv/bin/python benchmarks/bench_features.py --batches 32 128 512 --threads 1
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torchaudio.compliance.kaldi as kaldi
from _harness import interleaved, machine_line, table
from torchaudio.functional import sliding_window_cmn

from modeling_dino_speech import DinoSpeechFeatureExtractor

SR = 16000
BASELINE = "kaldi.fbank loop + utterance CMN (baseline)"
SLIDING_BASELINE = "kaldi.fbank loop + torchaudio sliding_window_cmn (sliding baseline)"


def kaldi_loop(waves: torch.Tensor, sliding: bool = False) -> list:
    """Per-utterance fbank + utterance CMN, the wespeaker / 3D-Speaker way (or torchaudio's sliding CMN)."""
    out = []
    for wave in waves:
        feats = kaldi.fbank(
            wave[None] * 32768.0,
            num_mel_bins=80,
            frame_length=25.0,
            frame_shift=10.0,
            dither=0.0,
            low_freq=20.0,
            high_freq=7600.0,
            sample_frequency=SR,
        )
        if sliding:
            out.append(sliding_window_cmn(feats, cmn_window=150, center=True))
        else:
            out.append(feats - feats.mean(dim=0, keepdim=True))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[1, 2], help="intra-op thread counts (DataLoader workers run with 1)"
    )
    parser.add_argument("--chunk", type=int, default=8, help="utterances per call in the chunked row")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print("bench_features: batched fbank vs a per-utterance torchaudio.compliance.kaldi.fbank loop")
    print(machine_line(max(args.threads)))

    utterance_cmn = DinoSpeechFeatureExtractor(mean_normalization="utterance")
    sliding_cmn = DinoSpeechFeatureExtractor(mean_normalization="sliding")
    rng = np.random.default_rng(0)
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in args.batches:
            waves = torch.from_numpy((0.1 * rng.standard_normal((batch, int(args.seconds * SR)))).astype(np.float32))
            arrays = list(waves.numpy())
            with torch.inference_mode():
                ours, _ = utterance_cmn.compute_features(waves)
                reference = torch.stack(kaldi_loop(waves))
                diff = (ours - reference).abs().max().item()
                sliding_diff = (
                    (sliding_cmn.compute_features(waves)[0] - torch.stack(kaldi_loop(waves, True))).abs().max()
                )
                times = interleaved(
                    {
                        BASELINE: lambda: kaldi_loop(waves),
                        SLIDING_BASELINE: lambda: kaldi_loop(waves, sliding=True),
                        "ours compute_features, utterance CMN": lambda: utterance_cmn.compute_features(waves),
                        "ours compute_features, sliding CMN (default)": lambda: sliding_cmn.compute_features(waves),
                        f"ours compute_features, sliding CMN, {args.chunk} utterances per call": lambda: [
                            sliding_cmn.compute_features(w) for w in waves.split(args.chunk)
                        ],
                        "ours __call__ (numpy list), sliding CMN": lambda: sliding_cmn(
                            arrays, sampling_rate=SR, return_tensors="pt"
                        ),
                    },
                    args.rounds,
                )
            for name, seconds in times.items():
                same_cmn = times[SLIDING_BASELINE if "sliding" in name else BASELINE]
                rows.append(
                    [
                        threads,
                        f"{batch} x {args.seconds:g} s",
                        name,
                        f"{seconds * 1e3:.1f}",
                        f"{batch * args.seconds / seconds:.0f}",
                        f"{times[BASELINE] / seconds:.2f}x",
                        f"{same_cmn / seconds:.2f}x",
                    ]
                )
            print(
                f"{threads} thread(s), batch {batch}: max |ours - kaldi.fbank loop| = {diff:.2e} (utterance CMN), "
                f"{sliding_diff:.2e} (sliding CMN) in log-mel units"
            )
    print(f"\nFbank of 16 kHz audio, median of {args.rounds} interleaved rounds")
    print(
        table(
            [
                "threads",
                "batch",
                "method",
                "ms / batch",
                "audio s / s",
                "vs utterance-CMN loop",
                "vs loop with the same CMN",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
