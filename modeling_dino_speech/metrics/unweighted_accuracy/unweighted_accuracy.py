"""Unweighted accuracy (mean per-class recall), as an `evaluate` metric.

Load offline from anywhere with ``evaluate.load(metric_path("unweighted_accuracy"))``; with the ``"string"`` config
(``evaluate.load(metric_path("unweighted_accuracy"), "string")``) it takes class names instead of integer ids.
The computation lives in ``modeling_dino_speech.metrics.classification``.
"""

import datasets
import evaluate

from modeling_dino_speech.metrics import PAPER_CITATION as _CITATION  # From: dino-speech
from modeling_dino_speech.metrics.classification import unweighted_accuracy  # From: dino-speech

_DESCRIPTION = """
The mean over the classes present in the references of each class's recall, the usual
emotion-recognition companion of weighted accuracy (sklearn's balanced_accuracy_score).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`, or of `str` with the "string" config): predicted classes.
    references (`list` of `int`, or of `str` with the "string" config): true classes.
Returns:
    unweighted_accuracy (`float`): in [0, 1].
Examples:
    >>> from modeling_dino_speech.metrics import metric_path
    >>> metric = evaluate.load(metric_path("unweighted_accuracy"))
    >>> metric.compute(predictions=[0, 1, 1, 2], references=[0, 1, 2, 2])
    {'unweighted_accuracy': 0.8333333333333334}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class UnweightedAccuracy(evaluate.Metric):
    def _info(self):
        kind = datasets.Value("string") if self.config_name == "string" else datasets.Value("int64")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": kind, "references": kind}),
        )

    def _compute(self, predictions, references):
        return {"unweighted_accuracy": unweighted_accuracy(references, predictions)}
