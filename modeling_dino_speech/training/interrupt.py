"""Stopping a training loop between two steps when asked to (Ctrl-C, or SIGTERM from a scheduler or `kill`).

A forward pass cut short has already moved the student's BatchNorm statistics, and a process that leaves a
collective operation early leaves the others waiting: so the first signal only asks the loop to stop after the
step in progress, on every process at the same step, and the loop then raises `StoppedBetweenSteps`. A second
signal stops at once (a plain `KeyboardInterrupt`). Both are `KeyboardInterrupt`s, which the command line turns
into one line and exit status 130.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Optional

import torch

__all__ = ["GracefulStop", "StoppedBetweenSteps"]


class StoppedBetweenSteps(KeyboardInterrupt):
    """The stop a `GracefulStop` asked for, taken after a whole step."""


class GracefulStop:
    """Ctrl-C and SIGTERM ask the loop to stop after the step in progress; a second signal stops at once.

    `install` takes over the two signals (from the main thread; elsewhere it does nothing), `restore` gives back
    the previous handlers; the loop asks `requested(accelerator)` after each step.
    """

    def __init__(self) -> None:
        self.signal: Optional[int] = None
        self._previous: dict = {}

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt(f"signal {signum}")
        self.signal = signum
        print(
            f"\n{signal.Signals(signum).name}: stopping after the step in progress (again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    def requested(self, accelerator) -> bool:
        """Whether any process was signalled: all ranks must stop after the same step."""
        flag = self.signal is not None
        if accelerator.num_processes > 1:
            flag = bool(accelerator.reduce(torch.tensor(float(flag), device=accelerator.device), "max").item())
        return flag
