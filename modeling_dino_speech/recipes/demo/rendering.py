"""Rendering jobs: one job = one output file, run in a process pool. A file that exists is finished (it was
written atomically), so a killed build resumes with the missing ones."""

from __future__ import annotations

import dataclasses
import multiprocessing
import shutil
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .files import write_wav_atomic
from .signal import (
    SAMPLING_RATE,
    fit_length,
    join_recordings,
    read_recording,
    set_peak_level,
    telephone_band,
    trim_silence,
)

if TYPE_CHECKING:
    from .synthesis import SpeechTools

__all__ = ["RenderJob", "process_pool", "run_jobs"]


@dataclass(frozen=True)
class RenderJob:
    """One output file. ``kind``:

    * ``espeak`` / ``flite``: synthesise ``text`` with ``args``;
    * ``file``: process the recording ``source``;
    * ``joined``: the recordings ``sources``, each trimmed and brought to one level, joined with ``gap_s`` of
      silence (several short words or lines of one speaker as one utterance; a single source is just trimmed).

    All randomness (text, jitter, order, level) is drawn when planning, so the result does not depend on which
    worker runs the job or in which order."""

    out: str
    kind: str
    level_db: float
    args: tuple[str, ...] = ()
    text: str = ""
    variant: str = ""
    """espeak-ng voice variant, used to point the job at the data folder that holds it."""
    more_text: str = ""
    """Read after ``text`` when the utterance came out shorter than ``min_seconds``."""
    min_seconds: float = 0.0
    source: str = ""
    trim: bool = True
    max_seconds: float | None = None
    sources: tuple[str, ...] = ()
    gap_s: float = 0.0


_WORKER: dict = {}


def process_pool(workers: int, initializer=None, initargs: tuple = ()) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes; forked where possible, so workers inherit the imported modules instead
    of re-importing torch / transformers."""
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    return ProcessPoolExecutor(workers, mp_context=ctx, initializer=initializer, initargs=initargs)


def _init_worker(out_dir: str, tools: SpeechTools | None, scratch: str) -> None:
    import torch

    torch.set_num_threads(1)  # the pool is the parallelism; intra-op threads only fight over 2 cores
    _WORKER.update(out_dir=Path(out_dir), tools=tools, scratch=Path(scratch))


def _render(job: RenderJob) -> tuple[str, float]:
    """Produce one file; returns (relative path, duration in seconds)."""
    if job.kind == "file":
        wav, sr = read_recording(job.source)
    elif job.kind == "joined":
        wav, sr = join_recordings(job.sources, job.gap_s), SAMPLING_RATE
    else:
        from .synthesis import synthesise

        tools, scratch = _WORKER["tools"], _WORKER["scratch"]
        wav, sr = synthesise(job, tools, scratch)
        if job.more_text and len(trim_silence(wav, sr)) < job.min_seconds * sr:
            wav, sr = synthesise(dataclasses.replace(job, text=f"{job.text} {job.more_text}"), tools, scratch)
    if job.trim and job.kind != "joined":  # joined parts are trimmed one by one
        wav = trim_silence(wav, sr)
    wav = telephone_band(wav, sr)
    wav = fit_length(wav, job.max_seconds)
    wav = set_peak_level(wav, job.level_db, f"{job.out} from {job.source or job.sources or job.text!r}")
    write_wav_atomic(_WORKER["out_dir"] / job.out, wav, SAMPLING_RATE)
    return job.out, len(wav) / SAMPLING_RATE


def run_jobs(
    jobs: list[RenderJob], out_dir: Path, tools: SpeechTools | None, workers: int, log=print
) -> dict[str, float]:
    """Render the jobs whose output is missing; returns {relative path: seconds} for all jobs."""
    from tqdm.auto import tqdm

    from ...data.audio import audio_info

    durations: dict[str, float] = {}
    todo: list[RenderJob] = []
    for job in jobs:
        path = out_dir / job.out
        if path.exists():  # written atomically, so an existing file is a finished one (resume)
            durations[job.out] = audio_info(path).num_frames / SAMPLING_RATE
        else:
            todo.append(job)
    if not todo:
        return durations
    done = len(jobs) - len(todo)
    log(f"Rendering {len(todo)} files with {workers} worker(s)" + (f" ({done} already done)" if done else "") + " ...")
    scratch = Path(tempfile.mkdtemp(prefix="scratch-", dir=out_dir / ".build"))
    init_args = (str(out_dir), tools, str(scratch))
    try:
        progress = tqdm(total=len(todo), desc="demo corpus", unit="file", file=sys.stderr, mininterval=2.0)
        if workers <= 1 or len(todo) < 8:
            import torch

            threads = torch.get_num_threads()
            _init_worker(*init_args)
            try:
                for job in todo:
                    rel, sec = _render(job)
                    durations[rel] = sec
                    progress.update(1)
            finally:
                torch.set_num_threads(threads)
        else:
            with process_pool(workers, initializer=_init_worker, initargs=init_args) as pool:
                for rel, sec in pool.map(_render, todo, chunksize=8):
                    durations[rel] = sec
                    progress.update(1)
        progress.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return durations
