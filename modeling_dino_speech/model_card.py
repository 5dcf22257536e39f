"""Model cards with measured results, and results tables.

``dino-speech report --model DIR --results verify.json [emotion.json ...]`` fills the repository's
``model_card.md`` (a Hub model card template: YAML metadata with ``library_name``, ``tags``, ``license``,
``datasets`` and a ``model-index`` of the measured results) and writes it as ``DIR/README.md``, copying
the result plots into ``DIR/eval/`` so the card shows them. A pushed checkpoint thus carries its numbers.

``dino-speech report --compare DINO=dino.json,dino_emotion.json fbank=fbank.json [--out table.md]``
prints one markdown table comparing systems (EER, minDCF, micro-F1 per trial list / corpus).

Results files are what ``dino-speech verify`` and ``dino-speech emotion`` write (``speaker_verification`` and
``emotion_recognition`` sections); several files of one model are merged. Without results, a card shows the
evaluation the checkpoint was calibrated on at export (``verification_calibration`` in its ``config.json``), and
always states the decision threshold the checkpoint carries.

The card is written for a reader: the ``model-index`` has one entry per trial list and corpus (its
``dataset_config``), so results of different lists never merge; the model table lists only the settings of its
backbone; the description says what produced the model (DINO, or which pseudo-label round); evaluations made
during training are a table of their own. :func:`training_markdown` and :func:`results_markdown` render the
same tables for other reports (e.g. the demo's ``report.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

__all__ = [
    "TEMPLATE",
    "eval_results",
    "load_results",
    "main",
    "merge_results",
    "render_model_card",
    "results_markdown",
    "results_table",
    "threshold_markdown",
    "training_markdown",
    "write_model_card",
]

TEMPLATE = Path(__file__).resolve().parent / "model_card.md"

#: Trial lists and corpora with a known Hub dataset id and a readable name.
KNOWN_DATASETS: Dict[str, Tuple[str, str]] = {
    "veri_test": ("voxceleb", "VoxCeleb1-O"),
    "veri_test2": ("voxceleb", "VoxCeleb1-O (cleaned)"),
    "list_test_all": ("voxceleb", "VoxCeleb1-E"),
    "list_test_all2": ("voxceleb", "VoxCeleb1-E (cleaned)"),
    "list_test_hard": ("voxceleb", "VoxCeleb1-H"),
    "list_test_hard2": ("voxceleb", "VoxCeleb1-H (cleaned)"),
    "trials_real": ("dino-speech-demo", "demo: Asterisk voices"),
    "trials_real_crosslang": ("dino-speech-demo", "demo: Asterisk voices, cross-language"),
    "trials_synth": ("dino-speech-demo", "demo: held-out synthetic voices"),
    "trials_real_new": ("dino-speech-demo", "demo: held-out real voices"),
    "trials_mixed": ("dino-speech-demo", "demo: held-out real + synthetic voices"),
    "iemocap": ("iemocap", "IEMOCAP"),
    "crema_d": ("crema-d", "CREMA-D"),
    "msp_podcast": ("msp-podcast", "MSP-Podcast"),
    "demo": ("dino-speech-demo", "demo: prosody-style stand-in"),
}

Results = Dict[str, Any]
PathLike = Union[str, os.PathLike]


def load_results(path: PathLike) -> Results:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: results file does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err})") from None
    if not isinstance(data, dict) or not ({"speaker_verification", "emotion_recognition"} & set(data)):
        raise ValueError(
            f"{path}: no 'speaker_verification' or 'emotion_recognition' section "
            "(expected the output of dino-speech verify or dino-speech emotion)"
        )
    return data


def merge_results(results: Iterable[Union[PathLike, Mapping]]) -> Results:
    """Merge several results (files or dicts) of one model into one dict; later entries win on clashes."""
    merged: Results = {"speaker_verification": {}, "emotion_recognition": {}, "plots": {}}
    models = []
    for item in results:
        data = load_results(item) if isinstance(item, (str, os.PathLike)) else dict(item)
        models.append(data.get("model"))
        for section in ("speaker_verification", "emotion_recognition", "plots"):
            merged[section].update(data.get(section, {}))
    merged["model"] = next((m for m in models if m), None)
    return merged


def _dataset(name: str) -> Tuple[str, str]:
    return KNOWN_DATASETS.get(name, (name, name))


def eval_results(results: Mapping) -> list:
    """``huggingface_hub.EvalResult`` entries (the card's ``model-index``) for every measured number."""
    from huggingface_hub import EvalResult

    entries = []
    for name, m in results.get("speaker_verification", {}).items():
        dataset_type, dataset_name = _dataset(name)
        # dataset_config names the trial list: the Hub groups results by (task, dataset, config, split), so
        # Vox1-O, -E and -H (one dataset) or the demo's three lists stay apart.
        common = dict(
            task_type="speaker-verification",
            task_name="Speaker Verification",
            dataset_type=dataset_type,
            dataset_name=dataset_name,
            dataset_config=name,
            dataset_split="test",
            dataset_args={"trials": name},
        )
        variants = [("", "cosine", m)] + ([(" AS-norm", "as-norm", m["as_norm"])] if "as_norm" in m else [])
        for suffix, scoring, metrics in variants:
            entries.append(
                EvalResult(
                    metric_type="eer",
                    metric_value=round(metrics["eer"], 4),
                    metric_name=f"EER (%){suffix}",
                    metric_config=scoring,
                    **common,
                )
            )
            for p in ("0.01", "0.05"):
                if f"min_dcf_{p}" not in metrics:
                    continue
                entries.append(
                    EvalResult(
                        metric_type=f"min_dcf-p={p}",
                        metric_value=round(metrics[f"min_dcf_{p}"], 4),
                        metric_name=f"minDCF (p_target={p}){suffix}",
                        metric_config=scoring,
                        **common,
                    )
                )
    for name, m in results.get("emotion_recognition", {}).items():
        dataset_type, dataset_name = _dataset(name)
        common = dict(
            task_type="audio-classification",
            task_name="Emotion Recognition",
            dataset_type=dataset_type,
            dataset_name=dataset_name,
            dataset_config=name,
            dataset_split="test",
            dataset_args={"protocol": m.get("protocol", "")},
        )
        entries.append(
            EvalResult(
                metric_type="f1",
                metric_config="micro",
                metric_value=round(m["micro_f1"], 4),
                metric_name="micro-F1 (%)",
                **common,
            )
        )
        entries.append(
            EvalResult(
                metric_type="f1",
                metric_config="macro",
                metric_value=round(m["macro_f1"], 4),
                metric_name="macro-F1 (%)",
                **common,
            )
        )
        entries.append(
            EvalResult(
                metric_type="unweighted_accuracy",
                metric_value=round(m["unweighted_accuracy"], 4),
                metric_name="unweighted accuracy (%)",
                **common,
            )
        )
    return entries


def _number(metrics: Mapping, key: str, spec: str) -> str:
    value = metrics.get(key)
    return "" if value is None else format(value, spec)


def eer_cell(metrics: Mapping) -> str:
    """The EER in percent, with its bootstrap interval where one was measured (`12.30 [9.8, 15.1]`)."""
    low_high = metrics.get("eer_ci95")
    return f"{metrics['eer']:.2f}" + (f" [{low_high[0]:.1f}, {low_high[1]:.1f}]" if low_high else "")


def results_markdown(results: Mapping) -> str:
    """The card's results section: one table for verification (a row per trial list, with the EER threshold),
    one for emotion recognition."""
    parts = []
    verification = results.get("speaker_verification", {})
    if verification:
        rows = [
            "| trial list | trials | EER (%) | minDCF (0.01) | minDCF (0.05) | EER threshold |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, m in verification.items():
            label = _dataset(name)[1]
            trials = _number(m, "num_trials", ",")
            rows.append(
                f"| {label} | {trials} | {eer_cell(m)} | {_number(m, 'min_dcf_0.01', '.4f')} | "
                f"{_number(m, 'min_dcf_0.05', '.4f')} | {_number(m, 'eer_threshold', '.4f')} |"
            )
            if "as_norm" in m:
                a = m["as_norm"]
                rows.append(
                    f"| {label}, AS-norm (cohort {a['cohort_size']}, top {a['top_k']}) | {trials} | "
                    f"{a['eer']:.2f} | {a['min_dcf_0.01']:.4f} | {a['min_dcf_0.05']:.4f} | "
                    f"{_number(a, 'eer_threshold', '.4f')} |"
                )
        note = (
            " EER in brackets: 95% interval of a bootstrap over the list's speakers."
            if any("eer_ci95" in m for m in verification.values())
            else ""
        )
        parts.append(f"Speaker verification (cosine scoring).{note}\n\n" + "\n".join(rows))
    emotion = results.get("emotion_recognition", {})
    if emotion:
        rows = [
            "| corpus | protocol | utterances | micro-F1 (%) | macro-F1 (%) | UA (%) |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for name, m in emotion.items():
            rows.append(
                f"| {_dataset(name)[1]} | {m.get('protocol', '')} | {m.get('num_utterances', 0):,} | "
                f"{m['micro_f1']:.2f} | {m['macro_f1']:.2f} | {m['unweighted_accuracy']:.2f} |"
            )
        classifier = next(iter(emotion.values())).get("classifier", "logreg")
        parts.append(f"Emotion recognition (frozen embeddings + {classifier} classifier):\n\n" + "\n".join(rows))
    return "\n\n".join(parts) if parts else "No evaluation results were recorded for this checkpoint."


def threshold_markdown(calibration: Optional[Mapping]) -> str:
    """What the checkpoint decides with: its calibrated threshold, where it comes from, the other operating points."""
    if not calibration:
        return (
            "This checkpoint records no calibrated threshold: pick one on labelled pairs from your own domain "
            "(`dino-speech score --model DIR --pairs labelled_pairs.txt --out scores.txt` prints the EER and minDCF "
            "thresholds) and pass it as `threshold=` / `--threshold`."
        )
    name = _dataset(str(calibration.get("trials", "")))[1]
    point = {
        "eer": "equal error rate",
        "min_dcf_0.01": "minDCF (p_target 0.01)",
        "min_dcf_0.05": "minDCF (p_target 0.05)",
    }
    lines = [
        f"Two recordings are taken for the same speaker when the cosine of their embeddings is at least "
        f"**{calibration['threshold']:.4f}**: the {point.get(calibration.get('operating_point', 'eer'), 'chosen')} "
        f"operating point on {name}"
        + (
            f" (EER {calibration['eer']:.2f}% over {calibration.get('num_trials', 0):,} trials)"
            if "eer" in calibration
            else ""
        )
        + ", measured when the model was exported. `DinoSpeechVerifier` and `dino-speech similarity` decide with it.",
    ]
    others = [
        f"{point[p]}: {calibration[key]:.4f}"
        for p, key in (
            ("eer", "eer_threshold"),
            ("min_dcf_0.01", "min_dcf_0.01_threshold"),
            ("min_dcf_0.05", "min_dcf_0.05_threshold"),
        )
        if key in calibration and p != calibration.get("operating_point")
    ]
    if others:
        lines.append(f"Other operating points (`operating_point=` / `--operating-point`): {'; '.join(others)}.")
    lines.append(
        "A threshold holds for data like the trials it was measured on; on other speakers, languages or channels, "
        "calibrate again on labelled pairs of your own (`dino-speech score`)."
    )
    return "\n\n".join(lines)


def results_table(systems: Mapping[str, Mapping], measures: Sequence[str] = ("eer", "min_dcf_0.01", "micro_f1")) -> str:
    """One markdown table comparing systems: a row per system and, for each of `measures` in turn, a column
    per trial list (`eer`, with its interval where measured; `min_dcf_0.01`) or per emotion corpus
    (`micro_f1`); blank where a system was not measured."""
    lists: List[str] = []
    corpora: List[str] = []
    for results in systems.values():
        lists += [n for n in results.get("speaker_verification", {}) if n not in lists]
        corpora += [n for n in results.get("emotion_recognition", {}) if n not in corpora]
    columns = []  # (header, section, name, cell)
    for measure in measures:
        if measure == "eer":
            columns += [(f"{_dataset(n)[1]} EER (%)", "speaker_verification", n, eer_cell) for n in lists]
        elif measure == "min_dcf_0.01":
            columns += [
                (f"{_dataset(n)[1]} minDCF0.01", "speaker_verification", n, lambda m: f"{m['min_dcf_0.01']:.4f}")
                for n in lists
            ]
        elif measure == "micro_f1":
            columns += [
                (f"{_dataset(n)[1]} micro-F1 (%)", "emotion_recognition", n, lambda m: f"{m['micro_f1']:.2f}")
                for n in corpora
            ]
        else:
            raise ValueError(f"unknown measure {measure!r}: expected eer, min_dcf_0.01 or micro_f1")
    rows = [
        "| system | " + " | ".join(c[0] for c in columns) + " |",
        "|---" + "|---:" * len(columns) + "|",
    ]
    for system, results in systems.items():
        cells = [system]
        for _, section, name, cell in columns:
            metrics = results.get(section, {}).get(name)
            cells.append(cell(metrics) if metrics is not None else "")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _key_values(mapping: Mapping, empty: str) -> str:
    if not mapping:
        return empty
    rows = ["| | |", "|---|---|"]
    for key, value in mapping.items():
        if isinstance(value, float):
            value = f"{value:.6g}"
        elif isinstance(value, (dict, list)):
            value = "`" + json.dumps(value, default=str) + "`"
        rows.append(f"| {key} | {str(value).replace('|', '/')} |")
    return "\n".join(rows)


#: Columns of the evaluations-during-training table: (key, header, format).
_EVALUATION_COLUMNS = (
    ("eer", "EER (%)", ".2f"),
    ("eer_threshold", "EER threshold", ".4f"),
    ("min_dcf_0.01", "minDCF (0.01)", ".4f"),
    ("min_dcf_0.05", "minDCF (0.05)", ".4f"),
    ("num_trials", "trials", ",.0f"),
)


def training_markdown(summary: Optional[Mapping], empty: str = "No training summary was recorded.") -> str:
    """A training summary as tables: the settings and counts, then the evaluations made during training (the
    ``evaluations`` list: ``{"step", "eer", ...}`` per evaluation, as ``calibration.evaluation_history`` reads
    them from ``metrics.jsonl``)."""
    if not summary:
        return empty
    summary = dict(summary)
    evaluations = summary.pop("evaluations", None) or []
    parts = [_key_values(summary, empty)] if summary else []
    if evaluations:
        columns = [c for c in _EVALUATION_COLUMNS if any(c[0] in e for e in evaluations)]
        rows = ["| step | " + " | ".join(h for _, h, _ in columns) + " |", "|---:" + "|---:" * len(columns) + "|"]
        for entry in evaluations:
            cells = [format(entry[k], f) if isinstance(entry.get(k), (int, float)) else "" for k, _, f in columns]
            rows.append(f"| {entry.get('step', '')} | " + " | ".join(cells) + " |")
        parts.append("Evaluations during training (the recipe's trial list):\n\n" + "\n".join(rows))
    return "\n\n".join(parts)


def _model_summary(folder: Path) -> Dict[str, Any]:
    config_path = folder / "config.json"
    if not config_path.is_file():
        return {}
    config = json.loads(config_path.read_text(encoding="utf-8"))
    backbone = {
        "resnet": ("resnet_layers", "resnet_base_width"),
        "ecapa_tdnn": ("ecapa_channels", "ecapa_scale", "ecapa_se_channels", "ecapa_mfa_channels"),
    }.get(config.get("backbone"), ())
    pooling = ("attention_channels",) if config.get("pooling") == "attentive_statistics" else ()
    keys = (
        "model_type",
        "architectures",
        "backbone",
        *backbone,
        "pooling",
        *pooling,
        "embedding_size",
        "embedding_layer",
        "embedding_whitening",
        "pooled_whitening",
        "num_mel_bins",
        "sampling_rate",
        "mean_normalization",
    )
    summary = {k: config[k] for k in keys if k in config}
    if config.get("architectures") == ["DinoSpeechForXVector"] and config.get("num_labels"):
        summary["classes (AAM-softmax)"] = config["num_labels"]
    weights = folder / "model.safetensors"
    if weights.is_file():
        from safetensors import safe_open

        with safe_open(str(weights), framework="np") as handle:
            shapes = {name: handle.get_slice(name).get_shape() for name in handle.keys()}  # noqa: SIM118 (safe_open is not iterable)
        summary["parameters"] = (
            f"{sum(_numel(s) for s in shapes.values()) / 1e6:.2f} M (all tensors in model.safetensors)"
        )
        # the embedding layer's weight is (embedding_size, pooled statistics' size)
        embedding = shapes.get("embedding.weight", shapes.get("dino_speech.embedding.weight"))
        if embedding is not None:
            pooled = config.get("embedding_layer") == "pooled"
            summary["embedding dimensions"] = int(embedding[1] if pooled else embedding[0])
    return summary


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def describe(training: Optional[Mapping]) -> str:
    """The card's opening paragraph: what produced this checkpoint, from its training summary."""
    paper = (
        "(Cho et al., *Non-Contrastive Self-Supervised Learning of Utterance-Level Speech Representations*, "
        "Interspeech 2022), trained with the `dino-speech` package"
    )
    training = training or {}
    method = str(training.get("method", ""))
    if "pseudo" in method.lower() or "round" in training:
        round_ = training.get("round")
        clusters = training.get("clusters")
        return (
            "Utterance-level speaker embeddings from **iterative pseudo-labelling** "
            f"{paper}: a model trained without speaker labels (DINO) embedded and clustered its unlabelled "
            "training pool, and this network was then trained with an additive angular margin (AAM) softmax "
            f"on the cluster labels{f' (round {round_}' if round_ is not None else ''}"
            f"{f', {clusters} clusters' if clusters else ''}{')' if round_ is not None else ''}. "
            "No human speaker label was used. The embedding is this network's own embedding layer (the AAM "
            "classifier is not needed to use it)."
        )
    if "dino" in method.lower():
        return (
            "Utterance-level speaker embeddings learnt **without speaker labels** by DINO self-distillation "
            f"{paper}. The embeddings are those of the teacher network, the exponential moving average of the "
            "student that DINO trains."
        )
    return f"Utterance-level speech embeddings {paper}."


def render_model_card(
    results: Mapping,
    *,
    title: str = "DINO speech embeddings",
    training: Optional[Mapping] = None,
    model_summary: Optional[Mapping] = None,
    repo_id: str = "path/to/checkpoint",
    datasets: Optional[Sequence[str]] = None,
    license: str = "apache-2.0",
    plots: Optional[Mapping[str, str]] = None,
    description: Optional[str] = None,
    limitations: Optional[str] = None,
    template: Optional[PathLike] = None,
    calibration: Optional[Mapping] = None,
):
    """Fill the template. Returns a ``huggingface_hub.ModelCard`` (``.save(path)``, ``.data``, ``str()``).

    Args:
        calibration: the checkpoint's calibration record (``modeling_dino_speech.calibration``): its threshold is
            stated in the card.
    """
    from huggingface_hub import ModelCard, ModelCardData

    template = Path(template) if template is not None else TEMPLATE
    if not template.is_file():
        raise FileNotFoundError(
            f"{template}: model card template does not exist (it ships with the dino-speech package)"
        )
    sections = ("speaker_verification", "emotion_recognition")
    measured = sorted({_dataset(n)[0] for s in sections for n in results.get(s, {})})
    tags = [
        "audio",
        "speech",
        "speaker-recognition",
        "speaker-verification",
        "speaker-embeddings",
        "self-supervised-learning",
        "dino",
        "dino-speech",
    ]
    if results.get("emotion_recognition"):
        tags.append("emotion-recognition")
    entries = eval_results(results)
    card_data = ModelCardData(
        library_name="transformers",
        license=license,
        tags=tags,
        datasets=list(datasets) if datasets else (measured or None),
        metrics=["eer", "min_dcf"] + (["f1"] if results.get("emotion_recognition") else []),
        model_name=title if entries else None,
        eval_results=entries or None,
    )
    plots_markdown = "\n\n".join(f"![{name}]({path})" for name, path in (plots or {}).items())
    return ModelCard.from_template(
        card_data,
        template_path=str(template),
        title=title,
        repo_id=repo_id,
        description=description or describe(training),
        results_markdown=results_markdown(results),
        threshold_markdown=threshold_markdown(calibration),
        plots_markdown=plots_markdown,
        model_markdown=_key_values(model_summary or {}, "See `config.json`."),
        training_markdown=training_markdown(training),
        limitations=limitations
        or (
            "Embeddings reflect the training data: speakers, languages, channels and recording conditions far from "
            "it score less reliably. Cosine scores are not calibrated probabilities. Speaker embeddings are "
            "biometric data: use them only with the consent of the people recorded."
        ),
    )


def _copy_plots(results: Mapping, folder: Path) -> Dict[str, str]:
    """Copy existing result PNGs into ``folder/eval/``; returns ``{name: path relative to folder}``."""
    copied = {}
    for name, source in results.get("plots", {}).items():
        source = Path(source)
        if source.is_file():
            target = folder / "eval" / source.name
            target.parent.mkdir(exist_ok=True)
            if source.resolve() != target.resolve():
                shutil.copyfile(source, target)
            copied[name] = f"eval/{source.name}"
    return copied


def write_model_card(
    folder: PathLike,
    title: str = "DINO speech embeddings",
    training: Optional[Mapping] = None,
    results: Optional[Union[Mapping, Sequence[PathLike]]] = None,
    **kwargs: Any,
) -> Path:
    """Write ``folder/README.md`` for a checkpoint folder.

    Args:
        folder: the ``save_pretrained`` folder.
        training: a summary of training (method, steps, data, ...), shown as a table.
        results: a merged results dict, or results files from ``dino-speech verify`` / ``emotion``; top-level
            numbers without a section (e.g. ``{"eer": ...}`` from training) are ignored.
        **kwargs: passed to :func:`render_model_card` (``datasets``, ``license``, ``repo_id``, ...).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: checkpoint folder does not exist")
    if results is None:
        merged: Results = {}
    elif isinstance(results, Mapping):
        merged = dict(results)
    else:
        merged = merge_results(results)
    from .calibration import read_calibration

    calibration = read_calibration(folder)
    if calibration and "eer" in calibration and not merged.get("speaker_verification"):
        # No results given (a card written by training): show the evaluation the threshold was calibrated on.
        merged["speaker_verification"] = {str(calibration.get("trials", "evaluation trials")): dict(calibration)}
    plots = _copy_plots(merged, folder)
    card = render_model_card(
        merged,
        title=title,
        training=training,
        model_summary=_model_summary(folder),
        plots=plots,
        calibration=calibration,
        **kwargs,
    )
    path = folder / "README.md"
    card.save(path)
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dino-speech report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="checkpoint folder: its README.md is (re)written")
    parser.add_argument("--results", nargs="+", default=[], help="dino-speech verify / dino-speech emotion JSON files")
    parser.add_argument("--title", default="DINO speech embeddings")
    parser.add_argument("--training", help="JSON file with a training summary (e.g. a run's report.json)")
    parser.add_argument("--dataset", action="append", help="training/evaluation dataset ids for the card's metadata")
    parser.add_argument("--license", default="apache-2.0")
    parser.add_argument("--repo-id", default=None, help="Hub id shown in the usage example (default: the folder)")
    parser.add_argument("--template", default=None, help=f"model card template (default: {TEMPLATE})")
    parser.add_argument(
        "--compare",
        nargs="+",
        metavar="NAME=FILE[,FILE]",
        help="print a comparison table of several systems instead of writing a card",
    )
    parser.add_argument("--out", help="with --compare: write the table to this file")
    args = parser.parse_args(argv)

    from .utils.paths import check_outputs_spare_inputs

    inputs = [
        *args.results,
        args.training,
        args.template,
        *(f for item in args.compare or [] for f in item.partition("=")[2].split(",")),
    ]
    check_outputs_spare_inputs([args.out, Path(args.model) / "README.md" if args.model else None], inputs, "card")
    if args.compare:
        systems = {}
        for item in args.compare:
            name, sep, files = item.partition("=")
            if not sep or not files:
                parser.error(f"--compare takes NAME=FILE[,FILE...], got {item!r}")
            systems[name] = merge_results(files.split(","))
        table = results_table(systems)
        print(table)
        if args.out:
            Path(args.out).write_text(table + "\n", encoding="utf-8")
        return 0
    if not args.model:
        parser.error("--model is required (or use --compare)")
    training = None
    if args.training:
        try:
            training = json.loads(Path(args.training).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            parser.error(f"--training {args.training}: cannot read a JSON training summary ({err})")
    path = write_model_card(
        args.model,
        title=args.title,
        training=training,
        results=args.results or None,
        datasets=args.dataset,
        license=args.license,
        repo_id=args.repo_id or args.model,
        template=args.template,
    )
    print(f"model card -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
