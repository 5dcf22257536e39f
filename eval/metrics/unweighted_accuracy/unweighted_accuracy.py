"""`evaluate.load("eval/metrics/unweighted_accuracy")` from the repository root: the installed metric."""

from modeling_dino_speech.metrics.unweighted_accuracy.unweighted_accuracy import UnweightedAccuracy  # noqa: F401  # From: dino-speech
