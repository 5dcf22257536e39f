"""Benchmark: the input pipeline with augmentation on the CPU (`data.augment_on: cpu`) against the loader that
only decodes and crops plus augmentation and fbank on the training device (`data.augment_on: device`), and what
the training step consumes, side by side in one run, for the demo and the paper recipes.

For each recipe (its crops, VAD setting and augmentation; synthetic audio, and synthetic MUSAN / RIRS_NOISES
folders where the recipe names them):

1. loader-only crops/s on one core, in the main process (torch on 1 thread), timed round-robin: the CPU path
   (read, crop, augment, fbank: what a DataLoader worker does today) against the raw-crop path (read, crop,
   draw the augmentation plan; int16 crops out);
2. device-side augmentation + fbank crops/s (`DeviceAugmenter` on `--device`: one core of this CPU with
   `--threads 1`, or a GPU);
3. the training step's consumption in crops/s (teacher forward, student forward + backward, AdamW, EMA, centre:
   `bench_train_step.py`'s step; bf16 autocast on CUDA), its peak memory, and on a GPU the GPU-hours of the
   paper's 70 VoxCeleb2 epochs at that rate;
4. the cores each loader needs to feed the step, and to feed the 9,000 crops/s that a GPU sustaining 100 TFLOP/s
   on the paper step would consume (64 GFLOP per utterance of 6 crops; README "Training at paper scale").

Usage (about 5-8 minutes on 2 shared cores; the paper step dominates):
    .venv/bin/python benchmarks/bench_device_pipeline.py
    .venv/bin/python benchmarks/bench_device_pipeline.py --recipes demo --rounds 2
    .venv/bin/python benchmarks/bench_device_pipeline.py --device cuda --paper-batch 96 --steps 10
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile

import numpy as np
import soundfile as sf
import torch
from _harness import ROOT, interleaved, machine_line, median_after_warmup, peak_rss_mb, table
from bench_data import synth_corpus

from modeling_dino_speech import DinoSpeechConfig, DinoSpeechFeatureExtractor
from modeling_dino_speech.data.device_augment import DeviceAugmenter
from modeling_dino_speech.data.multicrop import build_multicrop_dataloader
from modeling_dino_speech.training.config import DinoTrainConfig, load_config

VOXCELEB2_DEV_UTTERANCES = 1_092_009
PAPER_EPOCHS = 70
# What a GPU sustaining 100 TFLOP/s on the paper step consumes: 64 GFLOP per utterance, 6 crops each.
GPU_TARGET_CROPS_PER_S = 100e12 / 64e9 * 6
RECIPES = {"demo": ROOT / "configs" / "demo.yaml", "paper": ROOT / "configs" / "paper_lresnet34.yaml"}


def synth_sources(folder: str, recipe: str, sr: int = 16000) -> dict:
    """Stand-ins for the recipe's augmentation folders: the demo's music-only MUSAN stand-in, or MUSAN (noise,
    music, speech) and RIRS_NOISES layouts for the paper recipe. 16-bit PCM, like the real corpora."""
    rng = np.random.default_rng(1)

    def write(path, audio):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        sf.write(path, np.clip(audio, -1, 1).astype(np.float32), sr, subtype="PCM_16")

    musan = os.path.join(folder, "musan")
    t = np.arange(20 * sr) / sr
    for i in range(6):
        chord = sum(np.sin(2 * np.pi * f * t) for f in rng.uniform(110, 880, size=3))
        write(os.path.join(musan, "music", "synth", f"music-{i}.wav"), 0.1 * chord)
    if recipe == "demo":
        return {"musan_root": musan}
    for i in range(6):
        write(os.path.join(musan, "noise", "synth", f"noise-{i}.wav"), 0.1 * rng.standard_normal(15 * sr))
    for i, path in enumerate(synth_corpus(_mkdir(os.path.join(folder, "speech_src")), 8, seed=7)):
        audio, _ = sf.read(path, dtype="float32")
        write(os.path.join(musan, "speech", "synth", f"speech-{i}.wav"), audio)
    rirs = os.path.join(folder, "RIRS_NOISES")
    for i in range(20):
        length = int(rng.uniform(0.3, 1.2) * sr)
        h = rng.standard_normal(length) * np.exp(-6.9 * np.arange(length) / length)
        h[0] = 4.0
        write(os.path.join(rirs, "simulated_rirs", "smallroom", "Room001", f"Room001-{i:05d}.wav"), h / 4.5)
    return {"musan_root": musan, "rir_root": rirs}


def _mkdir(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path


def recipe_settings(recipe: str, sources: dict):
    cfg = load_config(DinoTrainConfig, RECIPES[recipe])
    aug = copy.deepcopy(cfg.data.augment)
    aug.musan_root, aug.rir_root = sources.get("musan_root"), sources.get("rir_root")
    config = DinoSpeechConfig(**cfg.model)
    return cfg, aug, config, DinoSpeechFeatureExtractor.from_model_config(config)


def take(loader, batches: int) -> list:
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == batches:
            break
    return out


def time_pipeline(recipe: str, paths: list, sources: dict, args, device: torch.device) -> dict:
    cfg, aug, _, fe = recipe_settings(recipe, sources)
    crops = cfg.data.crops
    crops.min_duration = 0.0  # the synthetic files are 5-10 s
    per_item = crops.n_global + crops.n_local
    batch = args.loader_batch
    host_augmenter = DeviceAugmenter(aug, fe, "cpu")  # the planner's bank view; the loaders run on this CPU
    kwargs = dict(crop_cfg=crops, aug_cfg=aug, feature_extractor=fe, batch_size=batch, num_workers=0, seed=0)
    counter = iter(range(10**6))

    def cpu_path():
        return take(build_multicrop_dataloader(paths, epoch=next(counter), **kwargs), args.batches)

    def raw_path():
        return take(
            build_multicrop_dataloader(paths, epoch=next(counter), device_augmenter=host_augmenter, **kwargs),
            args.batches,
        )

    torch.set_num_threads(1)
    loader_s = interleaved({"cpu": cpu_path, "raw": raw_path}, rounds=args.rounds)
    crops_per_call = args.batches * batch * per_item

    # device-side augmentation + fbank on the raw batches, in one pass per crop length
    torch.set_num_threads(args.threads)
    device_augmenter = DeviceAugmenter(aug, fe, device)
    raw_batches = take(
        build_multicrop_dataloader(paths, epoch=0, device_augmenter=device_augmenter, **kwargs), args.batches
    )
    if device.type == "cuda":
        raw_batches = [_pin(b) for b in raw_batches]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def on_device():
        for b in raw_batches:
            device_augmenter(b)

    device_s = interleaved({"device": on_device}, rounds=args.rounds, sync=sync)["device"]
    return {
        "cpu_path": crops_per_call / loader_s["cpu"],
        "raw_path": crops_per_call / loader_s["raw"],
        "device": crops_per_call / device_s,
        "crops_per_item": per_item,
        "vad": crops.vad,
        "bank_mb": device_augmenter.bank.nbytes / 1e6 if device_augmenter.bank is not None else 0.0,
    }


def _pin(batch: dict) -> dict:
    def pin(v):
        if isinstance(v, torch.Tensor):
            return v.pin_memory()
        if isinstance(v, dict):
            return {k: pin(x) for k, x in v.items()}
        return v

    return {k: pin(v) for k, v in batch.items()}


def time_step(recipe: str, batch: int, steps: int, threads: int, device: torch.device) -> dict:
    """`bench_train_step.py`'s step on random features of the recipe's shapes; bf16 autocast on CUDA."""
    from modeling_dino_speech import DinoSpeechForPreTraining
    from modeling_dino_speech.losses import DINOLoss
    from modeling_dino_speech.training.dino import MultiCropWrapper, ema_update, freeze_batchnorm_statistics

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg, _, config, fe = recipe_settings(recipe, {})
    crops = cfg.data.crops
    student = MultiCropWrapper(DinoSpeechForPreTraining(config)).to(device).train()
    teacher = copy.deepcopy(student)
    teacher.requires_grad_(False)
    freeze_batchnorm_statistics(teacher)
    loss_fn = DINOLoss(config.dino_num_prototypes, crops.n_global, cfg.dino.student_temperature).to(device)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4)
    frames = lambda s: fe.num_frames(int(round(s * fe.sampling_rate)))
    global_crops = torch.randn(crops.n_global * batch, frames(crops.global_seconds), config.num_mel_bins, device=device)
    local_crops = torch.randn(crops.n_local * batch, frames(crops.local_seconds), config.num_mel_bins, device=device)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    )
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step():
        with autocast:
            with torch.no_grad():
                teacher_logits, _ = teacher([global_crops])
            student_logits, _ = student([global_crops, local_crops])
            loss = loss_fn(student_logits, teacher_logits, cfg.dino.teacher_temperature)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 3.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema_update(teacher, student, 0.996)
        loss_fn.update_center(teacher_logits)

    reset = torch.cuda.reset_peak_memory_stats if device.type == "cuda" else (lambda: None)
    seconds = median_after_warmup(step, steps, sync, after_warmup=reset)
    per_item = crops.n_global + crops.n_local
    return {
        "step_s": seconds,
        "crops_per_s": batch * per_item / seconds,
        "utts_per_s": batch / seconds,
        "batch": batch,
        "peak_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else peak_rss_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--utterances", type=int, default=24)
    parser.add_argument("--loader-batch", type=int, default=8, help="utterances per loader batch")
    parser.add_argument("--batches", type=int, default=2, help="loader batches per timed call")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the device side and the step")
    parser.add_argument("--demo-batch", type=int, default=32)
    parser.add_argument("--paper-batch", type=int, default=4, help="the recipe's 96 on a GPU; 4 on a CPU")
    parser.add_argument("--steps", type=int, default=1, help="timed training steps after one warm-up")
    args = parser.parse_args()
    device = torch.device(args.device)

    print("bench_device_pipeline: CPU-path loader vs raw-crop loader + device-side augmentation/fbank vs the step")
    print(machine_line(f"1 (loaders) / {args.threads} (device side, step)"))
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        paths = synth_corpus(_mkdir(os.path.join(folder, "corpus")), args.utterances)
        for recipe in args.recipes:
            sources = synth_sources(_mkdir(os.path.join(folder, recipe)), recipe)
            load = os.getloadavg()[0]
            pipeline = time_pipeline(recipe, paths, sources, args, device)
            batch = {"demo": args.demo_batch, "paper": args.paper_batch}[recipe]
            step = time_step(recipe, batch, args.steps, args.threads, device)
            results[recipe] = {**pipeline, **step, "load": (load, os.getloadavg()[0])}

    rows = []
    for recipe, r in results.items():
        step_rate = r["crops_per_s"]
        for name, rate, where in (
            ("loader, CPU path (read, crop, augment, fbank)", r["cpu_path"], "1 CPU core"),
            ("loader, raw crops (read, crop, plan)", r["raw_path"], "1 CPU core"),
            ("device-side augmentation + fbank", r["device"], f"{args.device}, {args.threads} thread(s)"),
            (f"training step (batch {r['batch']})", step_rate, f"{args.device}, {args.threads} thread(s)"),
        ):
            feeding = "-" if "step" in name else f"{rate / step_rate:.1f}x"
            loader = "step" not in name and "device" not in name
            cores = f"{GPU_TARGET_CROPS_PER_S / rate:,.0f}" if loader and recipe == "paper" else "-"
            rows.append([recipe, name, where, f"{rate:,.1f}", feeding, cores])
    print(
        f"\ncrops/s, median of {args.rounds} interleaved rounds ({args.batches} batches of {args.loader_batch} "
        f"utterances per round); the step: median of {args.steps} after a warm-up"
    )
    print(table(["recipe", "stage", "on", "crops/s", "x the step", "cores for 9,000 crops/s"], rows))
    for recipe, r in results.items():
        print(
            f"  {recipe}: raw-crop loader {r['raw_path'] / r['cpu_path']:.1f}x the CPU path per core; device side "
            f"{r['device'] / r['cpu_path']:.1f}x the CPU path's rate; VAD {'on' if r['vad'] else 'off'}; bank "
            f"{r['bank_mb']:.0f} MB; step {r['step_s']:.2f} s, peak {r['peak_mb']:,.0f} MiB "
            f"({'CUDA allocated' if args.device == 'cuda' else 'RSS'}); load average {r['load'][0]:.1f} -> "
            f"{r['load'][1]:.1f}"
        )
        if args.device == "cuda":
            hours = PAPER_EPOCHS * VOXCELEB2_DEV_UTTERANCES / r["utts_per_s"] / 3600
            rate = f"{r['utts_per_s']:.0f} utterances/s"
            print(f"  {recipe}: {PAPER_EPOCHS} VoxCeleb2 epochs at {rate}: {hours:.1f} GPU-hours")


if __name__ == "__main__":
    main()
