"""EER / minDCF / classification scores: exactness against independent computations from scikit-learn,
tie handling, input validation, and the offline `evaluate` modules."""

import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import brentq
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_curve
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from modeling_dino_speech.metrics.classification import (
    classification_scores,
    confusion_matrix,
    macro_f1,
    micro_f1,
    unweighted_accuracy,
)
from modeling_dino_speech.metrics.detection_error_tradeoff import (
    detection_curve,
    equal_error_rate,
    minimum_detection_cost,
)

METRICS = Path(__file__).resolve().parents[1] / "eval" / "metrics"


def sklearn_eer(labels, scores) -> float:
    """The classic recipe: root of 1 - x - TPR(x) on the linearly interpolated ROC curve."""
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    return brentq(lambda x: 1.0 - x - np.interp(x, fpr, tpr), 0.0, 1.0, xtol=1e-15)


def sklearn_min_dcf(labels, scores, p_target, c_miss=1.0, c_fa=1.0) -> float:
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    cost = c_miss * p_target * (1.0 - tpr) + c_fa * (1.0 - p_target) * fpr
    return cost.min() / min(c_miss * p_target, c_fa * (1.0 - p_target))


def trial_lists(seed=0, count=60):
    """Random, tie-heavy, integer, float32 and 1-ulp-apart score lists with both classes."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        n = int(rng.integers(2, 400))
        labels = rng.random(n) < rng.uniform(0.05, 0.95)
        labels[0], labels[-1] = True, False
        kind = i % 5
        if kind == 0:
            scores = rng.standard_normal(n) + 1.5 * labels
        elif kind == 1:  # heavy ties across classes
            scores = np.round(rng.standard_normal(n) + labels, 1)
        elif kind == 2:  # very few distinct values
            scores = rng.integers(-2, 3, n).astype(np.int64)
        elif kind == 3:
            scores = (rng.standard_normal(n) + labels).astype(np.float32)
        else:  # neighbours one ulp apart (the packed-key fallback), and signed zeros
            base = np.round(rng.standard_normal(n), 1)
            scores = np.where(rng.random(n) < 0.5, base, np.nextafter(base, np.inf))
            scores[rng.random(n) < 0.2] = -0.0
        yield kind, labels, scores


@pytest.mark.parametrize("kind", range(5))
def test_curve_matches_sklearn_roc_points(kind):
    for k, labels, scores in trial_lists():
        if k != kind:
            continue
        curve = detection_curve(scores, labels)
        fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
        # sklearn lists thresholds from +inf down over the distinct scores: the same points, reversed.
        np.testing.assert_allclose(curve.p_fa[::-1], fpr, atol=1e-15)
        np.testing.assert_allclose(curve.p_miss[::-1], 1.0 - tpr, atol=1e-15)
        np.testing.assert_array_equal(curve.thresholds[::-1][1:], thresholds[1:].astype(np.float64))
        assert curve.num_targets == labels.sum() and curve.num_nontargets == (~labels).sum()


def test_eer_and_min_dcf_agree_with_sklearn():
    for _, labels, scores in trial_lists(seed=1):
        curve = detection_curve(scores, labels)
        assert curve.equal_error_rate().value == pytest.approx(sklearn_eer(labels, scores), abs=1e-12)
        for p_target in (0.01, 0.05, 0.5):
            expected = sklearn_min_dcf(labels, scores, p_target)
            assert curve.minimum_detection_cost(p_target).value == pytest.approx(expected, abs=1e-12)
        expected = sklearn_min_dcf(labels, scores, 0.05, c_miss=10.0, c_fa=1.0)
        assert curve.minimum_detection_cost(0.05, c_miss=10.0).value == pytest.approx(expected, abs=1e-12)


def test_hand_computed_values():
    # targets 0.9, 0.3; non-targets 0.8, 0.1: at threshold 0.8 one target is missed and one non-target
    # accepted out of two each -> EER 0.5 exactly.
    scores, labels = [0.9, 0.8, 0.3, 0.1], [1, 0, 1, 0]
    assert equal_error_rate(scores, labels) == (0.5, 0.8)
    # Accepting only 0.9 misses half the targets with no false alarm: 0.05 * 0.5 / 0.05.
    assert minimum_detection_cost(scores, labels, p_target=0.05) == (0.5, 0.9)
    # Perfect separation.
    assert equal_error_rate([3.0, 2.0, 1.0, 0.0], [1, 1, 0, 0]).value == 0.0
    assert minimum_detection_cost([3.0, 2.0, 1.0, 0.0], [1, 1, 0, 0]).value == 0.0
    # Perfectly inverted scores: every threshold errs.
    assert equal_error_rate([0.0, 1.0], [1, 0]).value == 1.0


def test_ties_are_one_threshold():
    """All scores tied: no threshold separates anything; random tie-breaking gives EER 0.5."""
    labels = np.array([1, 0, 1, 1, 0, 0, 0, 1])
    curve = detection_curve(np.full(8, 0.7), labels)
    assert curve.thresholds.tolist() == [0.7, np.inf]
    assert curve.equal_error_rate().value == 0.5
    assert curve.minimum_detection_cost(0.01).value == 1.0
    # A sort that put all targets of a tie first would report EER 0 here; the result must not depend
    # on the order of tied trials.
    rng = np.random.default_rng(0)
    scores = np.round(rng.standard_normal(500), 0)
    labels = rng.random(500) < 0.5
    reference = detection_curve(scores, labels).equal_error_rate()
    for _ in range(5):
        order = rng.permutation(500)
        assert detection_curve(scores[order], labels[order]).equal_error_rate() == reference


def test_monotone_transform_invariance():
    rng = np.random.default_rng(3)
    labels = rng.random(1000) < 0.3
    scores = rng.standard_normal(1000) + labels
    eer = equal_error_rate(scores, labels)
    transformed = equal_error_rate(np.exp(2 * scores), labels)
    assert transformed.value == pytest.approx(eer.value, abs=1e-15)
    assert transformed.threshold == pytest.approx(np.exp(2 * eer.threshold))


def test_large_float64_list_takes_exact_path():
    """Many float64 scores (the lowest key bit is used) still match sklearn."""
    rng = np.random.default_rng(4)
    labels = rng.random(200_000) < 0.1
    scores = rng.standard_normal(200_000) + 2.0 * labels
    scores[:1000] = np.nextafter(scores[1000:2000], np.inf)  # forces groups one ulp apart
    curve = detection_curve(scores, labels)
    assert curve.equal_error_rate().value == pytest.approx(sklearn_eer(labels, scores), abs=1e-12)
    assert curve.minimum_detection_cost(0.01).value == pytest.approx(sklearn_min_dcf(labels, scores, 0.01), abs=1e-12)
    assert curve.thresholds.shape[0] == np.unique(scores).shape[0] + 1


def test_inputs_are_not_modified():
    scores = np.array([0.5, -0.0, 0.2, 0.9])
    labels = np.array([True, False, False, True])
    kept = scores.copy(), labels.copy()
    detection_curve(scores, labels)
    np.testing.assert_array_equal(scores, kept[0])
    np.testing.assert_array_equal(labels, kept[1])


@pytest.mark.parametrize(
    "scores, labels, message",
    [
        ([0.1, np.nan, 0.3], [1, 0, 1], "NaN, first at trial index 1"),
        ([0.1, 0.2], [1, 1], "both target and non-target"),
        ([0.1, 0.2, 0.3], [1, 0, 2], "trial 2 has label 2"),
        ([0.1, 0.2, 0.3], [1.0, 0.5, 0.0], "trial 1 has label 0.5"),
        ([0.1, 0.2], [1, 0, 1], "equal length"),
        (["a", "b"], [1, 0], "real numbers"),
    ],
)
def test_bad_input_is_a_clear_error(scores, labels, message):
    with pytest.raises(ValueError, match=message):
        detection_curve(scores, labels)


def test_min_dcf_rejects_bad_costs():
    curve = detection_curve([0.1, 0.2], [0, 1])
    with pytest.raises(ValueError, match="p_target"):
        curve.minimum_detection_cost(1.5)
    with pytest.raises(ValueError, match="positive"):
        curve.minimum_detection_cost(0.01, c_miss=0.0)


def test_classification_scores_agree_with_sklearn():
    rng = np.random.default_rng(5)
    for n_classes in (2, 4, 6):
        references = rng.integers(0, n_classes, 300)
        predictions = np.where(rng.random(300) < 0.6, references, rng.integers(0, n_classes + 1, 300))
        scores = classification_scores(references, predictions)
        assert scores["micro_f1"] == pytest.approx(f1_score(references, predictions, average="micro"))
        assert scores["macro_f1"] == pytest.approx(f1_score(references, predictions, average="macro"))
        with warnings.catch_warnings():  # sklearn warns about a predicted class absent from the references
            warnings.simplefilter("ignore")
            expected_ua = balanced_accuracy_score(references, predictions)
        assert scores["unweighted_accuracy"] == pytest.approx(expected_ua)
        np.testing.assert_array_equal(scores["confusion"], sk_confusion_matrix(references, predictions))
        assert micro_f1(references, predictions) == scores["micro_f1"]
        assert macro_f1(references, predictions) == scores["macro_f1"]
        assert unweighted_accuracy(references, predictions) == scores["unweighted_accuracy"]


def test_string_classes_and_explicit_label_order():
    references = ["ang", "hap", "neu", "sad", "neu", "ang"]
    predictions = ["ang", "neu", "neu", "sad", "hap", "sad"]
    matrix, labels = confusion_matrix(references, predictions, labels=["neu", "hap", "ang", "sad"])
    assert labels.tolist() == ["neu", "hap", "ang", "sad"]
    np.testing.assert_array_equal(
        matrix, sk_confusion_matrix(references, predictions, labels=["neu", "hap", "ang", "sad"])
    )
    # A listed class that never occurs scores F1 = 0, as in sklearn.
    expected = f1_score(
        references, predictions, labels=["neu", "hap", "ang", "sad", "fea"], average="macro", zero_division=0
    )
    assert macro_f1(references, predictions, labels=["neu", "hap", "ang", "sad", "fea"]) == pytest.approx(expected)
    with pytest.raises(ValueError, match="not in labels"):
        confusion_matrix(references, predictions, labels=["neu", "hap"])


def test_evaluate_modules_load_offline_and_agree():
    evaluate = pytest.importorskip("evaluate")
    rng = np.random.default_rng(6)
    labels = (rng.random(500) < 0.4).astype(int)
    scores = np.round(rng.standard_normal(500) + labels, 2)
    curve = detection_curve(scores, labels)

    eer = evaluate.load(str(METRICS / "eer"))
    assert eer.compute(predictions=scores, references=labels) == {
        "eer": curve.equal_error_rate().value,
        "threshold": curve.equal_error_rate().threshold,
    }
    min_dcf = evaluate.load(str(METRICS / "min_dcf"))
    result = min_dcf.compute(predictions=scores, references=labels, p_target=[0.01, 0.05])
    assert result["min_dcf@0.01"] == curve.minimum_detection_cost(0.01).value
    assert result["min_dcf@0.05"] == curve.minimum_detection_cost(0.05).value
    # Batches accumulate like any evaluate metric.
    for start in range(0, 500, 100):
        min_dcf.add_batch(predictions=scores[start : start + 100], references=labels[start : start + 100])
    assert min_dcf.compute(p_target=0.05)["min_dcf"] == curve.minimum_detection_cost(0.05).value

    references = rng.integers(0, 4, 100)
    predictions = np.where(rng.random(100) < 0.5, references, rng.integers(0, 4, 100))
    expected = classification_scores(references, predictions)
    for name in ("micro_f1", "macro_f1", "unweighted_accuracy"):
        module = evaluate.load(str(METRICS / name))
        assert module.compute(predictions=predictions, references=references) == {name: expected[name]}
    strings = evaluate.load(str(METRICS / "macro_f1"), "string")
    words = np.array(["neu", "hap", "ang", "sad"])
    assert strings.compute(predictions=words[predictions], references=words[references]) == {
        "macro_f1": expected["macro_f1"]
    }
