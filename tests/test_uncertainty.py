"""Ensemble statistics and calibration measures against closed forms and scipy (issue 18)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax
from scipy.stats import entropy as scipy_entropy
from scipy.stats import mannwhitneyu

from abmseg.infer.uncertainty import (
    EnsembleAccumulator,
    entropy,
    summarise_passes,
    volume_entropy,
)
from abmseg.metrics.calibration import (
    error_detection_auroc,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    scaled_probabilities,
)


def random_probabilities(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Class probabilities, classes first (Dirichlet, so every class is present)."""
    classes, rest = shape[0], shape[1:]
    draws = rng.dirichlet(np.full(classes, 0.7), size=rest)
    return np.moveaxis(draws, -1, 0)


def test_entropy_matches_scipy_and_its_extremes():
    rng = np.random.default_rng(0)
    p = random_probabilities(rng, (4, 50))
    np.testing.assert_allclose(entropy(p), scipy_entropy(p, axis=0), rtol=1e-5)
    assert entropy(np.full((4, 1), 0.25))[0] == pytest.approx(np.log(4))
    assert entropy(np.eye(4))[0] == 0.0  # one-hot: no uncertainty, and no log(0) warning


def test_one_pass_is_its_own_mean_with_no_disagreement():
    rng = np.random.default_rng(1)
    p = random_probabilities(rng, (4, 3, 5, 6)).astype(np.float32)
    summary = summarise_passes([p])
    np.testing.assert_array_equal(summary.mean, p)
    np.testing.assert_array_equal(summary.labels, np.argmax(p, axis=0))
    assert np.all(summary.mutual_information == 0)
    np.testing.assert_allclose(summary.predictive_entropy, scipy_entropy(p, axis=0), rtol=1e-5)


def test_two_confident_passes_that_disagree_carry_log_2_of_information():
    first = np.array([[1.0], [0.0]])
    second = np.array([[0.0], [1.0]])
    summary = summarise_passes([first, second])
    np.testing.assert_allclose(summary.mean[:, 0], [0.5, 0.5])
    assert summary.predictive_entropy[0] == pytest.approx(np.log(2))
    assert summary.mutual_information[0] == pytest.approx(np.log(2))


def test_the_accumulator_equals_the_definition():
    rng = np.random.default_rng(2)
    passes = [random_probabilities(rng, (4, 7, 9)) for _ in range(5)]
    summary = summarise_passes(passes)
    mean = np.mean(passes, axis=0)
    expected = np.mean([scipy_entropy(p, axis=0) for p in passes], axis=0)
    np.testing.assert_allclose(summary.mean, mean, rtol=1e-5)
    np.testing.assert_allclose(
        summary.mutual_information, scipy_entropy(mean, axis=0) - expected, atol=1e-5
    )
    big = random_probabilities(rng, (4, 40, 3))  # more slices than one chunk
    np.testing.assert_allclose(volume_entropy(big), scipy_entropy(big, axis=0), rtol=1e-5)
    assert summary.passes == 5 and np.all(summary.mutual_information >= 0)
    accumulator = EnsembleAccumulator()
    accumulator.add(passes[0])
    with pytest.raises(ValueError, match="shape"):
        accumulator.add(passes[0][:, :3])
    with pytest.raises(ValueError, match="no pass"):
        EnsembleAccumulator().summary()


def test_ece_of_a_hand_computed_case():
    # 0.9 -> bin 13 of 15 (accuracy 1/2), 0.6 -> bin 8 (accuracy 1): gaps 0.4 and 0.4
    confidence = np.array([0.9, 0.9, 0.6, 0.6])
    correct = np.array([True, False, True, True])
    assert expected_calibration_error(confidence, correct) == pytest.approx(0.4)
    assert expected_calibration_error(np.array([1.0, 0.0]), np.array([True, False])) == 0.0


def test_ece_of_calibrated_and_overconfident_predictions():
    rng = np.random.default_rng(3)
    confidence = rng.uniform(0.25, 1.0, 200_000)
    calibrated = rng.uniform(size=confidence.size) < confidence
    assert expected_calibration_error(confidence, calibrated) < 0.005
    overconfident = rng.uniform(size=confidence.size) < confidence - 0.2
    assert expected_calibration_error(confidence, overconfident) == pytest.approx(0.2, abs=0.01)


def test_temperature_scaling_recovers_a_known_overconfidence():
    """Labels drawn from softmax(z); the model reports softmax(2 z): the fitted T is 2."""
    rng = np.random.default_rng(4)
    logits = rng.normal(0.0, 2.0, (40_000, 4))
    probabilities = softmax(logits, axis=1)
    labels = np.array([rng.choice(4, p=p) for p in probabilities])
    reported = np.log(softmax(2.0 * logits, axis=1))
    temperature = fit_temperature(reported, labels)
    assert temperature == pytest.approx(2.0, rel=0.05)
    assert negative_log_likelihood(reported, labels, temperature) < negative_log_likelihood(
        reported, labels, 1.0
    )
    np.testing.assert_allclose(scaled_probabilities(reported, 2.0), probabilities, rtol=1e-6)


def test_error_auroc_is_the_mann_whitney_statistic():
    rng = np.random.default_rng(5)
    error = rng.uniform(size=500) < 0.2
    uncertainty = np.round(rng.normal(error * 1.0, 1.0), 1)  # rounded: ties on purpose
    u = mannwhitneyu(uncertainty[error], uncertainty[~error]).statistic
    assert error_detection_auroc(uncertainty, error) == pytest.approx(
        u / (error.sum() * (~error).sum())
    )
    assert error_detection_auroc(np.array([0.1, 0.2, 0.9]), np.array([0, 0, 1], bool)) == 1.0
    assert error_detection_auroc(np.array([0.9, 0.2, 0.1]), np.array([0, 0, 1], bool)) == 0.0
    assert error_detection_auroc(np.ones(4), np.array([0, 1, 0, 1], bool)) == 0.5
    with pytest.raises(ValueError, match="both"):
        error_detection_auroc(np.ones(3), np.zeros(3, bool))
