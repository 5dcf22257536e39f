"""Benchmark: the demo's DINO step on this machine as it is ("quiet") and beside one competing CPU-bound process
(`nice -n 10 python -c 'while True: pass'`), for thread / worker / augmentation settings.

Each setting runs `train.py dino --config configs/demo.yaml` for `--steps` steps (evaluation off, one log line
per step); the step time is the median over the steps after `--warmup`, from `metrics.jsonl`. The two
conditions of a setting run back to back and the order of conditions alternates between settings and rounds,
so that load from other users hits both. Load averages are printed with every run; `auto` runs also show the
thread counts the governor chose (training.threads).

Settings are `threads:workers:augment_on`, e.g. `0:1:cpu` (the demo before issue #16: torch's default of 2
threads, 1 loader worker, augmentation in the worker) or `auto:1:device`.

Not a `bench_*` script: `make bench` leaves it out (the default settings train the demo 16 times, ~30 minutes).

Usage (about 1-3 minutes per setting and condition on 2 shared cores; a collapsed setting is cut at --timeout):
    .venv/bin/python benchmarks/demo_threads.py --data data/demo
    .venv/bin/python benchmarks/demo_threads.py --settings 0:1:cpu auto:1:cpu --steps 8
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import ROOT, machine_line, table

DEFAULT_SETTINGS = [
    "0:1:cpu",
    "1:1:cpu",
    "1:0:cpu",
    "2:0:cpu",
    "auto:1:cpu",
    "1:1:device",
    "2:1:device",
    "auto:1:device",
]


def setting_overrides(setting: str) -> list:
    """`threads:workers:augment_on` -> the recipe overrides it stands for."""
    threads, workers, augment_on = setting.split(":")
    return [f"num_threads={threads}", f"data.num_workers={workers}", f"data.augment_on={augment_on}"]


def crops_per_step(recipe: Path) -> int:
    """Crops one step of the run whose resolved `recipe.yaml` this is trains on (batch x crops per utterance)."""
    import yaml

    data = yaml.safe_load(recipe.read_text())["data"]
    return data["batch_size"] * (data["crops"]["n_global"] + data["crops"]["n_local"])


def recipe_steps() -> int:
    """The DINO steps of `configs/demo.yaml`: what one `make demo` trains."""
    import yaml

    return int(yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())["optim"]["max_steps"])


def run_demo(overrides: list, data: Path, out: Path, steps: int, timeout: float) -> dict:
    """`train.py dino` on the demo recipe with `overrides`, `steps` steps, evaluation and checkpoints off; the
    time of each step (from `metrics.jsonl`), the wall time, the load before and after, the thread counts the
    `auto` governor chose."""
    args = [
        sys.executable,
        str(ROOT / "train.py"),
        "dino",
        "--config",
        str(ROOT / "configs" / "demo.yaml"),
        "--output_dir",
        str(out),
        f"data.train={data / 'train.csv'}",
        f"data.augment.musan_root={data / 'musan_standin'}",
        "eval.trials=null",
        f"max_steps={steps}",
        "log_every=1",
        "save_every=0",
        "export.whitening=false",
        *overrides,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
        finished = proc.returncode == 0
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        finished = False
    wall = time.perf_counter() - start
    metrics = out / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
    crops = crops_per_step(out / "recipe.yaml") if (out / "recipe.yaml").exists() else 0
    step_s = [crops / row["crops_per_second"] for row in rows if "crops_per_second" in row]
    chosen = [int(n) for n in re.findall(r"-> (\d+) intra-op thread", output)]
    return {
        "step_s": step_s,
        "wall": wall,
        "finished": finished,
        "load": (load, os.getloadavg()[0]),
        "chosen": chosen,
        "tail": "" if finished else output[-1500:],
    }


def competitor() -> subprocess.Popen:
    return subprocess.Popen(["nice", "-n", "10", sys.executable, "-c", "while True: pass"])


def demo_run_arguments(doc: str, settings: list, steps: int, warmup: int, timeout: float) -> tuple:
    """The command line of a script that times short demo runs (this one, demo_step.py): the parsed arguments
    and the demo corpus folder, checked."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--data", default=str(ROOT / "data" / "demo"))
    parser.add_argument("--settings", nargs="+", default=settings)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--warmup", type=int, default=warmup, help="first steps left out of the median")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=timeout, help="seconds per run before it is cut")
    parser.add_argument("--json", default=None, help="also write the raw results here")
    args = parser.parse_args()
    data = Path(args.data)
    if not (data / "train.csv").exists():
        raise SystemExit(f"{data}/train.csv not found: build the demo corpus first (make corpus)")
    return args, data


def main() -> None:
    args, data = demo_run_arguments(__doc__, DEFAULT_SETTINGS, steps=12, warmup=2, timeout=240.0)

    print("demo_threads: the demo's DINO step, quiet vs one competing process (nice 10)")
    print(machine_line("per setting"))
    results: dict = {}
    flip = False
    with tempfile.TemporaryDirectory() as folder:
        for r in range(args.rounds):
            for setting in args.settings:
                conditions = ["quiet", "competing"][:: -1 if flip else 1]
                flip = not flip
                for condition in conditions:
                    rival = competitor() if condition == "competing" else None
                    try:
                        out = Path(folder) / f"{setting.replace(':', '_')}_{condition}_{r}"
                        result = run_demo(setting_overrides(setting), data, out, args.steps, args.timeout)
                    finally:
                        if rival is not None:
                            rival.kill()
                            rival.wait()
                    results.setdefault((setting, condition), []).append(result)
                    times = result["step_s"][args.warmup :] or result["step_s"]
                    median = statistics.median(times) if times else float("nan")
                    print(
                        f"  {setting:<14} {condition:<9} {median:6.2f} s/step over {len(times)} steps, wall "
                        f"{result['wall']:.0f} s{'' if result['finished'] else ' (cut)'}, load {result['load'][0]:.1f}"
                        f" -> {result['load'][1]:.1f}"
                        + (f", auto chose {result['chosen']}" if result["chosen"] else ""),
                        flush=True,
                    )
                    if result["tail"] and not result["step_s"]:
                        print(result["tail"])

    rows, stage = [], recipe_steps()
    for setting in args.settings:
        medians = {}
        for condition in ("quiet", "competing"):
            times = [
                t for res in results[(setting, condition)] for t in (res["step_s"][args.warmup :] or res["step_s"])
            ]
            medians[condition] = statistics.median(times) if times else float("nan")
        threads, workers, augment_on = setting.split(":")
        rows.append(
            [
                threads,
                workers,
                augment_on,
                f"{medians['quiet']:.2f}",
                f"{medians['competing']:.2f}",
                f"{medians['competing'] / medians['quiet']:.1f}x",
                f"{stage * medians['quiet'] / 60:.1f}",
                f"{stage * medians['competing'] / 60:.1f}",
            ]
        )
    print(f"\nmedian s/step after {args.warmup} warm-up steps, {args.rounds} round(s); {stage} steps: the DINO stage")
    print(
        table(
            [
                "num_threads",
                "num_workers",
                "augment_on",
                "quiet s/step",
                "competing s/step",
                "slow-down",
                f"{stage} steps quiet (min)",
                f"{stage} steps competing (min)",
            ],
            rows,
        )
    )
    if args.json:
        Path(args.json).write_text(json.dumps({f"{k[0]}|{k[1]}": v for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
