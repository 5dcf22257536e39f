"""Normalised minimum detection cost (minDCF) of a speaker-verification trial list, as an `evaluate` metric.

Load offline from anywhere with ``evaluate.load(metric_path("min_dcf"))``. The algorithm lives in
``modeling_dino_speech.metrics.detection_error_tradeoff`` (one implementation for the whole project).
"""

import datasets
import evaluate

from modeling_dino_speech.metrics.detection_error_tradeoff import detection_curve  # From: dino-speech

_DESCRIPTION = """
Normalised minimum detection cost of a verification system, as in the NIST SRE and VoxSRC evaluations:
min over thresholds t of C_miss * P_miss(t) * p_target + C_fa * P_fa(t) * (1 - p_target), divided by
min(C_miss * p_target, C_fa * (1 - p_target)), the cost of a system that always accepts or always rejects.
The thresholds are all distinct score values (accept when score >= threshold), so tied scores are handled.
VoxCeleb results usually give p_target = 0.01 and 0.05 with C_miss = C_fa = 1.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): trial scores, higher = more likely the same speaker (e.g. cosine).
    references (`list` of `int`): 1 for a target (same-speaker) trial, 0 for a non-target trial.
    p_target (`float` or `list` of `float`, default 0.01): prior probability of a target trial. With a list,
        one result per prior is returned, keyed ``min_dcf@<p_target>``.
    c_miss (`float`, default 1): cost of a miss.
    c_fa (`float`, default 1): cost of a false alarm.
Returns:
    min_dcf (`float`): the normalised minimum detection cost (0 is perfect, 1 is no better than a constant decision).
    threshold (`float`): the threshold that reaches it (accept when score >= threshold).
Examples:
    >>> from modeling_dino_speech.metrics import metric_path
    >>> min_dcf = evaluate.load(metric_path("min_dcf"))
    >>> min_dcf.compute(predictions=[0.9, 0.8, 0.3, 0.1], references=[1, 0, 1, 0], p_target=0.05)
    {'min_dcf': 0.5, 'threshold': 0.9}
    >>> min_dcf.compute(predictions=[0.9, 0.8, 0.3, 0.1], references=[1, 0, 1, 0], p_target=[0.01, 0.05])
    {'min_dcf@0.01': 0.5, 'threshold@0.01': 0.9, 'min_dcf@0.05': 0.5, 'threshold@0.05': 0.9}
"""

_CITATION = """
@misc{nist2018sre,
  title={NIST 2018 Speaker Recognition Evaluation Plan},
  author={{National Institute of Standards and Technology}},
  year={2018}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MinDCF(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("int32")}
            ),
        )

    def _compute(self, predictions, references, p_target=0.01, c_miss=1.0, c_fa=1.0):
        curve = detection_curve(predictions, references)
        if isinstance(p_target, (list, tuple)):
            result = {}
            for prior in p_target:
                value, threshold = curve.minimum_detection_cost(prior, c_miss, c_fa)
                result[f"min_dcf@{prior}"] = value
                result[f"threshold@{prior}"] = threshold
            return result
        value, threshold = curve.minimum_detection_cost(p_target, c_miss, c_fa)
        return {"min_dcf": value, "threshold": threshold}
