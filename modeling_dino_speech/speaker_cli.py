"""The verification and identification commands: files in, scores and speakers out.

    dino-speech similarity MODEL a.wav b.wav [--threshold T]      score and decision for two files
    dino-speech score --model MODEL --pairs LIST --out scores.txt  one score per pair (metrics when labelled)
    dino-speech enroll --model MODEL --gallery DIR_OR_CSV --out gallery.npz
    dino-speech identify --gallery gallery.npz QUERY [QUERY ...] [--top-k 5]

Scores are cosine similarities of the model's embeddings (:class:`modeling_dino_speech.DinoSpeechVerifier`);
decisions use the threshold the checkpoint was calibrated with at export unless ``--threshold`` is given.
Audio that carries no speaker (silence, DC, too little speech) gets no score (``nan``) and a warning.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from typing import Any, List, Optional, Sequence

import numpy as np

__all__ = ["enroll_main", "identify_main", "score_main", "similarity_main"]


def _common(parser: argparse.ArgumentParser) -> None:
    from .inference import add_window_arguments

    parser.add_argument("--device", default="auto")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow a checkpoint's own code to run")
    parser.add_argument("--min-speech", type=float, default=0.5, help="seconds of speech an input needs at least")
    add_window_arguments(parser)


def _verifier(model: str, args: argparse.Namespace, **kwargs: Any):
    from transformers.utils import logging as transformers_logging

    from .inference import window_options
    from .verifier import DinoSpeechVerifier

    transformers_logging.disable_progress_bar()  # the weights' loading bar says nothing on a command line

    return DinoSpeechVerifier.from_pretrained(
        model,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        min_speech_seconds=args.min_speech,
        **window_options(args),
        **kwargs,
    )


def _warn_to_stderr(caught: List[warnings.WarningMessage]) -> None:
    for warning in caught:
        print(f"dino-speech: warning: {warning.message}", file=sys.stderr)


def _decision_text(verifier, score: float, threshold: Optional[float]) -> str:
    if not np.isfinite(score):
        return "no decision (degenerate input, see the warning)"
    if threshold is None:
        return "no decision (the checkpoint records no calibrated threshold; pass --threshold)"
    same = score >= threshold
    source = "given" if verifier.threshold_source == "given" else verifier.threshold_source
    return f"{'same speaker' if same else 'different speakers'} (threshold {threshold:.4f}, {source})"


def similarity_main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dino-speech similarity",
        description="Cosine similarity of two recordings' speaker embeddings, and the same-speaker decision at the "
        "checkpoint's calibrated threshold (or --threshold). Exit status 1 when no score can be given.",
    )
    parser.add_argument("model", help="checkpoint folder or Hub id")
    parser.add_argument("a", help="first audio file")
    parser.add_argument("b", help="second audio file")
    parser.add_argument("--threshold", type=float, help="decide at this score instead of the calibrated threshold")
    parser.add_argument("--operating-point", choices=["eer", "min_dcf_0.01", "min_dcf_0.05"], help="calibrated point")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    _common(parser)
    args = parser.parse_args(argv)
    for path in (args.a, args.b):
        if not os.path.isfile(os.path.expanduser(path)):
            raise FileNotFoundError(f"{path}: audio file does not exist")
    verifier = _verifier(args.model, args, threshold=args.threshold, operating_point=args.operating_point)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score = verifier.similarity(args.a, args.b)
    _warn_to_stderr([w for w in caught if "no decision threshold" not in str(w.message)])
    decision = verifier.decide(score)
    if args.json:
        print(
            json.dumps(
                {
                    "score": None if not np.isfinite(score) else round(score, 6),
                    "same_speaker": decision,
                    "threshold": verifier.threshold,
                    "threshold_source": verifier.threshold_source,
                }
            )
        )
    else:
        print(f"score {score:.4f}  {_decision_text(verifier, score, verifier.threshold)}")
    return 0 if np.isfinite(score) else 1


def _read_pairs(path: str, audio_root: Optional[str]):
    from .data.trials import read_trials

    root = audio_root if audio_root is not None else os.path.dirname(os.path.abspath(path))
    as_written = read_trials(path, allow_unlabelled=True)
    joined = [(os.path.join(root, t.enroll), os.path.join(root, t.test)) for t in as_written]
    return as_written, joined


def score_main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dino-speech score",
        description="Score a list of pairs: one '<enroll> <test> <score>' line per pair, in the list's order "
        "('nan' where an input carries no speaker or cannot be read). Pairs may carry labels ('<label> <enroll> "
        "<test>' or '<enroll> <test> target|nontarget'): then EER, minDCF and their thresholds are printed too.",
    )
    parser.add_argument("--model", required=True, help="checkpoint folder or Hub id")
    parser.add_argument("--pairs", required=True, help="'<enroll> <test>' per line, with or without labels")
    parser.add_argument("--out", required=True, help="scores file to write")
    parser.add_argument("--audio-root", help="folder the pairs' paths are relative to (default: the list's folder)")
    parser.add_argument("--metrics", help="also write the metrics (labelled pairs) to this JSON file")
    parser.add_argument("--batch-size", type=int, default=16)
    _common(parser)
    args = parser.parse_args(argv)
    from .evaluation.verification import verification_metrics
    from .metrics.detection_error_tradeoff import detection_curve
    from .utils.paths import check_outputs_spare_inputs

    trials, joined = _read_pairs(args.pairs, args.audio_root)
    files = sorted({f for pair in joined for f in pair})
    check_outputs_spare_inputs([args.out, args.metrics], [args.pairs, *files], "scores")
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        shown = "\n  ".join(missing[:50]) + (f"\n  ... and {len(missing) - 50} more" if len(missing) > 50 else "")
        raise FileNotFoundError(f"{args.pairs}: {len(missing)} audio file(s) of the pairs do not exist:\n  {shown}")
    verifier = _verifier(args.model, args, batch_size=args.batch_size)
    embeddings, failures, degenerate = verifier.embed_report(files, progress=True)
    unusable = {**failures, **degenerate}
    index = {f: i for i, f in enumerate(files)}
    enroll = np.array([index[a] for a, _ in joined])
    test = np.array([index[b] for _, b in joined])
    scores = verifier.cosine(embeddings[enroll], embeddings[test])
    with open(args.out, "w", encoding="utf-8") as handle:
        for trial, score in zip(trials, scores):
            handle.write(f"{trial.enroll} {trial.test} {'nan' if not np.isfinite(score) else f'{score:.6f}'}\n")
    print(f"{len(trials)} scores -> {args.out}")
    if unusable:
        listing = "\n  ".join(list(unusable.values())[:50])
        print(f"dino-speech: warning: {len(unusable)} file(s) give no score ('nan'):\n  {listing}", file=sys.stderr)
    labels = np.array([-1 if t.label is None else t.label for t in trials])
    if (labels >= 0).all():
        finite = np.isfinite(scores)
        if len(set(labels[finite].tolist())) < 2:
            print("dino-speech: warning: the scored pairs hold only one class: no EER / minDCF", file=sys.stderr)
        else:
            metrics = {
                **verification_metrics(detection_curve(scores[finite], labels[finite])),
                "num_trials": int(finite.sum()),
                "num_targets": int(labels[finite].sum()),
                "num_nontargets": int((labels[finite] == 0).sum()),
                "num_unscored": int((~finite).sum()),
                "trials": args.pairs,
            }
            print(
                f"EER {metrics['eer']:.2f}% (threshold {metrics['eer_threshold']:.4f}), minDCF(0.01) "
                f"{metrics['min_dcf_0.01']:.4f} (threshold {metrics['min_dcf_0.01_threshold']:.4f}), minDCF(0.05) "
                f"{metrics['min_dcf_0.05']:.4f} (threshold {metrics['min_dcf_0.05_threshold']:.4f}) on "
                f"{metrics['num_trials']} pairs"
            )
            if args.metrics:
                with open(args.metrics, "w", encoding="utf-8") as handle:
                    json.dump(metrics, handle, indent=1)
    return 1 if failures else 0


def enroll_main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dino-speech enroll",
        description="Enroll speakers from labelled audio: a folder with one sub-folder per speaker, or a manifest "
        "CSV with 'path' and 'speaker' (or 'label') columns. Writes a gallery (one centroid per speaker).",
    )
    parser.add_argument("--model", required=True, help="checkpoint folder or Hub id")
    parser.add_argument("--gallery", required=True, help="folder of <speaker>/<file> or a manifest CSV")
    parser.add_argument("--out", required=True, help="gallery file to write (.npz)")
    _common(parser)
    args = parser.parse_args(argv)
    from .inference import load_audio_list
    from .utils.paths import check_outputs_spare_inputs

    if not args.out.endswith(".npz"):
        parser.error(f"--out must end in .npz, got {args.out}")
    check_outputs_spare_inputs([args.out], [args.gallery], "gallery")
    files = load_audio_list(args.gallery, label_from_parent=True)
    column = next((c for c in ("speaker", "label") if c in files.column_names), None)
    if column is None:
        raise ValueError(f"{args.gallery}: no 'speaker' or 'label' column to enroll by")
    check_outputs_spare_inputs([args.out], files["path"], "gallery")
    verifier = _verifier(args.model, args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gallery = verifier.enroll(list(zip(files[column], files["path"])))
    _warn_to_stderr(caught)
    gallery.model = args.model
    gallery.save(args.out)
    print(f"{len(gallery.speakers)} speakers ({int(gallery.counts.sum())} files) -> {args.out}")
    return 0


def identify_main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dino-speech identify",
        description="The gallery speakers closest to each query recording, best first, with their cosine scores.",
    )
    parser.add_argument("--gallery", required=True, help="a gallery written by dino-speech enroll")
    parser.add_argument("queries", nargs="+", help="audio files to identify")
    parser.add_argument("--model", help="checkpoint (default: the one the gallery was enrolled with)")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object per query")
    _common(parser)
    args = parser.parse_args(argv)
    from .verifier import SpeakerGallery

    gallery = SpeakerGallery.load(args.gallery)
    for path in args.queries:
        if not os.path.isfile(os.path.expanduser(path)):
            raise FileNotFoundError(f"{path}: audio file does not exist")
    model = args.model or gallery.model
    if not model:
        raise ValueError(f"{args.gallery}: the gallery names no model: pass --model")
    verifier = _verifier(model, args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = verifier.identify(list(args.queries), gallery, top_k=args.top_k)
    _warn_to_stderr(caught)
    for path, best in zip(args.queries, results):
        if args.json:
            print(json.dumps({"query": path, "top": [{"speaker": s, "score": round(c, 6)} for s, c in best]}))
            continue
        print(f"{path}:" + ("  no speaker (degenerate input)" if not best else ""))
        for rank, (speaker, score) in enumerate(best, start=1):
            print(f"  {rank}. {speaker}  {score:.4f}")
    return 0 if all(results) else 1
