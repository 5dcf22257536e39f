"""The transformers pipeline a dino-speech checkpoint carries: utterance embeddings for files or arrays.

    from transformers import pipeline
    embed = pipeline("speaker-embedding", model="path/or/hub-id", trust_remote_code=True)
    embed("a.wav")                                          # (D,) numpy embedding
    embed({"array": waveform, "sampling_rate": 8000})       # any rate, mono or (samples, channels)
    embed(["a.wav", "b.wav"])                               # a list of (D,) embeddings

The task is also registered as "feature-extraction". Every checkpoint saved by dino-speech names this file in
its config (`custom_pipelines`) and carries it, so the package need not be installed. A flat module: it imports
no other part of the package.
"""

from __future__ import annotations

import io
import os
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from transformers import Pipeline

PIPELINE_TASKS = ("speaker-embedding", "feature-extraction")
CUSTOM_PIPELINES = {
    task: {"impl": "pipeline_dino_speech.DinoSpeechEmbeddingPipeline", "pt": ["AutoModel"], "type": "audio"}
    for task in PIPELINE_TASKS
}


def _decode(data: Any, name: str, fallback_rate: int) -> Tuple[np.ndarray, int]:
    """Samples and rate of an audio file (a path or its bytes): soundfile, else transformers' ffmpeg reader."""
    try:
        import soundfile
    except ImportError:  # pragma: no cover - soundfile is a dependency of the package, not of transformers
        soundfile = None
    if soundfile is not None:
        try:
            samples, rate = soundfile.read(io.BytesIO(data) if isinstance(data, bytes) else data, dtype="float32")
            return samples, int(rate)
        except (RuntimeError, TypeError, soundfile.LibsndfileError) as err:
            raise ValueError(f"{name}: unreadable audio ({err})") from None
    from transformers.pipelines.audio_utils import ffmpeg_read

    if not isinstance(data, bytes):
        with open(data, "rb") as handle:
            data = handle.read()
    return ffmpeg_read(data, fallback_rate), fallback_rate


class DinoSpeechEmbeddingPipeline(Pipeline):
    """Audio in (a path, bytes, a waveform with its rate, a `{"array"/"raw", "sampling_rate"}` dict), the
    utterance embedding out (compare embeddings by cosine similarity).

    Call arguments: `sampling_rate` (of waveforms given without one; default: the model's, with the feature
    extractor's warning), `normalize` (unit-length embeddings) and `return_tensors` (torch instead of numpy).
    """

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = True
    _load_tokenizer = False

    def _sanitize_parameters(self, sampling_rate=None, normalize=None, return_tensors=None, **kwargs):
        preprocess = {} if sampling_rate is None else {"sampling_rate": sampling_rate}
        postprocess: Dict[str, Any] = {}
        if normalize is not None:
            postprocess["normalize"] = normalize
        if return_tensors is not None:
            postprocess["return_tensors"] = return_tensors
        return preprocess, {}, postprocess

    def preprocess(self, inputs: Any, sampling_rate: Optional[int] = None):
        rate = sampling_rate
        if isinstance(inputs, (str, os.PathLike)):
            path = os.path.expanduser(os.fspath(inputs))
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{path}: audio file does not exist")
            inputs, rate = _decode(path, path, self.feature_extractor.sampling_rate)
        elif isinstance(inputs, bytes):
            inputs, rate = _decode(inputs, "audio bytes", self.feature_extractor.sampling_rate)
        elif isinstance(inputs, dict):
            array = inputs.get("array", inputs.get("raw"))
            if array is None:
                raise ValueError("a dict input needs 'array' (or 'raw') and 'sampling_rate'")
            inputs, rate = array, inputs.get("sampling_rate", rate)
        elif isinstance(inputs, tuple) and len(inputs) == 2 and isinstance(inputs[1], (int, np.integer)):
            inputs, rate = inputs
        return self.feature_extractor(inputs, sampling_rate=rate, return_tensors="pt")

    def _forward(self, model_inputs):
        return {"embeddings": self.model(**model_inputs).embeddings}

    def postprocess(self, model_outputs, normalize: bool = False, return_tensors: bool = False):
        embedding = model_outputs["embeddings"][0].float()
        if normalize:
            embedding = torch.nn.functional.normalize(embedding, dim=-1)
        return embedding if return_tensors else embedding.cpu().numpy()
