"""`evaluate.load("eval/metrics/micro_f1")` from the repository root: the metric installed with the package."""

from modeling_dino_speech.metrics.micro_f1.micro_f1 import MicroF1  # noqa: F401  # From: dino-speech
