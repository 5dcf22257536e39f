"""Intra-op threads that degrade gracefully on a busy machine (``num_threads: auto``).

torch's default is one intra-op thread per core. On a machine where something else is running, that is one
thread too many: a parallel region ends only when its slowest thread does, and the thread that shares its core
with another process waits for a whole scheduler time slice, at every one of the thousands of regions of a
training step (the slowdown is measured in benchmarks/RESULTS.md, section 9).

The rule (:func:`choose_threads`): threads = the cores this process may run on, minus the cores *other*
processes kept busy over the last interval (``/proc/stat`` minus the CPU time of this process and of its
children, the DataLoader workers: they only run ahead of the step as far as the prefetch queue lets them, and a
quiet 2-core machine trains the demo fastest with 2 threads beside its worker), rounded to the nearest whole
core, at least 1. :class:`ThreadGovernor` re-evaluates it every ``interval_s`` seconds during training, so that
a compile job or a browser that comes and goes moves the thread count with it.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Callable, Optional, Tuple, Union

import torch

__all__ = [
    "AUTO",
    "ThreadGovernor",
    "apply_num_threads",
    "available_cores",
    "check_num_threads",
    "choose_threads",
    "current_governor",
]

logger = logging.getLogger(__name__)

AUTO = "auto"
#: A share of a core below which the rest of the machine is taken as idle (the kernel's own bookkeeping, ssh).
_NOISE_CORES = 0.15


def check_num_threads(value: Union[int, str], where: str = "num_threads") -> None:
    """A thread setting is a non-negative int (0: torch's default) or ``"auto"``."""
    if value == AUTO:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{where} must be a non-negative int (0: torch's default) or 'auto', got {value!r}")


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and ``taskset`` narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def choose_threads(cores: int, busy_elsewhere: float) -> int:
    """Threads for ``cores`` cores of which ``busy_elsewhere`` (in cores) are used by others: the free cores,
    rounded to the nearest whole core, between 1 and ``cores``."""
    if busy_elsewhere < _NOISE_CORES:
        return cores
    return max(1, min(cores, math.floor(cores - busy_elsewhere + 0.5)))


def _machine_busy_seconds() -> Optional[float]:
    """CPU-seconds the whole machine has been busy since boot (``/proc/stat``, steal counted as busy)."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = handle.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(v) for v in fields[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice: already counted in user and nice]
    busy = sum(ticks[:3]) + sum(ticks[5:8])
    return busy / os.sysconf("SC_CLK_TCK")


def _children(pid: str = "self") -> list[str]:
    """Live child processes (the DataLoader workers), from ``/proc/<pid>/task/*/children``."""
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as handle:
                    found.extend(handle.read().split())
            except OSError:
                continue
    except OSError:
        return []
    return found


def _process_seconds(pid: str) -> float:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _own_seconds() -> float:
    """CPU-seconds of this process (all its threads) and of its children, live (DataLoader workers) or not:
    the run's own work, which the rule does not count as load."""
    times = os.times()
    live = sum(_process_seconds(child) for child in _children())
    return times.user + times.system + times.children_user + times.children_system + live


class ThreadGovernor:
    """Keeps ``torch.set_num_threads`` at :func:`choose_threads` of the measured load, re-evaluated every
    ``interval_s`` seconds (:meth:`maybe_update`, called once per micro-batch by the training loop).

    Args:
        cores: the cores to share (default: :func:`available_cores`).
        interval_s: how often to re-measure.
        reader, own, clock: where busy time, this process's CPU time and the time come from (tests).
    """

    def __init__(
        self,
        cores: Optional[int] = None,
        interval_s: float = 15.0,
        reader: Callable[[], Optional[float]] = _machine_busy_seconds,
        own: Callable[[], float] = _own_seconds,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.cores = cores or available_cores()
        self.interval_s = float(interval_s)
        self._reader, self._own, self._clock = reader, own, clock
        self._last: Optional[Tuple[float, float, float]] = None
        self.threads = torch.get_num_threads()
        self.history: list[tuple[float, int]] = []
        """(busy cores elsewhere, threads chosen) of every evaluation."""
        self._mark()

    def _mark(self) -> Optional[Tuple[float, float, float]]:
        busy = self._reader()
        previous, self._last = self._last, (None if busy is None else (self._clock(), busy, self._own()))
        return previous

    def busy_elsewhere(self) -> Optional[float]:
        """Cores the rest of the machine kept busy since the last call (None where that cannot be read)."""
        previous = self._mark()
        if previous is None or self._last is None:
            return None
        wall = self._last[0] - previous[0]
        if wall <= 0:
            return None
        machine = self._last[1] - previous[1]
        own = self._last[2] - previous[2]
        return max(0.0, (machine - own) / wall)

    def update(self) -> int:
        """Measure and set the thread count now; returns it."""
        busy = self.busy_elsewhere()
        threads = self.cores if busy is None else choose_threads(self.cores, busy)
        self.history.append((float("nan") if busy is None else busy, threads))
        if threads != self.threads:
            logger.info(
                "num_threads auto: %s of %d cores busy elsewhere -> %d intra-op thread(s)",
                "?" if busy is None else f"{busy:.2f}",
                self.cores,
                threads,
            )
            torch.set_num_threads(threads)
            self.threads = threads
        return threads

    def maybe_update(self) -> Optional[int]:
        """:meth:`update` when ``interval_s`` has passed since the last evaluation."""
        if self._last is not None and self._clock() - self._last[0] < self.interval_s:
            return None
        return self.update()


_CURRENT: Optional[ThreadGovernor] = None


def apply_num_threads(setting: Union[int, str], probe_s: float = 0.5) -> Optional[ThreadGovernor]:
    """Apply a recipe's ``num_threads``: an int > 0 is set as it is, 0 leaves torch's default, ``"auto"``
    measures the machine for ``probe_s`` seconds, sets the count and returns the governor that keeps it
    (also :func:`current_governor`, for the training loop to call)."""
    global _CURRENT
    check_num_threads(setting)
    _CURRENT = None
    if setting == AUTO:
        governor = ThreadGovernor()
        time.sleep(probe_s)
        governor.update()
        _CURRENT = governor
        return governor
    if setting:
        torch.set_num_threads(int(setting))
    return None


def current_governor() -> Optional[ThreadGovernor]:
    """The governor of the last :func:`apply_num_threads` (None unless it was ``"auto"``)."""
    return _CURRENT
