"""One run per output folder.

Two runs writing into one `output_dir` mix their `metrics.jsonl`, overwrite each other's checkpoints and
exports, and delete each other's staging folders. So a run holds an exclusive advisory lock (`flock`) on
`<output_dir>/.lock` from its set-up, before it writes anything, to its end; a second run on the folder fails
at once, naming the holder (pid, host, start time and command, which the holder writes into the file). Only the
main process of a run takes the lock (the others learn from it whether it got it), so a multi-process run is one
holder. The kernel releases the lock when its process dies, so the file a crashed run leaves never blocks.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Callable, Optional, TypeVar

__all__ = ["LOCK_FILE", "OutputDirBusy", "OutputDirLock", "on_main_process"]

logger = logging.getLogger(__name__)

LOCK_FILE = ".lock"
T = TypeVar("T")


class OutputDirBusy(RuntimeError):
    """Another run holds the output folder."""


def on_main_process(accelerator, compute: Callable[[], T]) -> T:
    """`compute()` on the main process; every process returns its result, or raises its error (as a
    RuntimeError with the same message), so that none is left waiting for the others."""
    if accelerator.num_processes == 1:
        return compute()
    from accelerate.utils import broadcast_object_list

    outcome = [None, None]
    if accelerator.is_main_process:
        try:
            outcome = [compute(), None]
        except Exception as error:  # handed to every process, raised below
            outcome = [None, (type(error).__name__, str(error))]
    broadcast_object_list(outcome)
    result, failure = outcome
    if failure is not None:
        kind, message = failure
        raise (OutputDirBusy if kind == OutputDirBusy.__name__ else RuntimeError)(message)
    return result


class OutputDirLock:
    """The exclusive lock on `<folder>/.lock` (see the module doc).

    Args:
        folder: the run's output folder (created if needed).
        command: what holds it, for the message a second run shows (default: this process's command line).
    """

    def __init__(self, folder: os.PathLike, command: Optional[str] = None):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.command = command if command is not None else " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> OutputDirLock:
        """Take the lock or raise `OutputDirBusy` naming its holder; returns self."""
        try:
            import fcntl
        except ImportError:  # not POSIX (Windows): runs are not guarded against each other there
            logger.warning("no file locking on this platform: nothing stops a second run in %s", self.folder)
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            raise OutputDirBusy(
                f"output_dir {self.folder} is in use by another run ({holder}; lock file {self.path}). Two runs in "
                "one output_dir would mix their metrics, checkpoints and exports: wait for that run to end, stop "
                "it, or give this one another --output_dir."
            ) from None
        except OSError as error:  # a filesystem without flock (some network mounts)
            os.close(fd)
            logger.warning("cannot lock %s (%s): nothing stops a second run in %s", self.path, error, self.folder)
            return self
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": started, "command": self.command}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock up (the file stays; a dead holder's lock is released by the kernel)."""
        if self._fd is None:
            return
        import fcntl

        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            record = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
            return (
                f"pid {record['pid']} on host {record['host']}, started {record['started']}, "
                f"command: {record['command']}"
            )
        except (OSError, ValueError, KeyError, TypeError):
            return "holder not recorded yet: it is starting"

    def __enter__(self) -> OutputDirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
