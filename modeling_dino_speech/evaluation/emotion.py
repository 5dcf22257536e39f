"""Emotion recognition from frozen embeddings:
``dino-speech emotion --model DIR --corpus {iemocap,crema_d,msp_podcast,demo} --root DIR [--out results.json]``.

Every utterance is embedded once (the embedding model stays frozen); a scikit-learn classifier
(standardisation + logistic regression, or a small MLP) is trained and tested under the corpus's standard
protocol, and scored with micro-F1 (the paper's metric; equals accuracy), macro-F1 and unweighted accuracy,
all in percent, pooled over the test folds, plus the per-fold numbers and a confusion-matrix PNG.

==============  =====================================================================================
iemocap         4 classes (neutral, happy + excited, angry, sad), leave-one-session-out: 5 folds, each
                session's two speakers tested by a model trained on the other four sessions
crema_d         6 classes, 5 speaker-disjoint folds (``GroupKFold`` over the actors)
msp_podcast     its official split: train on ``Train``, test on ``Test1`` (4 classes by default)
demo            the demo corpus's prosody-style stand-in: ``prosody_train.csv`` / ``prosody_test.csv``
                (split by voice)
==============  =====================================================================================

The fold builders are plain functions of the group labels (:func:`leave_one_group_out`,
:func:`group_k_fold`, :func:`predefined_split`) and :func:`check_disjoint` refuses any fold whose train
and test share a speaker or session.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from modeling_dino_speech.metrics.classification import classification_scores

__all__ = [
    "CORPORA",
    "EmotionTask",
    "Fold",
    "check_disjoint",
    "cross_validate",
    "evaluate_emotion",
    "group_k_fold",
    "leave_one_group_out",
    "load_task",
    "main",
    "make_classifier",
    "predefined_split",
]

CORPORA = ("iemocap", "crema_d", "msp_podcast", "demo")

Fold = Tuple[np.ndarray, np.ndarray]  # (train indices, test indices)


def leave_one_group_out(groups: Sequence) -> List[Fold]:
    """One fold per distinct group (e.g. IEMOCAP session), testing on that group, in sorted group order."""
    groups = np.asarray(groups)
    return [(np.flatnonzero(groups != g), np.flatnonzero(groups == g)) for g in np.unique(groups)]


def group_k_fold(groups: Sequence, n_splits: int = 5) -> List[Fold]:
    """``n_splits`` folds with no group (e.g. CREMA-D actor) on both sides, balanced in size."""
    from sklearn.model_selection import GroupKFold

    groups = np.asarray(groups)
    n_groups = np.unique(groups).shape[0]
    if n_groups < n_splits:
        raise ValueError(f"{n_splits} speaker-disjoint folds need at least {n_splits} speakers, got {n_groups}")
    return [(train, test) for train, test in GroupKFold(n_splits=n_splits).split(groups, groups=groups)]


def predefined_split(splits: Sequence[str], train: Sequence[str], test: Sequence[str]) -> List[Fold]:
    """A single fold from a split column (e.g. MSP-Podcast ``Split_Set``); other rows are unused."""
    splits = np.asarray(splits)
    train_index, test_index = np.flatnonzero(np.isin(splits, train)), np.flatnonzero(np.isin(splits, test))
    if train_index.size == 0 or test_index.size == 0:
        raise ValueError(
            f"split {list(train)} / {list(test)} leaves {train_index.size} training and "
            f"{test_index.size} test utterances (found splits {sorted(set(splits.tolist()))})"
        )
    return [(train_index, test_index)]


def check_disjoint(folds: Sequence[Fold], groups: Sequence, what: str = "speaker") -> None:
    """Raise ValueError if any fold has a ``what`` (group value) in both its train and test parts."""
    groups = np.asarray(groups)
    for k, (train, test) in enumerate(folds):
        shared = np.intersect1d(groups[train], groups[test])
        if shared.size:
            raise ValueError(f"fold {k}: {what}(s) {shared[:10].tolist()} appear in both train and test")
        if np.intersect1d(train, test).size:
            raise ValueError(f"fold {k}: an utterance is in both train and test")


@dataclass
class EmotionTask:
    """An emotion corpus under its protocol.

    Attributes:
        paths: (N,) audio files; durations: (N,) seconds; labels: (N,) class names.
        speakers: (N,) speaker ids (the leakage check); folds: (train, test) index pairs.
        protocol: a one-line description for reports.
    """

    corpus: str
    paths: List[str]
    durations: np.ndarray
    labels: np.ndarray
    speakers: np.ndarray
    folds: List[Fold]
    protocol: str


def load_task(corpus: str, root: str | os.PathLike, n_splits: int = 5) -> EmotionTask:
    """Load ``corpus`` from ``root`` (its official layout; the demo corpus folder for ``demo``) with its folds."""
    from modeling_dino_speech.data import corpora

    root = os.fspath(root)
    if corpus == "iemocap":
        data = corpora.load_iemocap(root, four_classes=True)
        sessions = np.asarray(data["session"])
        folds = leave_one_group_out(sessions)
        check_disjoint(folds, sessions, "session")
        protocol = f"4 classes, leave-one-session-out ({len(folds)} folds)"
    elif corpus == "crema_d":
        data = corpora.load_cremad(root)
        folds = group_k_fold(np.asarray(data["speaker"]), n_splits)
        protocol = f"6 classes, {len(folds)} speaker-disjoint folds"
    elif corpus == "msp_podcast":
        data = corpora.load_msp_podcast(root, split=["train", "test1"])
        folds = predefined_split(data["split"], train=["Train"], test=["Test1"])
        protocol = f"{len(set(data['label']))} classes, official split (train: Train, test: Test1)"
    elif corpus == "demo":
        train, test = (corpora.load_manifest(os.path.join(root, f"prosody_{s}.csv")) for s in ("train", "test"))
        paths = list(train["path"]) + list(test["path"])
        folds = predefined_split(["train"] * len(train) + ["test"] * len(test), train=["train"], test=["test"])
        data = {
            "path": paths,
            "duration": list(train["duration"]) + list(test["duration"]),
            "label": list(train["label"]) + list(test["label"]),
            "speaker": list(train["speaker"]) + list(test["speaker"]),
        }
        protocol = "prosody-style stand-in, split by voice (prosody_train.csv / prosody_test.csv)"
    else:
        raise ValueError(f"unknown corpus {corpus!r}; choose from {CORPORA}")
    speakers = np.asarray([str(s) for s in data["speaker"]])
    check_disjoint(folds, speakers, "speaker")
    return EmotionTask(
        corpus,
        list(data["path"]),
        np.asarray(data["duration"], dtype=np.float64),
        np.asarray([str(v) for v in data["label"]]),
        speakers,
        folds,
        protocol,
    )


def make_classifier(kind: str = "logreg", seed: int = 0, num_samples: Optional[int] = None):
    """Standardise, then logistic regression (``"logreg"``) or a one-hidden-layer MLP (``"mlp"``).

    The MLP stops early on a 10% validation split when there are at least 500 training samples (below
    that the split is too small to tell anything and would stop it after a few epochs).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "logreg":
        head = LogisticRegression(max_iter=2000, C=1.0)
    elif kind == "mlp":
        early = num_samples is not None and num_samples >= 500
        head = MLPClassifier(
            hidden_layer_sizes=(256,), alpha=1e-3, early_stopping=early, max_iter=500, random_state=seed
        )
    else:
        raise ValueError(f"classifier must be 'logreg' or 'mlp', got {kind!r}")
    return make_pipeline(StandardScaler(), head)


def cross_validate(
    embeddings: np.ndarray, labels: np.ndarray, folds: Sequence[Fold], classifier: str = "logreg", seed: int = 0
) -> Tuple[np.ndarray, List[Dict[str, float]]]:
    """Train on each fold's train part and predict its test part.

    Returns:
        predictions: (N,) predicted class per utterance (``""`` for utterances in no test part).
        per_fold: the scores of each fold (fractions).
    """
    predictions = np.full(labels.shape[0], "", dtype=object)
    per_fold = []
    for train, test in folds:
        model = make_classifier(classifier, seed, num_samples=len(train)).fit(embeddings[train], labels[train])
        predicted = model.predict(embeddings[test])
        predictions[test] = predicted
        scores = classification_scores(labels[test], predicted)
        per_fold.append({k: scores[k] for k in ("micro_f1", "macro_f1", "unweighted_accuracy")})
    return predictions, per_fold


def evaluate_emotion(
    model: Any,
    corpus: str,
    root: str | os.PathLike,
    *,
    feature_extractor: Any = None,
    classifier: str = "logreg",
    n_splits: int = 5,
    device: Any = "auto",
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = True,
    out: Optional[str | os.PathLike] = None,
    seed: int = 0,
) -> Dict[str, Any]:
    """Embed ``corpus`` with ``model`` (folder, baseline name, or in-memory model with its feature
    extractor) and run its protocol.

    Returns:
        ``{"model": ..., "emotion_recognition": {corpus: {"micro_f1", "macro_f1", "unweighted_accuracy"
        (%, pooled over test folds), "folds": [...], "classes", "confusion", "protocol", ...}}}``; with
        ``out``, also writes it as JSON and ``<stem>_confusion_<corpus>.png`` beside it.
    """
    from modeling_dino_speech.inference import embed_files, load_model

    task = load_task(corpus, root, n_splits)
    if isinstance(model, (str, os.PathLike)):
        model_name = os.fspath(model)
        model, feature_extractor = load_model(model_name, device=device)
        device = None
    else:
        model_name = type(model).__name__
    started = time.perf_counter()
    embeddings = embed_files(
        model,
        feature_extractor,
        task.paths,
        durations=task.durations,
        batch_size=batch_size,
        device=device,
        num_workers=num_workers,
        progress=progress,
        desc=f"embedding {corpus}",
    )
    embed_seconds = time.perf_counter() - started
    predictions, per_fold = cross_validate(embeddings, task.labels, task.folds, classifier, seed)
    tested = np.concatenate([test for _, test in task.folds])
    scores = classification_scores(task.labels[tested], predictions[tested].astype(str))
    percent = lambda v: 100.0 * v
    result = {
        "micro_f1": percent(scores["micro_f1"]),
        "macro_f1": percent(scores["macro_f1"]),
        "unweighted_accuracy": percent(scores["unweighted_accuracy"]),
        "folds": [{k: percent(v) for k, v in fold.items()} for fold in per_fold],
        "classes": scores["labels"].tolist(),
        "confusion": scores["confusion"].tolist(),
        "protocol": task.protocol,
        "classifier": classifier,
        "num_utterances": int(tested.shape[0]),
        "num_speakers": int(np.unique(task.speakers).shape[0]),
        "root": os.fspath(root),
    }
    report: Dict[str, Any] = {
        "model": model_name,
        "emotion_recognition": {corpus: result},
        "embedding_seconds": round(embed_seconds, 2),
    }
    if out is not None:
        from modeling_dino_speech.evaluation.plots import plot_confusion_matrix

        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        image = plot_confusion_matrix(
            scores["confusion"],
            scores["labels"],
            out.with_name(f"{out.stem}_confusion_{corpus}.png"),
            title=f"{corpus}: micro-F1 {result['micro_f1']:.1f}%, UA {result['unweighted_accuracy']:.1f}%",
        )
        report["plots"] = {f"confusion_{corpus}": str(image)}
        out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dino-speech emotion", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="checkpoint folder, 'fbank-stats' or 'random-init:<folder>'")
    parser.add_argument("--corpus", required=True, choices=CORPORA)
    parser.add_argument("--root", required=True, help="the corpus folder (official layout; the demo corpus folder)")
    parser.add_argument("--classifier", default="logreg", choices=("logreg", "mlp"))
    parser.add_argument("--folds", type=int, default=5, help="speaker-disjoint folds for crema_d")
    parser.add_argument("--out", help="results.json (the confusion matrix PNG is written beside it)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    report = evaluate_emotion(
        args.model,
        args.corpus,
        args.root,
        classifier=args.classifier,
        n_splits=args.folds,
        device=args.device,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        out=args.out,
        seed=args.seed,
    )
    r = report["emotion_recognition"][args.corpus]
    print(
        f"model: {report['model']}\n{args.corpus} ({r['protocol']}; {r['num_utterances']} utterances, "
        f"{r['classifier']}): micro-F1 {r['micro_f1']:.2f}%, macro-F1 {r['macro_f1']:.2f}%, "
        f"UA {r['unweighted_accuracy']:.2f}%"
    )
    if args.out:
        print(f"results -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
