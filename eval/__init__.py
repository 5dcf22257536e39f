"""The repository's evaluation entry points: ``python -m eval.<name> ...`` is ``dino-speech <name> ...``.

The code lives in the package (`modeling_dino_speech.evaluation`, `.inference`, `.scoring`, `.metrics`,
`.model_card`), so that an installed wheel has it; this folder is not installed. ``eval/metrics/<name>/`` let
``evaluate.load("eval/metrics/<name>")`` work from the repository root (anywhere else:
``evaluate.load(modeling_dino_speech.metrics.metric_path("<name>"))``).

    python -m eval.embed   --model DIR --input DIR_OR_MANIFEST --out embeddings.parquet
    python -m eval.verify  --model DIR --trials FILE --audio-root DIR [--cohort MANIFEST] [--out results.json]
    python -m eval.emotion --model DIR --corpus {iemocap,crema_d,msp_podcast,demo} --root DIR [--out ...]
    python -m eval.report  --model DIR --results results.json [...]
    python -m eval.plots   {tsne,training} ...
    python -m eval.demo_report --data data/demo --runs runs/demo
"""
