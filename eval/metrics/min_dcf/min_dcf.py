"""`evaluate.load("eval/metrics/min_dcf")` from the repository root: the metric installed with the package."""

from modeling_dino_speech.metrics.min_dcf.min_dcf import MinDCF  # noqa: F401  # From: dino-speech
