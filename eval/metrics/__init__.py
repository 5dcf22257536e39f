"""Metric computations in plain numpy, and the `evaluate` modules that wrap them.

Each ``eval/metrics/<name>/<name>.py`` is an `evaluate.Metric` loadable offline with
``evaluate.load("eval/metrics/<name>")``. `evaluate` copies only that one script (plus same-folder
``from .x import`` siblings) into its module cache, so the scripts import the algorithms from this
package by absolute import (``eval.metrics.detection_error_tradeoff``, ``eval.metrics.classification``):
one implementation, used by the scripts, by ``eval.verify``/``eval.emotion`` and by the tests.
"""

# What the metric modules cite (minDCF cites the NIST evaluation plan instead).
PAPER_CITATION = """
@inproceedings{cho2022dino,
  title={Non-Contrastive Self-Supervised Learning of Utterance-Level Speech Representations},
  author={Cho, Jaejin and Pappagari, Raghavendra and Zelasko, Piotr and Moro-Velazquez, Laureano and
          Villalba, Jesus and Dehak, Najim},
  booktitle={Interspeech},
  year={2022}
}
"""
