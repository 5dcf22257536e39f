"""Benchmark: does the multi-crop loader keep up with training?

Measures, on synthetic audio written to a temp folder:

1. crops/s delivered by ``build_multicrop_dataloader`` (crops read from disk, augmented, fbank in collate)
   with 0, 1 and 2 workers, augmentation off and on; worker start-up is reported apart from the steady rate;
2. a naive baseline in the same run: whole-file reads and one ``torchaudio.compliance.kaldi.fbank`` call per
   crop (what per-utterance recipes do), no augmentation;
3. crops/s one training step consumes: forward + backward of ``DinoSpeechForPreTraining`` (or
   ``DinoSpeechModel``) on the same crop shapes, every global and local crop through the student plus the
   global crops through a no-grad teacher, with the thread count training would use.

The last column divides each loader rate by the training rate; the issue asks for >= 2x with workers.

Usage (about 2-4 minutes on 2 shared cores):
    .venv/bin/python benchmarks/bench_data.py
    .venv/bin/python benchmarks/bench_data.py --model paper --batch-size 8      # the light ResNet34
    .venv/bin/python benchmarks/bench_data.py --workers 0 2 --utterances 32     # quicker look
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from modeling_dino_speech import DinoSpeechConfig, DinoSpeechFeatureExtractor
from modeling_dino_speech.data.audio import load_audio
from modeling_dino_speech.data.augment import AugmentConfig
from modeling_dino_speech.data.multicrop import MultiCropConfig, build_multicrop_dataloader, item_rng

SR = 16000


def synth_corpus(folder: str, count: int, seed: int = 0) -> list[str]:
    """Speech-like files of 5-10 s: a gliding harmonic source, syllable-rate amplitude modulation, noise."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        n = int(rng.uniform(5.0, 10.0) * SR)
        t = np.arange(n) / SR
        f0 = rng.uniform(90, 240) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
        phase = 2 * np.pi * np.cumsum(f0) / SR
        voiced = sum(np.sin(h * phase) / h for h in range(1, 12))
        envelope = np.clip(np.sin(2 * np.pi * rng.uniform(3, 6) * t), 0, None) ** 0.5
        x = 0.1 * voiced * envelope + 0.003 * rng.standard_normal(n)
        path = os.path.join(folder, f"spk{i % 8}_{i:04d}.wav")
        sf.write(path, x.astype(np.float32), SR, subtype="PCM_16")
        paths.append(path)
    return paths


def time_loader(paths, crop_cfg, aug_cfg, fe, batch_size, workers, batches, seed=0):
    """(startup seconds, steady crops/s) of the real loader."""
    loader = build_multicrop_dataloader(
        paths, crop_cfg, aug_cfg, fe, batch_size=batch_size, num_workers=workers, seed=seed
    )
    crops_per_batch = (crop_cfg.n_global + crop_cfg.n_local) * batch_size
    start = time.perf_counter()
    iterator = iter(loader)
    next(iterator)
    first = time.perf_counter()
    done = 0
    for _ in range(batches):
        try:
            next(iterator)
        except StopIteration:
            break
        done += 1
    end = time.perf_counter()
    del iterator
    return first - start, done * crops_per_batch / (end - first)


def time_naive(paths, crop_cfg, batch_size, batches, seed=0):
    """Whole-file reads and one Kaldi fbank call per crop, in the main process."""
    import torchaudio.compliance.kaldi as kaldi

    lengths = [crop_cfg.global_samples(SR)] * crop_cfg.n_global + [crop_cfg.local_samples(SR)] * crop_cfg.n_local
    start = time.perf_counter()
    for index in range(batches * batch_size):
        wav = load_audio(paths[index % len(paths)], SR)
        rng = item_rng(seed, 0, index)
        for length in lengths:
            offset = int(rng.integers(0, max(1, len(wav) - length)))
            crop = torch.from_numpy(wav[offset : offset + length]).unsqueeze(0) * 32768
            feats = kaldi.fbank(crop, num_mel_bins=80, low_freq=20, high_freq=7600, dither=0.0)
            feats - feats.mean(0, keepdim=True)
    return batches * batch_size * len(lengths) / (time.perf_counter() - start)


def time_training_step(model_kind, batch, steps):
    """crops/s consumed by forward+backward of the student (all crops) + a no-grad teacher (global crops)."""
    import modeling_dino_speech as mds

    if model_kind == "paper":
        config = DinoSpeechConfig(
            resnet_layers=(3, 4, 6, 3),
            resnet_base_width=16,
            dino_hidden_size=2048,
            dino_bottleneck_size=256,
            dino_num_prototypes=65536,
        )
    else:
        config = DinoSpeechConfig(
            resnet_layers=(1, 1, 1, 1),
            resnet_base_width=16,
            embedding_size=192,
            dino_hidden_size=512,
            dino_bottleneck_size=128,
            dino_num_prototypes=2048,
        )
    cls = getattr(mds, "DinoSpeechForPreTraining", None) or mds.DinoSpeechModel
    student, teacher = cls(config).train(), cls(config).eval()
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4)
    g = batch["global_features"].flatten(0, 1)
    l = batch["local_features"].flatten(0, 1)

    def output(model, feats):
        out = model(input_features=feats)
        return out.logits if hasattr(out, "logits") and out.logits is not None else out.embeddings

    def step():
        with torch.no_grad():
            target = output(teacher, g).softmax(-1)
        loss = 0.0
        for feats in (g, l):
            loss = (
                loss
                + -(target.repeat(len(feats) // len(g) + 1, 1)[: len(feats)] * output(student, feats).log_softmax(-1))
                .sum(-1)
                .mean()
            )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()  # warm-up (allocations, kernels)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - start) / steps
    return (len(g) + len(l)) / seconds, seconds, cls.__name__


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=5, help="steady-state batches timed per loader setting")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--global-seconds", type=float, default=4.0)
    parser.add_argument("--local-seconds", type=float, default=2.0)
    parser.add_argument("--model", choices=["small", "paper"], default="small")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the training process")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    crop_cfg = MultiCropConfig(global_seconds=args.global_seconds, local_seconds=args.local_seconds)
    fe = DinoSpeechFeatureExtractor()
    crops_per_item = crop_cfg.n_global + crop_cfg.n_local
    with tempfile.TemporaryDirectory() as folder:
        paths = synth_corpus(folder, args.utterances)
        rows = []
        for aug_name, aug_cfg in (("off", None), ("on", AugmentConfig())):
            for workers in args.workers:
                startup, rate = time_loader(paths, crop_cfg, aug_cfg, fe, args.batch_size, workers, args.batches)
                rows.append((f"multi-crop loader, {workers} worker(s), aug {aug_name}", startup, rate))
        naive = time_naive(paths, crop_cfg, args.batch_size, max(1, args.batches // 2))
        rows.append(("naive: whole reads + per-crop kaldi.fbank, aug off", float("nan"), naive))
        batch = next(iter(build_multicrop_dataloader(paths, crop_cfg, None, fe, batch_size=args.batch_size)))
        train_rate, step_seconds, model_name = time_training_step(args.model, batch, args.steps)

    print(
        f"\nbench_data  ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, "
        f"{args.threads} training thread(s))"
    )
    print(
        f"crops per utterance: {crop_cfg.n_global} x {crop_cfg.global_seconds:g} s + {crop_cfg.n_local} x "
        f"{crop_cfg.local_seconds:g} s; batch {args.batch_size} utterances = {crops_per_item * args.batch_size} crops\n"
    )
    print(f"{'setting':<52} {'startup s':>10} {'crops/s':>9} {'x training':>11}")
    print("-" * 85)
    for name, startup, rate in rows:
        startup_text = f"{startup:10.2f}" if startup == startup else f"{'-':>10}"
        print(f"{name:<52} {startup_text} {rate:9.1f} {rate / train_rate:10.1f}x")
    print("-" * 85)
    print(
        f"{'training step (' + args.model + ' ' + model_name + ', fwd+bwd)':<52} {'':>10} "
        f"{train_rate:9.1f} {1.0:10.1f}x"
    )
    print(f"  one step = {step_seconds:.2f} s for {crops_per_item * args.batch_size} crops")
    best = max(rate for name, _, rate in rows if "worker" in name and "aug on" in name)
    verdict = "keeps up" if best >= 2 * train_rate else "does NOT keep up"
    print(
        f"\nbest augmented loader: {best / train_rate:.1f}x the training step's consumption -> {verdict} (target >= 2x)"
    )


if __name__ == "__main__":
    main()
