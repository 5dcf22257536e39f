"""`evaluate.load("eval/metrics/macro_f1")` from the repository root: the metric installed with the package."""

from modeling_dino_speech.metrics.macro_f1.macro_f1 import MacroF1  # noqa: F401  # From: dino-speech
