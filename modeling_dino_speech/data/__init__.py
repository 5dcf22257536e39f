"""Data pipeline: audio I/O, trial lists, corpus loaders, augmentation, VAD and multi-crop.

Only the light modules are imported here; ``corpora``, ``augment`` and ``multicrop`` are imported on use
(``from modeling_dino_speech.data.multicrop import ...``) so that reading a file does not pull in ``datasets``.
"""

from .audio import (
    AudioError,
    AudioInfo,
    audio_info,
    is_silent,
    load_audio,
    load_segments,
    resample,
)
from .trials import Trial, read_trials, trial_files, write_trials

__all__ = [
    "AudioError",
    "AudioInfo",
    "Trial",
    "audio_info",
    "is_silent",
    "load_audio",
    "load_segments",
    "read_trials",
    "resample",
    "trial_files",
    "write_trials",
]
