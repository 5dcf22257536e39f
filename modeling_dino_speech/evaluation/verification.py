"""Speaker verification: ``dino-speech verify --model DIR --trials FILE [FILE ...] --audio-root DIR``.

For each trial list (VoxCeleb1-O/E/H, original or cleaned, the demo lists, any list in the official
``<label> <enroll> <test>`` format): every referenced file must exist and the list must hold target and
non-target trials (all problems are named before any work starts; repeated trials and self-trials are reported
and dropped), each distinct file is embedded once (lists sharing files share the work), trials are scored by
cosine similarity and reported as EER (%) and minDCF (p_target 0.01 and 0.05, C_miss = C_fa = 1). A file that
turns out unreadable while embedding (e.g. NaN samples) does not stop the run: its trials are left out, named in a
warning and counted in the results (``num_trials_skipped``, ``skipped_files``).

With ``--cohort`` (a manifest, an audio folder or a ``dino-speech embed`` embeddings file of unlabelled training
utterances), AS-norm scores are reported too. ``--out results.json`` writes the numbers, a DET curve
(``<stem>_det.png``) and score histograms (``<stem>_scores_<list>.png``) next to it.

``--model`` also takes the baselines ``fbank-stats`` and ``random-init:<checkpoint dir>``.

Results JSON::

    {"model": ..., "speaker_verification": {"<list>": {"eer": 4.38, "min_dcf_0.01": ..., "min_dcf_0.05": ...,
     "num_trials": ..., "as_norm": {...}}}, "plots": {...}}

``eer`` is in percent (as papers report it); minDCF is normalised (0 perfect, 1 no better than a constant
decision).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from modeling_dino_speech.metrics.bootstrap import eer_interval
from modeling_dino_speech.metrics.detection_error_tradeoff import DetectionCurve, detection_curve
from modeling_dino_speech.scoring import as_norm, cohort_statistics, cosine_scores

__all__ = ["P_TARGETS", "main", "trial_list_evaluator", "verification_metrics", "verify", "verify_lists"]

P_TARGETS = (0.01, 0.05)

PathLike = Union[str, os.PathLike]


def verification_metrics(curve: DetectionCurve) -> Dict[str, float]:
    """EER (%) with its threshold, and minDCF at each of ``P_TARGETS`` with its threshold."""
    eer = curve.equal_error_rate()
    metrics = {"eer": 100.0 * eer.value, "eer_threshold": eer.threshold}
    for p_target in P_TARGETS:
        cost = curve.minimum_detection_cost(p_target)
        metrics[f"min_dcf_{p_target:g}"] = cost.value
        metrics[f"min_dcf_{p_target:g}_threshold"] = cost.threshold
    return metrics


def _list_name(path: PathLike, taken: Mapping[str, Any]) -> str:
    name = Path(path).stem
    suffix, candidate = 2, name
    while candidate in taken:
        candidate, suffix = f"{name}_{suffix}", suffix + 1
    return candidate


def _read_lists(trial_paths: Sequence[PathLike], audio_root: Optional[PathLike]) -> Dict[str, tuple]:
    """``{name: (trial list path, labels (T,), enroll paths, test paths)}``; raises one FileNotFoundError
    naming every missing audio file of every list."""
    from modeling_dino_speech.data.trials import check_both_classes, read_trials

    lists: Dict[str, tuple] = {}
    missing: Dict[str, List[str]] = {}
    for trial_path in trial_paths:
        root = os.fspath(audio_root) if audio_root is not None else os.path.dirname(os.path.abspath(trial_path))
        trials = read_trials(trial_path, audio_root=root)
        check_both_classes(trials, os.fspath(trial_path))
        files = sorted({t.enroll for t in trials} | {t.test for t in trials})
        absent = [f for f in files if not os.path.isfile(f)]
        if absent:
            missing[os.fspath(trial_path)] = absent
        labels = np.fromiter((t.label for t in trials), dtype=np.int8, count=len(trials))
        lists[_list_name(trial_path, lists)] = (
            os.fspath(trial_path),
            labels,
            [t.enroll for t in trials],
            [t.test for t in trials],
        )
    if missing:
        count = sum(len(v) for v in missing.values())
        listing = "\n".join(
            f"{path}: {len(files)} missing (audio root {audio_root or os.path.dirname(path)}):\n  " + "\n  ".join(files)
            for path, files in missing.items()
        )
        raise FileNotFoundError(f"{count} audio file(s) referenced by the trial list(s) do not exist:\n{listing}")
    return lists


def _cohort_embeddings(
    cohort: Any, model, feature_extractor, exclude: set, cohort_size: int, seed: int, embed_kwargs: dict
) -> np.ndarray:
    """(K, D) cohort embeddings from an array, a `dino-speech embed` output file, a manifest or an audio folder;
    files that also appear in the trials are left out (a file must not be its own impostor)."""
    from modeling_dino_speech.inference import EmbeddingError, embed_files, load_audio_list, read_embeddings

    if isinstance(cohort, np.ndarray):
        return cohort
    cohort = os.fspath(cohort)
    rng = np.random.default_rng(seed)
    if cohort.endswith((".parquet", ".npy")):
        matrix, table = read_embeddings(cohort)
        if "path" in table.columns:
            matrix = matrix[~table["path"].isin(exclude).to_numpy()]
        if matrix.shape[0] == 0:
            raise ValueError(f"{cohort}: no cohort embeddings left outside the trial files")
        if matrix.shape[0] > cohort_size:
            matrix = matrix[np.sort(rng.permutation(matrix.shape[0])[:cohort_size])]
        return matrix
    files = load_audio_list(cohort)
    keep = [i for i, p in enumerate(files["path"]) if p not in exclude]
    if len(keep) > cohort_size:
        keep = sorted(rng.permutation(keep)[:cohort_size].tolist())
    if not keep:
        raise ValueError(
            f"{cohort}: every cohort utterance also occurs in the trials; the cohort must come "
            "from other (e.g. training) data"
        )
    paths = [files["path"][i] for i in keep]
    durations = [files["duration"][i] for i in keep]
    try:
        return embed_files(
            model, feature_extractor, paths, durations=durations, desc="embedding cohort", **embed_kwargs
        )
    except EmbeddingError as err:  # a cohort does without its unreadable files
        warnings.warn(f"cohort: {err}; left out of the cohort", stacklevel=2)
        matrix = err.result.embeddings
        return matrix[np.isfinite(matrix).all(axis=1)]


def verify_lists(
    model: Any,
    trials: Sequence[PathLike],
    audio_root: Optional[PathLike] = None,
    *,
    feature_extractor: Any = None,
    cohort: Any = None,
    cohort_size: int = 2000,
    top_k: int = 300,
    device: Any = None,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = True,
    out: Optional[PathLike] = None,
    seed: int = 0,
    return_curves: bool = False,
    trust_remote_code: bool = False,
    speaker_of: Optional[Callable[[str], str]] = None,
    interval_replicates: int = 1000,
) -> Dict[str, Any]:
    """Evaluate a model on several trial lists at once, embedding each distinct file once.

    Args:
        model: a checkpoint folder, ``"fbank-stats"``, ``"random-init:<folder>"``, or an in-memory model
            (then pass its ``feature_extractor``, or it is built from ``model.config``).
        trials: trial list files.
        audio_root: the folder the trial paths are relative to (default: each list's own folder).
        cohort: unlabelled AS-norm cohort: (K, D) array, ``.parquet``/``.npy`` from ``dino-speech embed``, manifest
            CSV or audio folder (at most ``cohort_size`` utterances, drawn with ``seed``).
        top_k: AS-norm's number of best cohort scores.
        device: for a model loaded here: ``"auto"`` (default) or a device; an in-memory model stays put
            unless a device is given.
        out: ``results.json`` to write, with ``<stem>_det.png`` and ``<stem>_scores_<list>.png`` beside it.
        return_curves: also return ``{"curves": {list name: DetectionCurve}}`` (to plot several systems).
        trust_remote_code: let a checkpoint folder of a model type unknown here run its own code.
        speaker_of: the speaker of a trial's audio file (given its path under the audio root). Given, each
            list's EER gets a 95% speaker-bootstrap interval (``eer_ci95``, ``metrics.bootstrap``): how another
            set of as many similar speakers would score, which a list of a few dozen speakers needs beside its
            point EER.
        interval_replicates: bootstrap draws of that interval.

    Returns:
        ``{"model": str, "speaker_verification": {list name: metrics}, "plots": {...}}`` where metrics has
        ``eer`` (%), ``min_dcf_0.01``, ``min_dcf_0.05`` (with ``*_threshold``), trial counts, and, with a
        cohort, the same numbers under ``as_norm``.
    """
    from modeling_dino_speech.inference import EmbeddingError, embed_files, load_model

    if isinstance(trials, (str, os.PathLike)):
        trials = [trials]
    lists = _read_lists(trials, audio_root)  # all files are checked before the model is even loaded
    if isinstance(model, (str, os.PathLike)):
        model_name = os.fspath(model)
        model, feature_extractor = load_model(
            model_name, device=device if device is not None else "auto", trust_remote_code=trust_remote_code
        )
        device = None  # already there
    else:
        model_name = type(model).__name__
        if feature_extractor is None:
            from modeling_dino_speech import DinoSpeechFeatureExtractor

            feature_extractor = DinoSpeechFeatureExtractor.from_model_config(model.config)

    files = sorted({f for _, _, enroll, test in lists.values() for f in (*enroll, *test)})
    index = {f: i for i, f in enumerate(files)}
    embed_kwargs = dict(batch_size=batch_size, device=device, num_workers=num_workers, progress=progress)
    started = time.perf_counter()
    skipped: Dict[str, str] = {}
    try:
        embeddings = embed_files(model, feature_extractor, files, **embed_kwargs)
    except EmbeddingError as err:  # keep what was embedded; the trials of the bad files are left out
        embeddings, skipped = err.result.embeddings, err.failures
        warnings.warn(f"{err}\ntheir trials are left out of the scores", stacklevel=2)
    embed_seconds = time.perf_counter() - started

    statistics = None
    if cohort is not None:
        cohort_matrix = _cohort_embeddings(
            cohort, model, feature_extractor, set(files), cohort_size, seed, embed_kwargs
        )
        statistics = cohort_statistics(embeddings, cohort_matrix, top_k=top_k)

    speakers = None if speaker_of is None else np.asarray([speaker_of(f) for f in files])
    results: Dict[str, Any] = {}
    curves: Dict[str, DetectionCurve] = {}
    scored: Dict[str, tuple] = {}
    for name, (path, labels, enroll, test) in lists.items():
        enroll_index = np.fromiter((index[f] for f in enroll), dtype=np.int64, count=len(enroll))
        test_index = np.fromiter((index[f] for f in test), dtype=np.int64, count=len(test))
        bad = [f for f in set(enroll) | set(test) if f in skipped]
        if bad:
            usable = np.isfinite(embeddings).all(axis=1)
            keep = usable[enroll_index] & usable[test_index]
            enroll_index, test_index, labels = enroll_index[keep], test_index[keep], labels[keep]
            if len(set(labels.tolist())) < 2:
                raise ValueError(f"{path}: too few trials left without the unreadable files to compute EER")
        scores = cosine_scores(embeddings, enroll_index, test_index)
        curve = detection_curve(scores, labels)
        entry = {
            **verification_metrics(curve),
            "num_trials": int(labels.shape[0]),
            "num_targets": curve.num_targets,
            "num_nontargets": curve.num_nontargets,
            "num_files": len(set(enroll) | set(test)) - len(bad),
            "trials": path,
        }
        if speakers is not None:
            enroll_speakers, test_speakers = speakers[enroll_index], speakers[test_index]
            entry["eer_ci95"] = list(
                eer_interval(scores, labels, enroll_speakers, test_speakers, replicates=interval_replicates, seed=seed)
            )
            entry["eer_ci_over"] = "speakers"
            entry["num_speakers"] = len(set(enroll_speakers) | set(test_speakers))
        if bad:
            entry["num_trials_skipped"] = len(enroll) - int(labels.shape[0])
            entry["skipped_files"] = {f: skipped[f] for f in sorted(bad)}
        curves[name] = curve
        scored[name] = (scores, labels, entry["eer_threshold"])
        if statistics is not None:
            normed = as_norm(scores, enroll_index, test_index, statistics)
            normed_curve = detection_curve(normed, labels)
            entry["as_norm"] = {
                **verification_metrics(normed_curve),
                "cohort_size": int(cohort_matrix.shape[0]),
                "top_k": int(min(top_k, cohort_matrix.shape[0])),
            }
            curves[f"{name} AS-norm"] = normed_curve
        results[name] = entry

    report: Dict[str, Any] = {
        "model": model_name,
        "speaker_verification": results,
        "embedding_seconds": round(embed_seconds, 2),
        "num_files": len(files),
    }
    if out is not None:
        report["plots"] = _write_outputs(Path(out), report, curves, scored)
    if return_curves:
        report["curves"] = curves
    return report


def _write_outputs(out: Path, report: dict, curves: Dict[str, DetectionCurve], scored: Dict[str, tuple]) -> dict:
    from modeling_dino_speech.evaluation.plots import plot_det, plot_score_histogram

    out.parent.mkdir(parents=True, exist_ok=True)
    plots = {"det": str(plot_det(curves, out.with_name(f"{out.stem}_det.png"), title=f"DET: {report['model']}"))}
    for name, (scores, labels, threshold) in scored.items():
        plots[f"scores_{name}"] = str(
            plot_score_histogram(
                scores,
                labels,
                out.with_name(f"{out.stem}_scores_{name}.png"),
                title=f"{name}: cosine scores",
                threshold=threshold,
            )
        )
    report = {**report, "plots": plots}
    out.write_text(json.dumps(report, indent=1, default=_json_default) + "\n", encoding="utf-8")
    return plots


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def verify(
    model: Any,
    trials: PathLike,
    audio_root: Optional[PathLike] = None,
    **kwargs: Any,
) -> Dict[str, Any]:
    """EER / minDCF of ``model`` on one trial list, as a flat dict (what training logs periodically).

    Same arguments as :func:`verify_lists`. Returns the list's metrics: ``eer`` (%), ``min_dcf_0.01``,
    ``min_dcf_0.05``, their thresholds, ``num_trials``/``num_targets``/``num_nontargets``/``num_files``,
    ``embedding_seconds`` and, with a cohort, ``as_norm``.
    """
    report = verify_lists(model, [trials], audio_root, **kwargs)
    (metrics,) = report["speaker_verification"].values()
    return {**metrics, "embedding_seconds": report["embedding_seconds"]}


def trial_list_evaluator(trials: PathLike, audio_root: Optional[PathLike] = None, **kwargs: Any):
    """The hook training calls to evaluate a model (``training.setup.Evaluator``): ``(model, feature_extractor) ->``
    the :func:`verify` metrics of ``trials``, computed on the model's device without a progress bar. The list is
    read and checked here (files exist, both classes present), before training starts."""

    _read_lists([trials], audio_root)  # a list EER cannot be computed on fails now, not after training

    def evaluate(model, feature_extractor) -> Dict[str, Any]:
        return verify(model, trials, audio_root, feature_extractor=feature_extractor, progress=False, **kwargs)

    return evaluate


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dino-speech verify", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="checkpoint folder, 'fbank-stats' or 'random-init:<folder>'")
    parser.add_argument("--trials", required=True, nargs="+", help="trial list(s), '<label> <enroll> <test>' per line")
    parser.add_argument("--audio-root", help="folder the trial paths are relative to (default: each list's folder)")
    parser.add_argument(
        "--cohort", help="AS-norm cohort: manifest CSV, audio folder, or dino-speech embed .parquet/.npy"
    )
    parser.add_argument("--cohort-size", type=int, default=2000)
    parser.add_argument("--top-k", type=int, default=300)
    parser.add_argument("--out", help="results.json (plots are written beside it)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trust-remote-code", action="store_true", help="allow a checkpoint's own code to run")
    args = parser.parse_args(argv)
    if args.out:
        from modeling_dino_speech.utils.paths import check_outputs_spare_inputs

        out, names = Path(args.out), {}
        for trial_path in args.trials:
            names[_list_name(trial_path, names)] = trial_path
        plots = [out.with_name(f"{out.stem}_det.png")] + [out.with_name(f"{out.stem}_scores_{n}.png") for n in names]
        check_outputs_spare_inputs([out, *plots], [*args.trials, args.cohort], "results")

    report = verify_lists(
        args.model,
        args.trials,
        args.audio_root,
        cohort=args.cohort,
        cohort_size=args.cohort_size,
        top_k=args.top_k,
        device=args.device,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        out=args.out,
        seed=args.seed,
        trust_remote_code=args.trust_remote_code,
    )
    print(format_table(report))
    if args.out:
        print(f"results -> {args.out}")
    return 0


def format_table(report: Mapping[str, Any]) -> str:
    """A plain-text table of a :func:`verify_lists` report."""
    lines = [
        f"model: {report['model']}",
        f"{'trial list':<28} {'trials':>9} {'EER %':>8} {'minDCF0.01':>11} {'minDCF0.05':>11}",
    ]
    for name, m in report["speaker_verification"].items():
        rows = [(name, m)] + ([(f"{name} (AS-norm)", m["as_norm"])] if "as_norm" in m else [])
        for label, metrics in rows:
            lines.append(
                f"{label:<28} {m['num_trials']:>9,} {metrics['eer']:>8.2f} "
                f"{metrics['min_dcf_0.01']:>11.4f} {metrics['min_dcf_0.05']:>11.4f}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
