"""Micro-averaged F1 of single-label classification, as an `evaluate` metric.

Load offline from anywhere with ``evaluate.load(metric_path("micro_f1"))``; with the ``"string"`` config
(``evaluate.load(metric_path("micro_f1"), "string")``) it takes class names instead of integer ids.
The computation lives in ``modeling_dino_speech.metrics.classification``.
"""

import datasets
import evaluate

from modeling_dino_speech.metrics import PAPER_CITATION as _CITATION  # From: dino-speech
from modeling_dino_speech.metrics.classification import micro_f1  # From: dino-speech

_DESCRIPTION = """
F1 pooled over all examples. For single-label classification it equals accuracy; the DINO speech paper
reports it for emotion recognition (IEMOCAP, CREMA-D, MSP-Podcast).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`, or of `str` with the "string" config): predicted classes.
    references (`list` of `int`, or of `str` with the "string" config): true classes.
Returns:
    micro_f1 (`float`): in [0, 1].
Examples:
    >>> from modeling_dino_speech.metrics import metric_path
    >>> metric = evaluate.load(metric_path("micro_f1"))
    >>> metric.compute(predictions=[0, 1, 1, 2], references=[0, 1, 2, 2])
    {'micro_f1': 0.75}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MicroF1(evaluate.Metric):
    def _info(self):
        kind = datasets.Value("string") if self.config_name == "string" else datasets.Value("int64")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": kind, "references": kind}),
        )

    def _compute(self, predictions, references):
        return {"micro_f1": micro_f1(references, predictions)}
