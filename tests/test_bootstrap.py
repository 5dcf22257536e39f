"""Bootstrap intervals of the EER: over trials and over speakers."""

import numpy as np
import pytest

from modeling_dino_speech.metrics.bootstrap import eer_interval, weighted_eer
from modeling_dino_speech.metrics.detection_error_tradeoff import detection_curve


def _trials(num_speakers=20, per_speaker=6, spread=1.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_speakers, 16)) * spread
    speakers = np.repeat(np.arange(num_speakers), per_speaker)
    x = centres[speakers] + rng.standard_normal((len(speakers), 16))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    i, j = np.triu_indices(len(speakers), 1)
    return (x[i] * x[j]).sum(axis=1), (speakers[i] == speakers[j]).astype(int), speakers[i], speakers[j]


def test_weighted_eer_with_unit_weights_is_the_eer():
    scores, labels, _, _ = _trials()
    order = np.argsort(scores, kind="stable")
    exact = detection_curve(scores, labels).equal_error_rate().value
    assert weighted_eer(labels[order], np.ones(len(scores))) == pytest.approx(exact, abs=1e-3)


def test_weights_count_trials_as_often_as_repeated():
    scores, labels, _, _ = _trials(seed=1)
    rng = np.random.default_rng(2)
    weights = rng.integers(0, 3, len(scores))
    order = np.argsort(scores, kind="stable")
    repeated = detection_curve(np.repeat(scores, weights), np.repeat(labels, weights)).equal_error_rate().value
    assert weighted_eer(labels[order], weights[order].astype(float)) == pytest.approx(repeated, abs=2e-3)


def test_intervals_hold_the_eer_and_speakers_make_them_wider():
    scores, labels, enroll, test = _trials(num_speakers=25, seed=3)
    eer = 100 * detection_curve(scores, labels).equal_error_rate().value
    trial_low, trial_high = eer_interval(scores, labels, replicates=300)
    speaker_low, speaker_high = eer_interval(scores, labels, enroll, test, replicates=300)
    assert trial_low < eer < trial_high and speaker_low < eer < speaker_high
    assert speaker_high - speaker_low > trial_high - trial_low
    # reproducible for a seed
    assert eer_interval(scores, labels, enroll, test, replicates=50, seed=5) == eer_interval(
        scores, labels, enroll, test, replicates=50, seed=5
    )


def test_one_class_lists_are_refused():
    with pytest.raises(ValueError, match="both target and non-target"):
        eer_interval(np.array([0.1, 0.2]), np.array([1, 1]), replicates=10)
