"""Benchmark: where the demo's DINO step spends its time. The whole `train.py dino` step of `configs/demo.yaml`
(loader worker, augmentation, fbank, teacher and student, loss, optimiser) against variants that take one part
away or change one size, so that each part's share and each option's price are read off side by side.

Each setting runs `train.py dino` for `--steps` steps (evaluation, checkpoints and the export's whitening off,
one log line per step); its step time is the median over the steps after `--warmup`, from `metrics.jsonl`. The
settings run round-robin with the recipe, the order reversed every other round, so that load from other users
hits all of them (benchmarks/README.md, "How timings are taken"). The ratio to the recipe is taken within the
same call.

A setting is `name:key=value,key=value` (the recipe overrides of `train.py`); `recipe` (no override) always runs.

Not a `bench_*` script: `make bench` leaves it out (about 1.5 minutes per setting and round on 2 cores).

Usage:
    .venv/bin/python benchmarks/demo_step.py --data data/demo
    .venv/bin/python benchmarks/demo_step.py --settings no-local-crops:data.crops.n_local=0 --rounds 2
"""

from __future__ import annotations

import json
import re
import statistics
import tempfile
from pathlib import Path

from _harness import machine_line, table
from demo_threads import crops_per_step, demo_run_arguments, recipe_steps, run_demo

DEFAULT_SETTINGS = [
    "no-augmentation:data.augment.reverb_prob=0,data.augment.noise_prob=0",
    "no-local-crops:data.crops.n_local=0",
    "4-local-crops:data.crops.n_local=4",
    "loader-in-process:data.num_workers=0",
    "ecapa-channels-192:model.ecapa_channels=192",
    "ecapa-channels-256:model.ecapa_channels=256",
    "prototypes-1024:model.dino_num_prototypes=1024",
    "prototypes-16384:model.dino_num_prototypes=16384",
    "speed-perturbation:data.crops.speed=[0.9,1.1]",
]


def parse_setting(setting: str) -> tuple:
    """`name:key=value,key=value` -> (name, [overrides]); a value may be a list, `key=[a,b]`."""
    name, _, overrides = setting.partition(":")
    items = [item for item in re.split(r",(?![^\[]*\])", overrides) if item]
    if not name or any("=" not in item for item in items):
        raise SystemExit(f"setting {setting!r}: expected name:key=value[,key=value...]")
    return name, items


def main() -> None:
    args, data = demo_run_arguments(__doc__, DEFAULT_SETTINGS, steps=40, warmup=5, timeout=600.0)
    settings = dict([("recipe", [])] + [parse_setting(s) for s in args.settings if not s.startswith("recipe:")])

    print("demo_step: the demo's whole DINO step, the recipe against variants, round-robin")
    print(machine_line("auto (the recipe's num_threads)"))
    results: dict = {name: [] for name in settings}
    crops: dict = {}
    with tempfile.TemporaryDirectory() as folder:
        for r in range(args.rounds):
            for name in list(settings) if r % 2 == 0 else list(settings)[::-1]:
                out = Path(folder) / f"{name}_{r}"
                result = run_demo(settings[name], data, out, args.steps, args.timeout)
                if (out / "recipe.yaml").exists():
                    crops[name] = crops_per_step(out / "recipe.yaml")
                times = result["step_s"][args.warmup :]
                results[name].extend(times)
                median = statistics.median(times) if times else float("nan")
                load = f"load {result['load'][0]:.1f} -> {result['load'][1]:.1f}"
                print(
                    f"  round {r} {name:<20} {median:6.3f} s/step over {len(times)} steps, wall {result['wall']:.0f} s"
                    f"{'' if result['finished'] else ' (cut)'}, {load}",
                    flush=True,
                )
                if result["tail"] and not times:
                    print(result["tail"])

    stage = recipe_steps()
    medians = {name: statistics.median(times) if times else float("nan") for name, times in results.items()}
    rows = [
        [
            name,
            ", ".join(settings[name]) or "(configs/demo.yaml)",
            str(crops.get(name, "-")),
            f"{medians[name]:.3f}",
            f"{medians[name] / medians['recipe']:.2f}x",
            f"{crops.get(name, 0) / medians[name]:.0f}",
            f"{stage * medians[name] / 60:.1f}",
        ]
        for name in settings
    ]
    print(f"\nmedian s/step after {args.warmup} warm-up steps, {args.rounds} round(s)")
    print(
        table(["setting", "overrides", "crops / step", "s / step", "x recipe", "crops/s", f"{stage} steps (min)"], rows)
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
