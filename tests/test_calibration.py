"""Calibration metrics against hand-computed values, and temperature scaling."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score

from helpers import calibration
from helpers.metrics import MetricError


def test_brier_score_hand_computed_and_equal_to_sklearn():
    y, p = [0, 1, 1, 0], [0.1, 0.8, 0.4, 0.3]
    assert calibration.brier_score(y, p) == pytest.approx((0.01 + 0.04 + 0.36 + 0.09) / 4)
    assert calibration.brier_score(y, p) == pytest.approx(brier_score_loss(y, p))


def test_reliability_table_bins_by_hand():
    y = [0, 0, 1, 1, 1, 0]
    p = [0.05, 0.15, 0.12, 0.95, 1.0, 0.55]
    table = calibration.reliability_table(y, p, n_bins=2)
    # [0, 0.5): 0.05, 0.15, 0.12 -> mean 0.10667, 1 of 3 positive; [0.5, 1]: 0.95, 1.0, 0.55
    assert table["images"].tolist() == [3, 3]
    assert table["mean_score"].tolist() == pytest.approx([0.32 / 3, 2.5 / 3])
    assert table["fraction_positive"].tolist() == pytest.approx([1 / 3, 2 / 3])
    ten = calibration.reliability_table(y, p, n_bins=10)
    assert ten["bin_low"].tolist() == pytest.approx([0.0, 0.1, 0.5, 0.9])  # empty bins left out
    assert ten["images"].sum() == 6


def test_expected_calibration_error_by_hand():
    y = [0, 0, 1, 1, 1, 0]
    p = [0.05, 0.15, 0.12, 0.95, 1.0, 0.55]
    expected = 0.5 * abs(1 / 3 - 0.32 / 3) + 0.5 * abs(2 / 3 - 2.5 / 3)
    assert calibration.expected_calibration_error(y, p, n_bins=2) == pytest.approx(expected)
    assert calibration.expected_calibration_error([0, 1], [0.0, 1.0]) == 0.0


def test_calibration_refuses_logits_nan_and_bad_bins():
    with pytest.raises(MetricError, match="probabilities in \\[0, 1\\]"):
        calibration.brier_score([0, 1], [-2.0, 3.0])
    with pytest.raises(MetricError, match="NaN"):
        calibration.expected_calibration_error([0, 1], [0.2, float("nan")])
    with pytest.raises(ValueError, match="n_bins"):
        calibration.reliability_table([0, 1], [0.2, 0.7], n_bins=0)


def test_temperature_scaling_recovers_a_known_overconfidence():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 20_000)
    y = (rng.random(z.size) < 1 / (1 + np.exp(-z))).astype(int)  # calibrated at T = 1
    overconfident = 1 / (1 + np.exp(-2.5 * z))  # logits 2.5x too large
    t = calibration.fit_temperature(y, overconfident)
    assert t == pytest.approx(2.5, rel=0.05)
    fixed = calibration.apply_temperature(overconfident, t)
    before = calibration.expected_calibration_error(y, overconfident)
    after = calibration.expected_calibration_error(y, fixed)
    assert after < before / 3
    # Dividing logits by T > 0 keeps the order: AUC unchanged.
    assert roc_auc_score(y, fixed) == pytest.approx(roc_auc_score(y, overconfident), abs=1e-12)


def test_temperature_of_calibrated_scores_is_about_one_and_validated():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 1.5, 20_000)
    y = (rng.random(z.size) < 1 / (1 + np.exp(-z))).astype(int)
    assert calibration.fit_temperature(y, 1 / (1 + np.exp(-z))) == pytest.approx(1.0, abs=0.05)
    with pytest.raises(MetricError, match="only one class"):
        calibration.fit_temperature([1, 1, 1], [0.2, 0.5, 0.9])
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        calibration.apply_temperature([0.5], 0.0)
