"""Figures of an evaluation, written as PNG files (matplotlib, Agg backend: no display needed).

- :func:`plot_det`: DET curves on normal-deviate (probit) axes, the speaker-verification standard;
- :func:`plot_score_histogram`: target and non-target score distributions;
- :func:`plot_tsne`: a 2-D t-SNE map of embeddings, one colour-and-marker style per speaker / label (up to
  100 classes without a repeat), titled with the model's name;
- :func:`plot_confusion_matrix`: row-normalised confusion matrix with counts;
- :func:`plot_training_curves`: scalars from a TensorBoard log folder or a ``metrics.jsonl`` / JSON / CSV file;
- :func:`plot_evaluation_curve`: the EER (and minDCF) measured during training, against the step.

Each function returns the path it wrote. From the command line::

    dino-speech plots tsne --model DIR --input MANIFEST_OR_DIR --color speaker --out tsne.png
    dino-speech plots tsne --embeddings embeddings.parquet --color speaker --out tsne.png
    dino-speech plots training --log RUN_DIR_OR_metrics.jsonl --out curves.png [--tags loss teacher_entropy]
    dino-speech plots eer --log RUN_DIR_OR_metrics.jsonl --out eer.png [--model-name NAME]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from modeling_dino_speech.metrics.detection_error_tradeoff import DetectionCurve

__all__ = [
    "class_styles",
    "plot_confusion_matrix",
    "plot_det",
    "plot_evaluation_curve",
    "plot_score_histogram",
    "plot_training_curves",
    "plot_tsne",
    "read_scalars",
]

_DET_TICKS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9]


def _save(fig: plt.Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _probit(p: np.ndarray) -> np.ndarray:
    from scipy.stats import norm

    return norm.ppf(np.clip(p, 1e-5, 1 - 1e-5))


def _thin(x: np.ndarray, y: np.ndarray, resolution: float = 0.005) -> np.ndarray:
    """Indices of the points that move the curve by at least ``resolution`` (probit units): a 10M-trial
    curve draws as a few thousand points, with every visible corner kept."""
    cell = np.stack([np.floor(x / resolution), np.floor(y / resolution)])
    keep = np.ones(x.shape[0], dtype=bool)
    keep[1:-1] = (np.diff(cell[:, :-1], axis=1) != 0).any(axis=0) | (np.diff(cell[:, 1:], axis=1) != 0).any(axis=0)
    return np.flatnonzero(keep)


def plot_det(curves: Mapping[str, DetectionCurve], path: str | os.PathLike, title: str = "DET curve") -> Path:
    """DET curves (miss vs. false-alarm probability, probit axes), each marked at its EER and minDCF(0.01)."""
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    lo, hi = _probit(np.array([0.0005, 0.95]))
    for name, curve in curves.items():
        x, y = _probit(curve.p_fa), _probit(curve.p_miss)
        keep = _thin(x, y)
        eer = curve.equal_error_rate().value
        (line,) = ax.plot(x[keep], y[keep], lw=1.5, label=f"{name} (EER {eer:.2%})")
        ax.plot(*_probit(np.array([eer, eer])), "o", color=line.get_color(), ms=5)
        dcf_index = int(np.searchsorted(curve.thresholds, curve.minimum_detection_cost(0.01).threshold))
        ax.plot(x[dcf_index], y[dcf_index], "s", color=line.get_color(), ms=5, mfc="none")
    ticks = _probit(np.array(_DET_TICKS))
    labels = [f"{100 * t:g}" for t in _DET_TICKS]
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, labels)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.plot([lo, hi], [lo, hi], ":", color="grey", lw=0.8)
    ax.set_xlabel("false-alarm probability (%)")
    ax.set_ylabel("miss probability (%)")
    ax.set_title(title + "\n(o EER, \u25a1 minDCF@0.01)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    return _save(fig, path)


def plot_score_histogram(
    scores: np.ndarray,
    labels: np.ndarray,
    path: str | os.PathLike,
    title: str = "trial scores",
    threshold: Optional[float] = None,
) -> Path:
    """Normalised histograms of target and non-target scores, with an optional decision threshold."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.histogram_bin_edges(scores, bins=min(100, max(10, int(np.sqrt(scores.size)))))
    ax.hist(scores[~labels], bins=bins, density=True, alpha=0.55, label=f"non-target ({(~labels).sum():,})")
    ax.hist(scores[labels], bins=bins, density=True, alpha=0.55, label=f"target ({labels.sum():,})")
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(threshold, color="k", ls="--", lw=1, label=f"EER threshold {threshold:.3f}")
    ax.set_xlabel("score")
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


#: Ten markers that stay apart at scatter size, to combine with the ten tab10 colours.
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def class_styles(count: int) -> List[Tuple[tuple, str]]:
    """``(colour, marker)`` for ``count`` classes: 100 distinct combinations of the tab10 colours and ten markers
    (class ``i`` has colour ``i % 10`` and marker ``(i // 10 + i) % 10``, so neighbouring classes differ in both),
    repeating only beyond 100 classes."""
    colours = plt.get_cmap("tab10").colors
    return [(colours[i % 10], _MARKERS[(i // 10 + i) % 10]) for i in range(count)]


def plot_tsne(
    embeddings: np.ndarray,
    labels: Sequence,
    path: str | os.PathLike,
    title: str = "t-SNE of embeddings",
    max_points: int = 2000,
    max_legend: int = 40,
    seed: int = 0,
    model_name: Optional[str] = None,
) -> Path:
    """2-D t-SNE (cosine distance) of ``embeddings`` (N, D), one colour-and-marker style per label (see
    :func:`class_styles`; at most ``max_points``, drawn at random), titled with ``model_name`` when given."""
    from sklearn.manifold import TSNE

    embeddings = np.asarray(embeddings, dtype=np.float32)
    labels = np.asarray([str(v) for v in labels])
    if embeddings.shape[0] != labels.shape[0]:
        raise ValueError(f"{embeddings.shape[0]} embeddings but {labels.shape[0]} labels")
    if embeddings.shape[0] < 4:
        raise ValueError(f"t-SNE needs at least 4 points, got {embeddings.shape[0]}")
    rng = np.random.default_rng(seed)
    if embeddings.shape[0] > max_points:
        keep = rng.permutation(embeddings.shape[0])[:max_points]
        embeddings, labels = embeddings[keep], labels[keep]
    perplexity = float(min(30.0, (embeddings.shape[0] - 1) / 3))
    points = TSNE(n_components=2, perplexity=perplexity, metric="cosine", init="pca", random_state=seed).fit_transform(
        embeddings
    )
    classes = sorted(set(labels.tolist()))
    styles = class_styles(len(classes))
    fig, ax = plt.subplots(figsize=(7.5 if len(classes) > 20 else 6.5, 5.5))
    for i, (name, (colour, marker)) in enumerate(zip(classes, styles)):
        mask = labels == name
        ax.scatter(
            points[mask, 0],
            points[mask, 1],
            s=14,
            color=colour,
            marker=marker,
            linewidths=0.3,
            edgecolors="white",
            label=name if i < max_legend else None,
        )
    ax.set_xticks([])
    ax.set_yticks([])
    heading = f"{title}: {model_name}" if model_name else title
    repeats = ", styles repeat past 100" if len(classes) > 100 else ""
    ax.set_title(f"{heading}\n({embeddings.shape[0]} utterances, {len(classes)} classes{repeats})", fontsize=10)
    if classes:
        ax.legend(
            fontsize=7,
            markerscale=1.5,
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            ncol=2 if min(len(classes), max_legend) > 20 else 1,
            title=None if len(classes) <= max_legend else f"first {max_legend} of {len(classes)}",
        )
    return _save(fig, path)


def plot_confusion_matrix(
    matrix: np.ndarray, labels: Sequence, path: str | os.PathLike, title: str = "confusion matrix"
) -> Path:
    """Rows = true class, columns = predicted; colour = row-normalised rate, text = count."""
    matrix = np.asarray(matrix)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    names = [str(v) for v in labels]
    size = 1.2 + 0.6 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(
                j,
                i,
                f"{matrix[i, j]}\n{rates[i, j]:.0%}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if rates[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, path)


def read_scalars(source: str | os.PathLike) -> Dict[str, tuple]:
    """Scalar series ``{tag: (steps (S,), values (S,))}`` from a TensorBoard log folder (event files,
    searched recursively), a JSON-lines file (``{"step": s, "<tag>": v, ...}`` per line, as written by
    training's ``metrics.jsonl``), a JSON list of such records, or a CSV with a ``step`` column."""
    source = Path(source)
    records: Dict[str, Dict[int, float]] = {}

    def add(step, tag, value) -> None:
        if tag == "step" or isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            return
        records.setdefault(tag, {})[int(step)] = float(value)

    if source.is_dir():
        events = sorted(source.rglob("events.out.tfevents.*"))
        if not events:
            jsonl = sorted(source.rglob("metrics.jsonl"))
            if not jsonl:
                raise FileNotFoundError(f"{source}: no TensorBoard event files or metrics.jsonl found")
            return read_scalars(jsonl[0])
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        for event_file in events:
            accumulator = EventAccumulator(str(event_file), size_guidance={"scalars": 0})
            accumulator.Reload()
            for tag in accumulator.Tags().get("scalars", []):
                for event in accumulator.Scalars(tag):
                    add(event.step, tag, event.value)
    elif not source.is_file():
        raise FileNotFoundError(f"{source}: training log does not exist")
    elif source.suffix == ".csv":
        with open(source, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                if "step" not in row:
                    raise ValueError(f"{source}: a CSV of scalars needs a 'step' column")
                for tag, text in row.items():
                    try:
                        add(float(row["step"]), tag, float(text))
                    except (TypeError, ValueError):
                        continue
    else:
        text = source.read_text(encoding="utf-8")
        if source.suffix == ".json":
            rows = json.loads(text)
        else:
            rows = []
            for lineno, line in enumerate(text.splitlines(), start=1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise ValueError(f"{source}:{lineno}: not JSON: {err}") from None
        for i, row in enumerate(rows):
            if not isinstance(row, dict) or "step" not in row:
                raise ValueError(f"{source}: record {i} has no 'step': {row!r}")
            for tag, value in row.items():
                add(row["step"], tag, value)
    return {
        tag: (np.array(sorted(series)), np.array([series[s] for s in sorted(series)]))
        for tag, series in sorted(records.items())
    }


def plot_training_curves(
    source: str | os.PathLike | Mapping[str, tuple],
    path: str | os.PathLike,
    tags: Optional[Sequence[str]] = None,
    title: str = "training curves",
    columns: int = 3,
) -> Path:
    """One small panel per scalar (``tags`` selects and orders them; default: every tag found).

    Args:
        source: a log folder or file (see :func:`read_scalars`) or already-read ``{tag: (steps, values)}``.
    """
    scalars = read_scalars(source) if not isinstance(source, Mapping) else dict(source)
    if tags is not None:
        missing = [t for t in tags if t not in scalars]
        if missing:
            raise KeyError(f"tags {missing} not in the training log; found {sorted(scalars)}")
        scalars = {t: scalars[t] for t in tags}
    if not scalars:
        raise ValueError(f"{source}: no scalars to plot")
    rows = -(-len(scalars) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 2.6 * rows), squeeze=False)
    for ax, (tag, (steps, values)) in zip(axes.ravel(), scalars.items()):
        ax.plot(steps, values, lw=1.2, marker="o" if len(steps) < 20 else None, ms=3)
        ax.set_title(tag, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
    for ax in axes.ravel()[len(scalars) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def plot_evaluation_curve(
    source: str | os.PathLike | Sequence[Mapping],
    path: str | os.PathLike,
    title: str = "EER during training",
    model_name: Optional[str] = None,
) -> Path:
    """The speaker-verification EER (%) measured during training against the step, with minDCF(0.01) on a second
    axis when logged.

    Args:
        source: a run folder or ``metrics.jsonl`` (its ``eval/eer``, ``eval/min_dcf_0.01`` scalars), or the
            evaluations as ``[{"step", "eer", "min_dcf_0.01", ...}]`` (a training summary's ``evaluations``).
    """
    if isinstance(source, (str, os.PathLike)):
        scalars = read_scalars(source)
        if "eval/eer" not in scalars:
            raise ValueError(f"{source}: no eval/eer logged (was the recipe's eval.trials set?)")
        series = {k[len("eval/") :]: v for k, v in scalars.items() if k in ("eval/eer", "eval/min_dcf_0.01")}
    else:
        rows = [r for r in source if "eer" in r]
        if not rows:
            raise ValueError("no evaluation with an EER to plot")
        series = {
            key: (np.array([r["step"] for r in rows if key in r]), np.array([r[key] for r in rows if key in r]))
            for key in ("eer", "min_dcf_0.01")
            if any(key in r for r in rows)
        }
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps, eer = series["eer"]
    ax.plot(steps, eer, marker="o", ms=4, lw=1.5, color="tab:blue", label="EER (%)")
    for x, y in zip(steps[-1:], eer[-1:]):
        ax.annotate(f"{y:.1f}%", (x, y), textcoords="offset points", xytext=(4, 6), fontsize=8, color="tab:blue")
    ax.set_xlabel("step")
    ax.set_ylabel("EER (%)", color="tab:blue")
    ax.grid(True, alpha=0.3)
    if "min_dcf_0.01" in series:
        other = ax.twinx()
        dcf_steps, dcf = series["min_dcf_0.01"]
        other.plot(dcf_steps, dcf, marker="s", ms=4, lw=1.2, ls="--", color="tab:orange", label="minDCF (0.01)")
        other.set_ylabel("minDCF (p_target 0.01)", color="tab:orange")
        other.set_ylim(0, max(1.0, float(np.max(dcf)) * 1.05))
    ax.set_ylim(0, float(np.max(eer)) * 1.15 + 0.5)
    ax.set_title(f"{title}: {model_name}" if model_name else title, fontsize=10)
    return _save(fig, path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dino-speech plots", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    tsne = commands.add_parser("tsne", help="t-SNE map of utterance embeddings coloured by a column")
    source = tsne.add_mutually_exclusive_group(required=True)
    source.add_argument("--embeddings", help="a `dino-speech embed` output (.parquet / .npy with its .csv)")
    source.add_argument("--model", help="checkpoint folder or baseline name (embeds --input)")
    tsne.add_argument("--input", help="with --model: manifest CSV or audio folder")
    tsne.add_argument("--color", default="speaker", help="column to colour by (default: speaker)")
    tsne.add_argument("--max-points", type=int, default=2000)
    tsne.add_argument("--title", default="t-SNE of embeddings")
    tsne.add_argument("--device", default="auto")
    tsne.add_argument("--out", required=True)
    training = commands.add_parser("training", help="training curves from a TensorBoard folder or metrics.jsonl")
    training.add_argument("--log", required=True)
    training.add_argument("--tags", nargs="+", help="scalars to plot, in order (default: all)")
    training.add_argument("--title", default="training curves")
    training.add_argument("--out", required=True)
    eer = commands.add_parser("eer", help="the EER measured during training, against the step")
    eer.add_argument("--log", required=True, help="run folder or metrics.jsonl")
    eer.add_argument("--model-name", help="named in the title")
    eer.add_argument("--out", required=True)
    tsne.add_argument("--model-name", help="named in the title (default: --model)")
    args = parser.parse_args(argv)
    from modeling_dino_speech.utils.paths import check_outputs_spare_inputs

    sources = [getattr(args, name, None) for name in ("log", "embeddings", "input")]
    if getattr(args, "embeddings", None) and args.embeddings.endswith(".npy"):
        sources.append(str(Path(args.embeddings).with_suffix(".csv")))
    check_outputs_spare_inputs([args.out], sources, "figure")

    if args.command == "training":
        print(plot_training_curves(args.log, args.out, tags=args.tags, title=args.title))
        return 0
    if args.command == "eer":
        print(plot_evaluation_curve(args.log, args.out, model_name=args.model_name))
        return 0
    if args.embeddings:
        from modeling_dino_speech.inference import read_embeddings

        embeddings, table = read_embeddings(args.embeddings)
    else:
        if not args.input:
            parser.error("--model needs --input (a manifest CSV or an audio folder)")
        from modeling_dino_speech.inference import embed_files, load_audio_list, load_model

        files = load_audio_list(args.input)
        model, feature_extractor = load_model(args.model, device=args.device)
        embeddings = embed_files(model, feature_extractor, files["path"], durations=files["duration"])
        table = files.to_pandas()
    if args.color not in table.columns:
        parser.error(f"no column {args.color!r} to colour by; columns: {list(table.columns)}")
    name = args.model_name or args.model
    print(
        plot_tsne(
            embeddings,
            table[args.color].tolist(),
            args.out,
            title=args.title,
            max_points=args.max_points,
            model_name=name,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
