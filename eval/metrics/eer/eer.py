"""`evaluate.load("eval/metrics/eer")` from the repository root: the metric installed with the package."""

from modeling_dino_speech.metrics.eer.eer import EER  # noqa: F401  # From: dino-speech
