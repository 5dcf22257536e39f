"""The demo's headline numbers over several seeds: mean and standard deviation of every system on every task.

    .venv/bin/python benchmarks/demo_seeds.py --seeds 0 1 2 [--runs runs/seeds] [--data data/demo]

Each seed is a whole `make demo` (DINO, pseudo-label rounds, the report's evaluation) into `<runs>/seed_<k>`,
with `SEED=<k>` (the recipes' `seed`: weights, crops, augmentation and batch order); a seed whose report
exists is reused, so an interrupted sweep continues. Then one markdown table: a row per system, mean ± std
over the seeds of each trial list's EER (%) and the emotion stand-in's micro-F1 (%), and the seed count.
Not part of `make demo` (three seeds are about three demos' time).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]


def run_seed(seed: int, runs: Path, data: Path) -> Path:
    out = runs / f"seed_{seed}"
    if (out / "report.md").exists():
        print(f"seed {seed}: reusing {out}")
        return out
    subprocess.run(["make", "demo", f"SEED={seed}", f"DEMO_RUN={out}", f"DEMO_DATA={data}"], cwd=ROOT, check=True)
    return out


def collect(run: Path) -> Dict[str, Dict[str, float]]:
    """system -> {column: value} from one report's evaluation folder (`<run>/eval/<system>/*.json`)."""
    table: Dict[str, Dict[str, float]] = {}
    for folder in sorted(p for p in (run / "eval").iterdir() if p.is_dir()):
        row: Dict[str, float] = {}
        verification = folder / "verification.json"
        if verification.exists():
            for name, m in json.loads(verification.read_text())["speaker_verification"].items():
                row[f"{name} EER %"] = float(m["eer"])
        emotion = folder / "emotion.json"
        if emotion.exists():
            for name, m in json.loads(emotion.read_text())["emotion_recognition"].items():
                row[f"{name} micro-F1 %"] = float(m["micro_f1"])
        table[folder.name] = row
    return table


def summarise(tables: List[Dict[str, Dict[str, float]]]) -> str:
    systems = list(dict.fromkeys(s for t in tables for s in t))
    columns = list(dict.fromkeys(c for t in tables for row in t.values() for c in row))
    lines = ["| system | " + " | ".join(columns) + " | seeds |", "|---" + "|---:" * (len(columns) + 1) + "|"]
    for system in systems:
        cells = []
        for column in columns:
            values = [t[system][column] for t in tables if system in t and column in t[system]]
            if not values:
                cells.append("")
            elif len(values) == 1:
                cells.append(f"{values[0]:.1f}")
            else:
                cells.append(f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}")
        seeds = sum(system in t for t in tables)
        lines.append(f"| {system.replace('_', ' ')} | " + " | ".join(cells) + f" | {seeds} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "seeds")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "demo")
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    tables = [collect(run_seed(seed, args.runs.resolve(), args.data.resolve())) for seed in args.seeds]
    table = summarise(tables)
    print(table)
    if args.out:
        args.out.write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
