"""Metric computations in plain numpy, and the `evaluate` modules that wrap them.

Each ``eval/metrics/<name>/<name>.py`` is an `evaluate.Metric` loadable offline with
``evaluate.load("eval/metrics/<name>")``. `evaluate` copies only that one script (plus same-folder
``from .x import`` siblings) into its module cache, so the scripts import the algorithms from this
package by absolute import (``eval.metrics.detection_error_tradeoff``, ``eval.metrics.classification``):
one implementation, used by the scripts, by ``eval.verify``/``eval.emotion`` and by the tests.
"""
