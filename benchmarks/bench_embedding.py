"""Benchmark: utterance embeddings per second, ours against speechbrain's ECAPA-TDNN at the same size.

Models (random weights, nothing downloaded), 4 s utterances as fbank frames:
- ours ECAPA-TDNN C=512, attentive statistics pooling, 192-d (6.19M parameters);
- ours ResNet34, base width 32, statistics pooling, 256-d (6.63M: wespeaker's ResNet34 size);
- speechbrain's `ECAPA_TDNN(80, lin_neurons=192)` (C=512, 6.19M), the baseline (`pip install speechbrain`);
- "before": the same models with the backbone/pooling code of `--before` (a git commit; default: the
  foundation commit, before the performance work), loaded with the same weights, to show what the work bought
  and to check that it changed no output (max |difference| is printed; eval mode).

Tables (each ratio comes from candidates timed round-robin in one run; medians of `--rounds` rounds):
1. embeddings/s at batch 1 and batch `--batch`, eval + inference_mode, with GFLOP per utterance;
2. what each inference choice buys: autograd on / no_grad / inference_mode, the no-padding fast path (no
   attention_mask, or one without padding) against a padded batch, channels-last activations (ResNet);
3. torch.compile (ECAPA-TDNN; ResNet with --compile-resnet): compile time apart, then embeddings/s.

Usage (about 10 minutes on 2 shared cores; the compile alone takes 2-3 of them):
    .venv/bin/python benchmarks/bench_embedding.py
    .venv/bin/python benchmarks/bench_embedding.py --rounds 5 --no-compile
    .venv/bin/python benchmarks/bench_embedding.py --device cuda --threads 8     # when a GPU is there
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Callable, Dict, Optional

import torch
from _harness import ROOT, interleaved, machine_line, table

from modeling_dino_speech import DinoSpeechConfig, DinoSpeechFeatureExtractor, DinoSpeechModel

ECAPA = dict(backbone="ecapa_tdnn", ecapa_channels=512, pooling="attentive_statistics", embedding_size=192)
RESNET = dict(backbone="resnet", resnet_layers=[3, 4, 6, 3], resnet_base_width=32, embedding_size=256)
FOUNDATION_COMMIT = "5e135be"


def load_reference_code(commit: str) -> Optional[Dict[str, types.ModuleType]]:
    """resnet/ecapa_tdnn/pooling as they were at `commit`, as a throw-away package (None if git cannot)."""
    folder = Path(tempfile.mkdtemp(prefix="dino_speech_before_"))
    for name in ("pooling", "ecapa_tdnn", "resnet"):
        try:
            source = subprocess.run(
                ["git", "-C", str(ROOT), "show", f"{commit}:modeling_dino_speech/{name}.py"],
                capture_output=True,
                text=True,
                check=True,
                timeout=30,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        (folder / f"{name}.py").write_text(source)
    package = types.ModuleType("dino_speech_before")
    package.__path__ = [str(folder)]
    sys.modules[package.__name__] = package
    modules = {}
    for name in ("pooling", "ecapa_tdnn", "resnet"):
        spec = importlib.util.spec_from_file_location(f"{package.__name__}.{name}", folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        modules[name] = module
    return modules


def with_reference_code(model: DinoSpeechModel, code: Dict[str, types.ModuleType]) -> DinoSpeechModel:
    """A copy of `model` whose backbone and pooling are the reference classes, carrying the same weights."""
    c = model.config
    before = copy.deepcopy(model)
    if c.backbone == "ecapa_tdnn":
        before.backbone = code["ecapa_tdnn"].ECAPATDNN(
            c.num_mel_bins, c.ecapa_channels, c.ecapa_scale, c.ecapa_se_channels, c.ecapa_mfa_channels
        )
    else:
        before.backbone = code["resnet"].ResNet(c.num_mel_bins, c.resnet_layers, c.resnet_base_width)
    before.pooling = code["pooling"].build_pooling(c.pooling, before.backbone.output_channels, c.attention_channels)
    before.load_state_dict(model.state_dict())
    return before.to(model.device).eval()


def randomise_batchnorm(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics, so that output comparisons exercise the normalisation too."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def gflops_per_utterance(model: torch.nn.Module, frames: int, device: torch.device) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(torch.randn(1, frames, 80, device=device))
    return counter.get_total_flops() / 1e9


def repay(compile_s: float, saved_per_batch_s: float) -> str:
    return f"{compile_s / saved_per_batch_s:.0f}" if saved_per_batch_s > 0 else "never (slower)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per table (median reported)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--single", type=int, default=4, help="utterances embedded one by one per timed call")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--before", default=FOUNDATION_COMMIT, help="git commit of the reference code ('' = none)")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--compile-resnet", action="store_true", help="also compile the ResNet (several minutes)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fe = DinoSpeechFeatureExtractor()
    frames = fe.num_frames(int(args.seconds * fe.sampling_rate))
    print(f"bench_embedding: {args.seconds:g} s utterances = {frames} frames x 80 mel bins, device {device}")
    print(machine_line(args.threads))

    torch.manual_seed(0)
    models: Dict[str, torch.nn.Module] = {}
    try:
        from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

        models["speechbrain ECAPA-TDNN C=512"] = ECAPA_TDNN(80, lin_neurons=192)
    except ImportError:
        print("speechbrain is not installed (pip install speechbrain): no baseline column")
    ours_ecapa = DinoSpeechModel(DinoSpeechConfig(**ECAPA))
    ours_resnet = DinoSpeechModel(DinoSpeechConfig(**RESNET))
    for m in (ours_ecapa, ours_resnet):
        randomise_batchnorm(m)
    models["ours ECAPA-TDNN C=512"] = ours_ecapa
    models["ours ResNet34 (width 32)"] = ours_resnet
    code = load_reference_code(args.before) if args.before else None
    if code is not None:
        models[f"ECAPA-TDNN C=512 before ({args.before})"] = with_reference_code(ours_ecapa, code)
        models[f"ResNet34 (width 32) before ({args.before})"] = with_reference_code(ours_resnet, code)
    elif args.before:
        print(f"could not read the reference code at {args.before!r} (not a git checkout?): no 'before' rows")
    for m in models.values():
        m.to(device).eval()
    sb_name = next((n for n in models if n.startswith("speechbrain")), None)

    x_big = torch.randn(args.batch, frames, 80, device=device)
    x_one = [torch.randn(1, frames, 80, device=device) for _ in range(args.single)]

    def embed(model) -> Callable[[], object]:
        return lambda: model(x_big)

    def embed_one_by_one(model) -> Callable[[], object]:
        return lambda: [model(x) for x in x_one]

    with torch.inference_mode():
        if code is not None:
            print("\nsame weights, same outputs: max |ours - before| over the batch's embeddings (eval mode)")
            for ours, name in ((ours_ecapa, "ECAPA-TDNN"), (ours_resnet, "ResNet34")):
                before = with_reference_code(ours, code)
                a, b = ours(x_big[:4]).embeddings, before(x_big[:4]).embeddings
                print(f"  {name}: {(a - b).abs().max().item():.2e} (embedding scale {b.abs().max().item():.2f})")
        params = {n: sum(p.numel() for p in m.parameters()) / 1e6 for n, m in models.items()}
        flops = {n: gflops_per_utterance(m, frames, device) for n, m in models.items()}

        # Table 1: batch 1 and batch N, everything interleaved in one group per batch size. Batch 1 is also timed
        # on one thread: many small ops on two threads of a busy two-core machine mostly measure the contention.
        single = interleaved({n: embed_one_by_one(m) for n, m in models.items()}, args.rounds, sync=sync)
        batched = interleaved({n: embed(m) for n, m in models.items()}, args.rounds, sync=sync)
        torch.set_num_threads(1)
        single_1t = interleaved({n: embed_one_by_one(m) for n, m in models.items()}, args.rounds, sync=sync)
        torch.set_num_threads(args.threads)
    rows = []
    for n in models:
        cells = [n, f"{params[n]:.2f}M", f"{flops[n]:.1f}"]
        for times, size in ((single, args.single), (single_1t, args.single), (batched, args.batch)):
            cells += [f"{size / times[n]:.1f}", f"{times[sb_name] / times[n]:.2f}x" if sb_name else "-"]
        rows.append(cells)
    print(
        f"\nTable 1. Embeddings/s, {args.seconds:g} s utterances, eval + inference_mode, {args.threads} thread(s) "
        f"unless noted (median of {args.rounds} interleaved rounds)"
    )
    print(
        table(
            [
                "model",
                "params",
                "GFLOP/utt",
                "batch 1 emb/s",
                "vs speechbrain",
                "batch 1, 1 thread",
                "vs speechbrain",
                f"batch {args.batch} emb/s",
                "vs speechbrain",
            ],
            rows,
        )
    )

    # Table 2: what each inference choice buys, each against its alternative in one interleaved group.
    rows = []
    padded_mask = torch.ones(args.batch, frames, dtype=torch.long, device=device)
    padded_mask[0, -1] = 0  # one frame of padding in one row forces the masked path

    ablations = (("ECAPA-TDNN", ours_ecapa, args.batch), ("ResNet34", ours_resnet, max(args.batch // 4, 1)))
    for name, model, batch in ablations:
        x = x_big[:batch]
        mask = padded_mask[:batch]

        def grad_mode(context) -> Callable[[], object]:
            def run():
                with context():
                    return model(x)

            return run

        modes = interleaved(
            {
                "autograd on": grad_mode(contextlib.nullcontext),
                "no_grad": grad_mode(torch.no_grad),
                "inference_mode": grad_mode(torch.inference_mode),
            },
            args.rounds,
            sync=sync,
        )
        for mode in ("autograd on", "no_grad"):
            rows.append(
                [
                    name,
                    batch,
                    "inference_mode",
                    mode,
                    f"{batch / modes['inference_mode']:.1f}",
                    f"{batch / modes[mode]:.1f}",
                    f"{modes[mode] / modes['inference_mode']:.2f}x",
                ]
            )
        with torch.inference_mode():
            masks = interleaved(
                {
                    "none": lambda: model(x),
                    "all ones": lambda: model(x, torch.ones_like(mask)),
                    "padded": lambda: model(x, mask),
                },
                args.rounds,
                sync=sync,
            )
        rows.append(
            [
                name,
                batch,
                "no attention_mask",
                "padded batch (masked path)",
                f"{batch / masks['none']:.1f}",
                f"{batch / masks['padded']:.1f}",
                f"{masks['padded'] / masks['none']:.2f}x",
            ]
        )
        rows.append(
            [
                name,
                batch,
                "mask without padding",
                "padded batch (masked path)",
                f"{batch / masks['all ones']:.1f}",
                f"{batch / masks['padded']:.1f}",
                f"{masks['padded'] / masks['all ones']:.2f}x",
            ]
        )
        if name == "ResNet34":

            def layout(channels_last: bool) -> Callable[[], object]:
                def run():
                    model.backbone.channels_last = channels_last
                    return model(x)

                return run

            with torch.inference_mode():
                layouts = interleaved({"cl": layout(True), "plain": layout(False)}, args.rounds, sync=sync)
            model.backbone.channels_last = None
            rows.append(
                [
                    name,
                    batch,
                    "channels-last",
                    "contiguous (NCHW)",
                    f"{batch / layouts['cl']:.1f}",
                    f"{batch / layouts['plain']:.1f}",
                    f"{layouts['plain'] / layouts['cl']:.2f}x",
                ]
            )
    print(
        f"\nTable 2. What each inference choice buys (ours; embeddings/s, {args.threads} thread(s), "
        f"median of {args.rounds} interleaved rounds)"
    )
    print(table(["model", "batch", "choice", "alternative", "emb/s with", "emb/s alternative", "speed-up"], rows))
    print("(batching: Table 1, batch 1 against batch N)")

    if args.no_compile:
        return
    rows = []
    targets = [("ECAPA-TDNN", ours_ecapa)] + ([("ResNet34", ours_resnet)] if args.compile_resnet else [])
    for name, model in targets:
        with torch.inference_mode():
            compiled = torch.compile(model, dynamic=False)
            start = time.perf_counter()
            out = compiled(x_big)
            sync()
            compile_s = time.perf_counter() - start
            diff = (out.embeddings - model(x_big).embeddings).abs().max().item()
            result = interleaved(
                {"eager": lambda: model(x_big), "compiled": lambda: compiled(x_big)}, args.rounds, sync=sync
            )
        rows.append(
            [
                name,
                args.batch,
                f"{compile_s:.0f}",
                f"{args.batch / result['eager']:.1f}",
                f"{args.batch / result['compiled']:.1f}",
                f"{result['eager'] / result['compiled']:.2f}x",
                f"{diff:.1e}",
                repay(compile_s, result["eager"] - result["compiled"]),
            ]
        )
    print(f"\nTable 3. torch.compile (inductor, dynamic=False), inference_mode, {args.threads} thread(s)")
    print(
        table(
            [
                "model",
                "batch",
                "compile s",
                "eager emb/s",
                "compiled emb/s",
                "speed-up",
                "max |diff|",
                "batches to repay compile",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
