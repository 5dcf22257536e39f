"""Metric computations in plain numpy, and the `evaluate` modules that wrap them.

Each ``modeling_dino_speech/metrics/<name>/<name>.py`` is an `evaluate.Metric`, installed with the package and
loadable offline from any directory::

    import evaluate
    from modeling_dino_speech.metrics import metric_path
    eer = evaluate.load(metric_path("eer"))   # or modeling_dino_speech.metrics.load("eer")

`evaluate` copies only that one script into its module cache, so the scripts import the algorithms by absolute
import (``modeling_dino_speech.metrics.detection_error_tradeoff``, ``modeling_dino_speech.metrics.classification``):
one implementation, used by the scripts, by verification and emotion recognition, and by the tests. The
repository's ``eval/metrics/<name>/`` folders hold two-line scripts that re-export these, so
``evaluate.load("eval/metrics/eer")`` works from the repository root too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["METRICS", "PAPER_CITATION", "load", "metric_path"]

#: The `evaluate` modules that ship with the package.
METRICS = ("eer", "min_dcf", "micro_f1", "macro_f1", "unweighted_accuracy")

# What the metric modules cite (minDCF cites the NIST evaluation plan instead).
PAPER_CITATION = """
@inproceedings{cho2022dino,
  title={Non-Contrastive Self-Supervised Learning of Utterance-Level Speech Representations},
  author={Cho, Jaejin and Pappagari, Raghavendra and Zelasko, Piotr and Moro-Velazquez, Laureano and
          Villalba, Jesus and Dehak, Najim},
  booktitle={Interspeech},
  year={2022}
}
"""


def metric_path(name: str) -> str:
    """The folder of the installed `evaluate` module ``name`` (one of :data:`METRICS`), for ``evaluate.load``."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; dino-speech ships {', '.join(METRICS)}")
    return str(Path(__file__).resolve().parent / name)


def load(name: str, config_name: str | None = None, **kwargs: Any):
    """``evaluate.load`` of a shipped metric (offline); ``config_name="string"`` for class-name labels."""
    import evaluate

    return evaluate.load(metric_path(name), config_name, **kwargs)
