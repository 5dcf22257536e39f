"""ONNX export with the front end inside: ``dino-speech export-onnx MODEL out.onnx``.

The graph takes ``waveform`` -- float32 ``(batch, samples)`` in [-1, 1] at the model's sampling rate, every row
full length (no padding) -- and returns ``embeddings`` ``(batch, D)``, D the size of the layer
``config.embedding_layer`` names (the ``embedding_size`` metadata entry): the Kaldi fbank, the mean
normalisation, the network and any embedding whitening are all in it, so a runtime needs nothing but
onnxruntime (resample to the model's rate and average channels first). Batch size and length are dynamic.

The fbank is computed in a form that exports to plain ONNX operators: frames cut with ``unfold`` (strided
slices would do too, but torch 2.11's exporter loses their length), the DFT of the used frequency bins as a
matrix product (no FFT operator), then the same mel filters and normalisation as ``DinoSpeechFeatureExtractor``;
it matches the feature extractor to float32 rounding. After export the ONNX model is run with onnxruntime on a
test signal (``--check-audio`` adds real recordings) and its embeddings are compared with PyTorch's; the export
fails if a cosine falls below 0.9999.

Needs the ``onnx`` extra (``pip install "dino-speech[onnx]"``: onnx, onnxscript, onnxruntime). The graph holds
every frame of the input at once: embed long recordings in windows (see ``dino-speech embed --window``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from .feature_extraction_dino_speech import _LOG_FLOOR, _POVEY_EXPONENT, _PREEMPHASIS, kaldi_mel_filter_bank

__all__ = ["MIN_COSINE", "KaldiFbank", "WaveformEmbedder", "check_onnx", "export_onnx", "main"]

#: The export fails when ONNX and PyTorch embeddings of the same audio are less alike than this.
MIN_COSINE = 0.9999


class KaldiFbank(nn.Module):
    """``DinoSpeechFeatureExtractor.compute_features`` for a batch of full-length waveforms, in operators that
    trace and export: ``(B, samples)`` -> ``(B, frames, feature_size)``."""

    def __init__(self, feature_extractor: Any):
        super().__init__()
        fe = feature_extractor
        self.feature_extractor = fe
        self.win_length, self.hop_length = fe.win_length, fe.hop_length
        banks = torch.from_numpy(
            kaldi_mel_filter_bank(fe.feature_size, fe.n_fft, fe.sampling_rate, fe.low_freq, fe.high_freq)
        )
        used = banks.abs().sum(dim=1).nonzero().flatten()
        first, end = int(used.min()), int(used.max()) + 1
        # The n_fft-point DFT of a zero-padded win_length frame, for the bins some filter covers, with the povey
        # window (times Kaldi's 16-bit scale) folded into the basis.
        n = torch.arange(self.win_length, dtype=torch.float64)
        angle = 2.0 * math.pi * n[:, None] * torch.arange(first, end, dtype=torch.float64)[None, :] / fe.n_fft
        window = torch.hann_window(self.win_length, periodic=False, dtype=torch.float64).pow(_POVEY_EXPONENT)
        window = window * fe.waveform_scale
        self.register_buffer("cosine", (window[:, None] * torch.cos(angle)).float(), persistent=False)
        self.register_buffer("sine", (window[:, None] * torch.sin(angle)).float(), persistent=False)
        self.register_buffer("banks", banks[first:end].float(), persistent=False)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        centred = waveform - waveform.mean(dim=1, keepdim=True)
        frames = centred.unfold(1, self.win_length, self.hop_length)
        frames = frames - frames.mean(dim=-1, keepdim=True)
        previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
        frames = frames - _PREEMPHASIS * previous
        power = torch.matmul(frames, self.cosine).square() + torch.matmul(frames, self.sine).square()
        features = torch.matmul(power, self.banks).clamp_min(_LOG_FLOOR).log()
        counts = torch.full((waveform.shape[0],), frames.shape[1], dtype=torch.long, device=waveform.device)
        return self.feature_extractor._normalize_mean(features, None, counts)


class WaveformEmbedder(nn.Module):
    """Waveform ``(B, samples)`` -> embeddings ``(B, D)``: :class:`KaldiFbank` then the embedding model."""

    def __init__(self, model: nn.Module, feature_extractor: Any):
        super().__init__()
        self.fbank = KaldiFbank(feature_extractor)
        self.model = model

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.model(self.fbank(waveform)).embeddings


def _test_signal(sampling_rate: int, seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """A voiced-speech-like test signal: a gliding harmonic source under a slow syllabic envelope, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sampling_rate)) / sampling_rate
    phase = 2 * np.pi * np.cumsum(120.0 * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t))) / sampling_rate
    voiced = sum(0.7**h * np.sin(h * phase) for h in range(1, 15))
    envelope = 0.2 + 0.8 * np.sin(2 * np.pi * 2.5 * t) ** 2
    wave = voiced * envelope + 0.02 * rng.standard_normal(t.size)
    return (0.3 * wave / np.abs(wave).max()).astype(np.float32)


def check_onnx(
    path: os.PathLike, model: nn.Module, feature_extractor: Any, waveforms: Sequence[np.ndarray]
) -> List[float]:
    """Cosine of onnxruntime's and PyTorch's (feature extractor + model) embedding of each waveform (mono float32
    at the model's rate)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    device = next(model.parameters()).device
    cosines = []
    for wave in waveforms:
        ours = session.run(None, {"waveform": np.asarray(wave, dtype=np.float32)[None]})[0][0].astype(np.float64)
        with torch.inference_mode():
            batch = feature_extractor(wave, sampling_rate=feature_extractor.sampling_rate, return_tensors="pt")
            reference = model(**{k: v.to(device) for k, v in batch.items()}).embeddings[0].double().cpu().numpy()
        cosines.append(float(ours @ reference / (np.linalg.norm(ours) * np.linalg.norm(reference))))
    return cosines


def export_onnx(
    model: nn.Module,
    feature_extractor: Any,
    out: os.PathLike,
    *,
    opset: int = 18,
    check_waveforms: Optional[Sequence[np.ndarray]] = None,
    metadata: Optional[Dict[str, str]] = None,
) -> Dict[str, Any]:
    """Export ``model`` with its front end to ``out`` and check it against PyTorch with onnxruntime.

    Args:
        model: a ``DinoSpeechModel`` (eval mode, float32, on CPU).
        feature_extractor: its ``DinoSpeechFeatureExtractor``.
        check_waveforms: mono float32 waveforms at the model's rate to compare on (besides a test signal).
        metadata: extra ``metadata_props`` (strings) for the ONNX file.

    Returns:
        ``{"path", "cosines", "min_cosine", "opset"}``.

    Raises:
        RuntimeError: the ONNX embeddings differ from PyTorch's (cosine below ``MIN_COSINE``).
    """
    try:
        import onnx
    except ImportError:
        raise ImportError('ONNX export needs the onnx extra: pip install "dino-speech[onnx]"') from None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model.float().cpu().eval()
    wrapper = WaveformEmbedder(model, feature_extractor).eval()
    rate = int(feature_extractor.sampling_rate)
    example = torch.from_numpy(np.stack([_test_signal(rate, 2.0, seed=1), _test_signal(rate, 2.0, seed=2)]))
    batch = torch.export.Dim("batch", min=1, max=1024)
    samples = torch.export.Dim("samples", min=feature_extractor.win_length + feature_extractor.hop_length)
    with torch.no_grad():
        torch.onnx.export(
            wrapper,
            (example,),
            os.fspath(out),
            dynamo=True,
            input_names=["waveform"],
            output_names=["embeddings"],
            dynamic_shapes=({0: batch, 1: samples},),
            opset_version=opset,
            verbose=False,
        )
    proto = onnx.load(os.fspath(out))
    config = getattr(model, "config", None)
    props = {
        "producer": "dino-speech",
        "input": "waveform: float32 (batch, samples) in [-1, 1], mono, full-length rows",
        "sampling_rate": str(rate),
        "output": "embeddings: float32 (batch, embedding_size); compare by cosine similarity",
        **({"embedding_size": str(model.output_size)} if hasattr(model, "output_size") else {}),
        **(
            {"verification_threshold": repr(config.verification_threshold)}
            if getattr(config, "verification_threshold", None) is not None
            else {}
        ),
        **(metadata or {}),
    }
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.save(proto, os.fspath(out))
    waveforms = [_test_signal(rate, 3.0), _test_signal(rate, 5.3, seed=3)] + list(check_waveforms or [])
    cosines = check_onnx(out, model, feature_extractor, waveforms)
    if min(cosines) < MIN_COSINE:
        raise RuntimeError(
            f"{out}: ONNX and PyTorch embeddings differ (cosines {', '.join(f'{c:.6f}' for c in cosines)}; "
            f"need > {MIN_COSINE})"
        )
    return {"path": str(out), "cosines": cosines, "min_cosine": min(cosines), "opset": opset}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dino-speech export-onnx", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help="checkpoint folder or Hub id")
    parser.add_argument("out", help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=18)
    parser.add_argument("--check-audio", nargs="*", default=[], help="audio files to compare ONNX and PyTorch on")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow a checkpoint's own code to run")
    args = parser.parse_args(argv)
    from transformers.utils import logging as transformers_logging

    from .data.audio import load_audio
    from .inference import load_model, looks_like_local_path
    from .utils.paths import check_outputs_spare_inputs

    if not args.out.endswith(".onnx"):
        parser.error(f"the output must end in .onnx, got {args.out}")
    model_inputs = [os.path.join(args.model, "model.safetensors")] if looks_like_local_path(args.model) else []
    check_outputs_spare_inputs([args.out], [*model_inputs, *args.check_audio], "ONNX file")
    transformers_logging.disable_progress_bar()
    model, feature_extractor = load_model(args.model, device="cpu", trust_remote_code=args.trust_remote_code)
    if not hasattr(feature_extractor, "win_length"):
        raise ValueError(f"{args.model}: not a dino-speech checkpoint (its feature extractor has no Kaldi fbank)")
    audio = [load_audio(p, feature_extractor.sampling_rate) for p in args.check_audio]
    report = export_onnx(
        model, feature_extractor, args.out, opset=args.opset, check_waveforms=audio, metadata={"model": args.model}
    )
    print(json.dumps({k: v for k, v in report.items() if k != "cosines"}))
    print(
        f"{args.out}: waveform (batch, samples) at {feature_extractor.sampling_rate} Hz -> embeddings; onnxruntime "
        f"matches PyTorch (min cosine {report['min_cosine']:.7f} over {len(report['cosines'])} signals)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
