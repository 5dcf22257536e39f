"""Decision thresholds calibrated when a model is exported, and the evaluation record a checkpoint carries.

A verification score is a cosine; whether 0.62 means "same speaker" depends on the model. At export the final
evaluation on the recipe's trial list gives the thresholds of its operating points (EER, and minDCF at
p_target 0.01 and 0.05); they go into the checkpoint's ``config.json``:

    "verification_threshold": 0.81,                    # what DinoSpeechVerifier decides with (the EER point)
    "verification_calibration": {"trials": "trials_synth", "operating_point": "eer", "threshold": 0.81,
                                 "eer": 7.4, "min_dcf_0.01": 0.73, "min_dcf_0.01_threshold": 0.97, ...}

and the model card states them. Training calls :func:`set_calibration` (on a model config before saving) or
:func:`calibrate_checkpoint` (on an exported folder); the scalars it logged while training (``eval/*`` in
``metrics.jsonl``) join the checkpoint's training summary with :func:`evaluation_history`.

A threshold holds for data like its trial list: on other speakers, languages or channels, calibrate again
(``dino-speech score --pairs your_labelled_pairs`` prints the thresholds of its operating points).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

__all__ = [
    "OPERATING_POINTS",
    "calibrate_checkpoint",
    "calibration_record",
    "evaluation_history",
    "read_calibration",
    "set_calibration",
    "threshold_of",
]

#: operating point -> the metrics key of its threshold
OPERATING_POINTS = {
    "eer": "eer_threshold",
    "min_dcf_0.01": "min_dcf_0.01_threshold",
    "min_dcf_0.05": "min_dcf_0.05_threshold",
}
_NUMBERS = (
    "eer",
    "eer_threshold",
    "min_dcf_0.01",
    "min_dcf_0.01_threshold",
    "min_dcf_0.05",
    "min_dcf_0.05_threshold",
    "num_trials",
    "num_targets",
    "num_nontargets",
)

PathLike = Union[str, os.PathLike]


def calibration_record(
    metrics: Mapping[str, Any], trials: Optional[PathLike] = None, operating_point: str = "eer"
) -> Dict[str, Any]:
    """The calibration of a model from its verification metrics (what ``evaluation.verification.verify`` and
    the training evaluator return).

    Args:
        metrics: ``eer``, ``eer_threshold``, ``min_dcf_*`` and their thresholds, trial counts, ``trials`` (path).
        trials: the trial list, when ``metrics`` does not name it.
        operating_point: which threshold decides: ``"eer"``, ``"min_dcf_0.01"`` or ``"min_dcf_0.05"``.
    """
    if operating_point not in OPERATING_POINTS:
        raise ValueError(f"operating_point must be one of {sorted(OPERATING_POINTS)}, got {operating_point!r}")
    key = OPERATING_POINTS[operating_point]
    if key not in metrics:
        raise ValueError(f"the metrics hold no {key} (got {sorted(metrics)}): not a verification result")
    path = trials if trials is not None else metrics.get("trials")
    if not math.isfinite(float(metrics[key])):
        raise ValueError(
            f"the {operating_point} operating point has no finite threshold ({metrics[key]}): it is reached by "
            "rejecting every trial; calibrate at another operating point"
        )
    record: Dict[str, Any] = {
        "trials": Path(os.fspath(path)).stem if path else "evaluation trials",
        "operating_point": operating_point,
        "threshold": float(metrics[key]),
    }
    if path:
        record["trials_path"] = os.fspath(path)
    for name in _NUMBERS:
        # A minDCF that only rejecting everything reaches has threshold +inf: no operating point to record (and
        # JSON has no infinity; transformers would save it as a dict).
        if name in metrics and math.isfinite(float(metrics[name])):
            value = metrics[name]
            record[name] = int(value) if name.startswith("num_") else float(value)
    return record


def set_calibration(
    config: Any, metrics: Mapping[str, Any], trials: Optional[PathLike] = None, operating_point: str = "eer"
) -> Dict[str, Any]:
    """Write the calibration into a model config (``verification_threshold``, ``verification_calibration``), to be
    saved with the model; returns the record."""
    record = calibration_record(metrics, trials, operating_point)
    config.verification_threshold = record["threshold"]
    config.verification_calibration = record
    return record


def read_calibration(source: Union[PathLike, Mapping, Any]) -> Optional[Dict[str, Any]]:
    """The calibration record of a checkpoint folder, a ``config.json`` dict or a config object (None if none)."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source) / "config.json"
        if not path.is_file():
            return None
        source = json.loads(path.read_text(encoding="utf-8"))
    get = source.get if isinstance(source, Mapping) else lambda k, d=None: getattr(source, k, d)
    record = get("verification_calibration", None)
    threshold = get("verification_threshold", None)
    if record:
        # checkpoints calibrated before non-finite thresholds were left out hold transformers' {"__float__": "Infinity"}
        return {k: v for k, v in dict(record).items() if not (isinstance(v, Mapping) and "__float__" in v)}
    if threshold is not None:
        return {"trials": "unknown", "operating_point": "eer", "threshold": float(threshold)}
    return None


def threshold_of(record: Mapping[str, Any], operating_point: Optional[str] = None) -> float:
    """The threshold of ``operating_point`` in a calibration record (None: the one it decides with)."""
    if operating_point is None or operating_point == record.get("operating_point"):
        return float(record["threshold"])
    if operating_point not in OPERATING_POINTS:
        raise ValueError(f"operating_point must be one of {sorted(OPERATING_POINTS)}, got {operating_point!r}")
    key = OPERATING_POINTS[operating_point]
    if key not in record:
        raise ValueError(f"the checkpoint's calibration has no {operating_point} threshold (it has {sorted(record)})")
    return float(record[key])


def evaluation_history(metrics_file: PathLike) -> List[Dict[str, float]]:
    """The evaluations logged during training: one ``{"step": s, "eer": ..., "min_dcf_0.01": ..., ...}`` per
    ``metrics.jsonl`` line that holds ``eval/*`` scalars (an empty list when the file does not exist)."""
    path = Path(metrics_file)
    if not path.is_file():
        return []
    history = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
        scalars = {k[len("eval/") :]: v for k, v in row.items() if k.startswith("eval/")}
        if scalars and "step" in row:
            history.append({"step": int(row["step"]), **scalars})
    return history


def _title(folder: Path, default: str) -> str:
    card = folder / "README.md"
    if card.is_file():
        match = re.search(r"^# (.+)$", card.read_text(encoding="utf-8"), re.M)
        if match:
            return match.group(1).strip()
    return default


def calibrate_checkpoint(
    folder: PathLike,
    metrics: Optional[Mapping[str, Any]] = None,
    evaluator: Optional[Callable] = None,
    history: Optional[Union[PathLike, List[Mapping]]] = None,
    operating_point: str = "eer",
    title: Optional[str] = None,
    device: Any = None,
) -> Dict[str, Any]:
    """Calibrate an exported checkpoint folder in place: its ``config.json`` gets the threshold, its
    ``training_summary.json`` the evaluations made during training, and its model card is written again with
    the results, the threshold and those evaluations.

    Args:
        folder: a ``save_pretrained`` folder of a ``DinoSpeechModel``.
        metrics: the verification metrics of exactly this model (as exported: whitening included); or
        evaluator: the training evaluator hook ``(model, feature_extractor) -> metrics``, run here on the model
            loaded from ``folder``.
        history: ``metrics.jsonl`` of the run (or its evaluations, from :func:`evaluation_history`).
        device: where the evaluator runs the loaded model (default: CPU).

    Returns:
        the calibration record.
    """
    from .model_card import write_model_card
    from .utils.atomic import write_text_atomic

    folder = Path(folder)
    if metrics is None:
        if evaluator is None:
            raise ValueError("calibrate_checkpoint needs the metrics or an evaluator")
        from . import DinoSpeechFeatureExtractor, DinoSpeechModel

        model = DinoSpeechModel.from_pretrained(folder).eval()
        if device is not None:
            model.to(device)
        metrics = evaluator(model, DinoSpeechFeatureExtractor.from_pretrained(folder))
    record = calibration_record(metrics, operating_point=operating_point)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.update(verification_threshold=record["threshold"], verification_calibration=record)
    write_text_atomic(config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")

    summary_path = folder / "training_summary.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
    if history is not None:
        evaluations = evaluation_history(history) if isinstance(history, (str, os.PathLike)) else list(history)
        if evaluations:
            summary["evaluations"] = evaluations
            write_text_atomic(summary_path, json.dumps(summary, indent=1, default=str))
    write_model_card(folder, title=title or _title(folder, "DINO speech embeddings"), training=summary)
    return record
