"""What the benchmarks share: the machine line, interleaved timing and markdown tables.

Timing on a shared machine: every candidate runs once per round, the order of candidates alternates between
rounds, and the median over rounds is reported, so that load from other processes hits all candidates alike.
Ratios are only ever taken between candidates timed in the same call to `interleaved`.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Union

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()


def machine_line(threads: Union[int, str]) -> str:
    """One line naming the machine, the software and the moment, printed above every table."""
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs (load average {load:.1f} at start), {gpu}; "
        f"torch {torch.__version__} with {threads} intra-op thread(s); python {platform.python_version()}; "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}"
    )


def interleaved(
    candidates: Dict[str, Callable[[], object]], rounds: int, warmup: int = 1, sync: Callable[[], None] = lambda: None
) -> Dict[str, float]:
    """Median wall seconds per call of each candidate, timed round-robin (order reversed every other round)."""
    names = list(candidates)
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    sync()
    times: Dict[str, List[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            candidates[name]()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def median_after_warmup(
    call: Callable[[], object],
    repeats: int,
    sync: Callable[[], None] = lambda: None,
    after_warmup: Callable[[], None] = lambda: None,
) -> float:
    """Median wall seconds of ``repeats`` calls after one warm-up call (``after_warmup`` runs in between, e.g. to
    reset a peak-memory counter)."""
    call()
    sync()
    after_warmup()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def peak_rss_mb() -> float:
    """This process's high-water resident set size in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table (numbers already formatted by the caller)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda values: "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)])
