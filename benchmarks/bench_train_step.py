"""Benchmark: one DINO training step, crops/s and peak memory, for the demo and the paper recipes.

The step is the one `modeling_dino_speech.training.dino.train_dino` takes, built from the same pieces
(`MultiCropWrapper`, `param_groups`, `DINOLoss`, `ema_update`, `freeze_batchnorm_statistics`): teacher forward
on the global crops (no grad), student forward on all crops, the DINO loss, backward, gradient clipping, an
AdamW step, the EMA update of the teacher and the centre update. Model and crops come from the recipe YAML;
the features are random tensors of the crops' shapes (the data pipeline is `bench_data.py`'s subject).

Each recipe runs in its own subprocess, so its peak resident memory (`ru_maxrss`) is its own; the table gives
the resident memory once model, teacher and optimiser exist, the peak during the steps, and (CUDA) the peak
of `torch.cuda.max_memory_allocated`. The epoch estimate divides VoxCeleb2 dev's 1,092,009 utterances by the
measured utterances/s: on this CPU it only says that CPU training is out of the question; real estimates need
GPU numbers (run with --device cuda where one is available).

Usage (about 5 minutes on 2 shared cores):
    .venv/bin/python benchmarks/bench_train_step.py
    .venv/bin/python benchmarks/bench_train_step.py --paper-batch 8 --steps 3
    .venv/bin/python benchmarks/bench_train_step.py --device cuda --paper-batch 96 --threads 8
    .venv/bin/python benchmarks/bench_train_step.py --recipes demo --precisions fp32 bf16 bf16 fp32 --before ''
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys

import torch
from _harness import ROOT, interleaved, machine_line, median_after_warmup, peak_rss_mb, table

VOXCELEB2_DEV_UTTERANCES = 1_092_009
RECIPES = {"demo": ROOT / "configs" / "demo.yaml", "paper": ROOT / "configs" / "paper_lresnet34.yaml"}


def run_worker(recipe: str, batch: int, steps: int, threads: int, device: str, precision: str = "fp32") -> dict:
    """Time `steps` training steps (after one warm-up step) of `recipe` at `batch` utterances per step; `precision`
    `bf16` runs the forward passes and the loss under bf16 autocast, as `mixed_precision: bf16` does."""
    from modeling_dino_speech import DinoSpeechConfig, DinoSpeechFeatureExtractor, DinoSpeechForPreTraining
    from modeling_dino_speech.losses import DINOLoss
    from modeling_dino_speech.training.config import DinoTrainConfig, load_config
    from modeling_dino_speech.training.dino import (
        MultiCropWrapper,
        ema_update,
        freeze_batchnorm_statistics,
        param_groups,
    )

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    dev = torch.device(device)
    cfg = load_config(DinoTrainConfig, RECIPES[recipe])
    config = DinoSpeechConfig(**cfg.model)
    fe = DinoSpeechFeatureExtractor.from_model_config(config)
    crops = cfg.data.crops
    global_frames = fe.num_frames(int(crops.global_seconds * fe.sampling_rate))
    local_frames = fe.num_frames(int(crops.local_seconds * fe.sampling_rate))

    student = MultiCropWrapper(DinoSpeechForPreTraining(config)).to(dev).train()
    teacher = copy.deepcopy(student)
    teacher.requires_grad_(False)
    freeze_batchnorm_statistics(teacher)
    dino_loss = DINOLoss(
        config.dino_num_prototypes, crops.n_global, cfg.dino.student_temperature, cfg.dino.center_momentum
    ).to(dev)
    optimizer = torch.optim.AdamW(param_groups(student), lr=1e-4, betas=tuple(cfg.optim.betas))
    # AdamW's moment buffers appear at the first step; allocate them now so "after setup" includes them.
    for group in optimizer.param_groups:
        for p in group["params"]:
            optimizer.state[p]["exp_avg"] = torch.zeros_like(p)
            optimizer.state[p]["exp_avg_sq"] = torch.zeros_like(p)
            optimizer.state[p]["step"] = torch.tensor(0.0)
    global_crops = torch.randn(crops.n_global * batch, global_frames, config.num_mel_bins, device=dev)
    local_crops = torch.randn(crops.n_local * batch, local_frames, config.num_mel_bins, device=dev)
    student_crops = [global_crops] + ([local_crops] if crops.n_local else [])
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss_setup = peak_rss_mb()

    def step() -> float:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            with torch.no_grad():
                teacher_logits, _ = teacher([global_crops])
            student_logits, _ = student(student_crops)
            loss = dino_loss(student_logits, teacher_logits, cfg.dino.teacher_temperature)
        loss.backward()
        if cfg.optim.clip_grad:
            torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.optim.clip_grad)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema_update(teacher, student, cfg.dino.teacher_momentum)
        dino_loss.update_center(teacher_logits)
        return float(loss)

    seconds = median_after_warmup(step, steps, sync)  # the warm-up: first-call allocations and kernel selection
    n_crops = crops.n_global + crops.n_local
    return {
        "recipe": recipe,
        "model": f"{config.backbone}",
        "params_m": sum(p.numel() for p in student.parameters()) / 1e6,
        "batch": batch,
        "recipe_batch": cfg.data.batch_size,
        "crops": f"{crops.n_global}x{crops.global_seconds:g}s + {crops.n_local}x{crops.local_seconds:g}s",
        "step_s": seconds,
        "crops_per_s": batch * n_crops / seconds,
        "utts_per_s": batch / seconds,
        "rss_setup_mb": rss_setup,
        "rss_peak_mb": peak_rss_mb(),
        "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None,
        "threads": threads,
        "device": device,
        "precision": precision,
    }


def compare_with_reference(recipe: str, batch: int, threads: int, commit: str, rounds: int) -> dict:
    """Student embedding network forward + backward on the global crops, current code against `commit`'s."""
    from bench_embedding import load_reference_code, with_reference_code

    from modeling_dino_speech import DinoSpeechConfig, DinoSpeechFeatureExtractor, DinoSpeechModel
    from modeling_dino_speech.training.config import DinoTrainConfig, load_config

    torch.set_num_threads(threads)
    code = load_reference_code(commit)
    if code is None:
        return {}
    cfg = load_config(DinoTrainConfig, RECIPES[recipe])
    config = DinoSpeechConfig(**cfg.model)
    fe = DinoSpeechFeatureExtractor.from_model_config(config)
    frames = fe.num_frames(int(cfg.data.crops.global_seconds * fe.sampling_rate))
    torch.manual_seed(0)
    current = DinoSpeechModel(config).train()
    before = with_reference_code(current, code).train()
    x = torch.randn(cfg.data.crops.n_global * batch, frames, config.num_mel_bins)

    def step(model) -> None:
        model(x).embeddings.pow(2).mean().backward()

    times = interleaved({"current": lambda: step(current), "before": lambda: step(before)}, rounds)
    return {"recipe": recipe, "crops": x.shape[0], "frames": frames, **times}


def hours(utterances_per_s: float) -> str:
    h = VOXCELEB2_DEV_UTTERANCES / utterances_per_s / 3600
    return f"{h:,.0f} h ({h / 24:,.1f} days)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--demo-batch", type=int, default=None, help="default: the recipe's (32)")
    parser.add_argument(
        "--paper-batch", type=int, default=4, help="the recipe's 96 takes minutes per step on a CPU; default 4 there"
    )
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up (median reported)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="default: the recipe's num_threads when it sets one (auto: what its rule gives now), else 2",
    )
    parser.add_argument("--before", default="5e135be", help="git commit to compare the model code with ('' = skip)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the before/after comparison")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=["fp32"],
        choices=["fp32", "bf16"],
        help="each recipe at each of these (bf16: autocast, as mixed_precision: bf16), one worker each, in turn",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_worker(args.worker, args.batch, args.steps, args.threads, args.device, args.precision)))
        return

    from modeling_dino_speech.training.config import DinoTrainConfig, load_config

    print("bench_train_step: one DINO step (teacher fwd, student fwd+bwd, AdamW, EMA), random features")
    print(machine_line(args.threads or "the recipe's (see the table)"))
    results, plan = [], []
    for recipe in args.recipes:
        recipe_cfg = load_config(DinoTrainConfig, RECIPES[recipe])
        batch = {"demo": args.demo_batch, "paper": args.paper_batch}[recipe] or recipe_cfg.data.batch_size
        recipe_threads = recipe_cfg.num_threads
        if recipe_threads == "auto":  # what training.threads' rule gives on this machine now
            from modeling_dino_speech.training.threads import apply_num_threads

            recipe_threads = apply_num_threads("auto").threads
        threads = args.threads or recipe_threads or 2
        plan.append((recipe, batch, threads))
        for precision in args.precisions:
            command = [
                sys.executable,
                __file__,
                "--worker",
                recipe,
                "--batch",
                str(batch),
                "--steps",
                str(args.steps),
                "--threads",
                str(threads),
                "--device",
                args.device,
                "--precision",
                precision,
            ]
            done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
            if done.returncode != 0:
                print(f"{recipe} ({precision}): the worker failed:\n{done.stderr[-3000:]}")
                continue
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))

    rows = []
    for r in results:
        batch = f"{r['batch']}" + (f" (recipe: {r['recipe_batch']})" if r["batch"] != r["recipe_batch"] else "")
        rows.append(
            [
                r["recipe"],
                r["model"],
                r["precision"],
                r["threads"],
                f"{r['params_m']:.1f}M",
                r["crops"],
                batch,
                f"{r['step_s']:.2f}",
                f"{r['crops_per_s']:.1f}",
                f"{r['utts_per_s']:.2f}",
                f"{r['rss_setup_mb']:.0f}",
                f"{r['rss_peak_mb']:.0f}",
                f"{r['rss_peak_mb'] - r['rss_setup_mb']:.0f}",
                "-" if r["cuda_peak_mb"] is None else f"{r['cuda_peak_mb']:.0f}",
            ]
        )
    print(
        f"\nDINO training step on {args.device}, median of {args.steps} steps after one warm-up (student params "
        "incl. DINO head)"
    )
    print(
        table(
            [
                "recipe",
                "backbone",
                "precision",
                "threads",
                "student params",
                "crops / utterance",
                "batch",
                "s / step",
                "crops/s",
                "utterances/s",
                "RSS after setup MiB",
                "peak RSS MiB",
                "step peak - setup MiB",
                "CUDA peak MiB",
            ],
            rows,
        )
    )
    print(f"\nOne epoch of VoxCeleb2 dev ({VOXCELEB2_DEV_UTTERANCES:,} utterances) at the measured rate:")
    for r in results:
        print(
            f"  {r['recipe']} ({r['precision']}): {hours(r['utts_per_s'])} on this {r['device'].upper()} "
            f"({r['utts_per_s']:.2f} utterances/s at batch {r['batch']})"
        )
    if args.device == "cpu" and args.before:
        rows = []
        for recipe, batch, threads in plan:
            r = compare_with_reference(recipe, batch, threads, args.before, args.rounds)
            if r:
                rows.append(
                    [
                        recipe,
                        threads,
                        f"{r['crops']} x {r['frames']} frames",
                        f"{r['current']:.2f}",
                        f"{r['before']:.2f}",
                        f"{r['before'] / r['current']:.2f}x",
                    ]
                )
        print(
            f"\nStudent embedding network, forward + backward on the global crops (train mode): this code vs "
            f"the model code at {args.before}, median of {args.rounds} interleaved rounds"
        )
        print(table(["recipe", "threads", "input", "s now", "s before", "speed-up"], rows))
    if args.device == "cpu":
        print(
            "These are CPU figures: they say CPU training on VoxCeleb2 is impractical, nothing more. Real epoch "
            "estimates need GPU measurements (--device cuda), at the recipe's batch size and mixed precision."
        )


if __name__ == "__main__":
    main()
