"""Equal error rate (EER) of a speaker-verification trial list, as an `evaluate` metric.

Load offline from anywhere with ``evaluate.load(metric_path("eer"))``.
The algorithm lives in ``modeling_dino_speech.metrics.detection_error_tradeoff`` (one implementation for the whole
project): exact, sort-based, thresholds over the distinct score values, so tied scores are handled.
"""

import datasets
import evaluate

from modeling_dino_speech.metrics import PAPER_CITATION as _CITATION  # From: dino-speech
from modeling_dino_speech.metrics.detection_error_tradeoff import detection_curve  # From: dino-speech

_DESCRIPTION = """
Equal error rate of a verification system: the error rate at which the miss rate (target trials rejected)
equals the false-alarm rate (non-target trials accepted). The operating points are all thresholds over the
distinct scores (accept when score >= threshold); the EER is where the piecewise-linear curve through them
crosses P_miss = P_fa, i.e. the classic root of the interpolated ROC curve. Returned as a fraction in [0, 1].
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): trial scores, higher = more likely the same speaker (e.g. cosine).
    references (`list` of `int`): 1 for a target (same-speaker) trial, 0 for a non-target trial.
Returns:
    eer (`float`): equal error rate, a fraction (multiply by 100 for %).
    threshold (`float`): the first threshold (accept when score >= threshold) with P_miss >= P_fa.
Examples:
    >>> from modeling_dino_speech.metrics import metric_path
    >>> eer = evaluate.load(metric_path("eer"))
    >>> eer.compute(predictions=[0.9, 0.8, 0.3, 0.1], references=[1, 0, 1, 0])
    {'eer': 0.5, 'threshold': 0.8}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class EER(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("int32")}
            ),
        )

    def _compute(self, predictions, references):
        value, threshold = detection_curve(predictions, references).equal_error_rate()
        return {"eer": value, "threshold": threshold}
