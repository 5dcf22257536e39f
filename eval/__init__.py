"""Evaluation of dino-speech embeddings: speaker verification, emotion recognition, metrics, plots, model cards.

Kept import-light on purpose: the `evaluate` metric modules under ``eval/metrics/<name>/`` import
``eval.metrics.*``, and loading a metric must not pull in torch or transformers.

Command-line tools::

    python -m eval.embed   --model DIR --input DIR_OR_MANIFEST --out embeddings.parquet
    python -m eval.verify  --model DIR --trials FILE --audio-root DIR [--cohort MANIFEST] [--out results.json]
    python -m eval.emotion --model DIR --corpus {iemocap,crema_d,msp_podcast,demo} --root DIR [--out ...]
    python -m eval.report  --model DIR --results results.json [...]
"""
