"""Macro-averaged F1 of single-label classification, as an `evaluate` metric.

Load offline from anywhere with ``evaluate.load(metric_path("macro_f1"))``; with the ``"string"`` config
(``evaluate.load(metric_path("macro_f1"), "string")``) it takes class names instead of integer ids.
The computation lives in ``modeling_dino_speech.metrics.classification``.
"""

import datasets
import evaluate

from modeling_dino_speech.metrics import PAPER_CITATION as _CITATION  # From: dino-speech
from modeling_dino_speech.metrics.classification import macro_f1  # From: dino-speech

_DESCRIPTION = """
The mean over classes of each class's F1 = 2 TP / (2 TP + FP + FN); a class with no true positives
scores 0. Classes default to those seen in the references or predictions (as sklearn's f1_score).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`, or of `str` with the "string" config): predicted classes.
    references (`list` of `int`, or of `str` with the "string" config): true classes.
    labels (`list`, optional): the classes to average over (a listed class that never occurs scores 0).
Returns:
    macro_f1 (`float`): in [0, 1].
Examples:
    >>> from modeling_dino_speech.metrics import metric_path
    >>> metric = evaluate.load(metric_path("macro_f1"))
    >>> metric.compute(predictions=[0, 1, 1, 2], references=[0, 1, 2, 2])
    {'macro_f1': 0.7777777777777777}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MacroF1(evaluate.Metric):
    def _info(self):
        kind = datasets.Value("string") if self.config_name == "string" else datasets.Value("int64")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": kind, "references": kind}),
        )

    def _compute(self, predictions, references, labels=None):
        return {"macro_f1": macro_f1(references, predictions, labels)}
