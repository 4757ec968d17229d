"""Calibration: do the scores mean what they say, and temperature scaling where they do not.

A score of 0.8 should mean "about 80% of images scored like this have pneumonia". Ranking
(AUC) and thresholds do not need that; a clinician reading a probability does. Here:

- :func:`brier_score`: mean squared error of the probabilities (0 is perfect);
- :func:`reliability_table`: images in equal-width score bins, mean score against the
  fraction with pneumonia (the reliability diagram's points);
- :func:`expected_calibration_error`: the bins' |fraction - mean score|, weighted by their
  share of images;
- :func:`fit_temperature` / :func:`apply_temperature`: one parameter T > 0 that divides the
  logits, fitted on validation data by maximum likelihood (Guo et al., 2017). T > 1 softens
  over-confident scores; T does not change the ranking, so AUC and the images' order stay.

References
----------
.. [1] C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger, "On calibration of modern neural
   networks", ICML 2017.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from helpers.metrics import MetricError, _check_labels_scores

#: Scores are clipped this far from 0 and 1 before taking logits.
_EPS = 1e-7


def _probabilities(y_true, scores):
    y_true, scores = _check_labels_scores(y_true, scores, need_both_classes=False)
    if np.any((scores < 0) | (scores > 1)):
        raise MetricError("calibration needs probabilities in [0, 1]; convert logits with a sigmoid first")
    return y_true, scores


def brier_score(y_true: Iterable[int], scores: Iterable[float]) -> float:
    """Mean of ``(score - label)**2``.

    >>> brier_score([0, 1, 1], [0.0, 1.0, 0.5])
    0.08333333333333333
    """
    y_true, scores = _probabilities(y_true, scores)
    return float(np.mean((scores - y_true) ** 2))


def reliability_table(y_true: Iterable[int], scores: Iterable[float], *, n_bins: int = 10) -> pd.DataFrame:
    """Images per equal-width score bin with their mean score and fraction of PNEUMONIA.

    Bins are ``[0, 1/n), [1/n, 2/n), ..., [(n-1)/n, 1]``; empty bins are left out.

    Returns
    -------
    pandas.DataFrame
        Columns ``bin_low``, ``bin_high``, ``images``, ``mean_score``, ``fraction_positive``.
    """
    y_true, scores = _probabilities(y_true, scores)
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    index = np.minimum((scores * n_bins).astype(np.int64), n_bins - 1)
    rows = []
    for b in range(n_bins):
        inside = index == b
        if inside.any():
            rows.append({
                "bin_low": b / n_bins, "bin_high": (b + 1) / n_bins, "images": int(inside.sum()),
                "mean_score": float(scores[inside].mean()),
                "fraction_positive": float(y_true[inside].mean()),
            })
    return pd.DataFrame(rows, columns=["bin_low", "bin_high", "images", "mean_score", "fraction_positive"])


def expected_calibration_error(y_true: Iterable[int], scores: Iterable[float], *, n_bins: int = 10) -> float:
    """ECE: ``sum_bins (images_in_bin / n) * |fraction_positive - mean_score|``.

    >>> round(expected_calibration_error([0, 1, 1, 1], [0.1, 0.2, 0.9, 0.9], n_bins=10), 3)
    0.275
    """
    table = reliability_table(y_true, scores, n_bins=n_bins)
    weights = table["images"] / table["images"].sum()
    return float(np.sum(weights * np.abs(table["fraction_positive"] - table["mean_score"])))


def logit(scores: Iterable[float]) -> np.ndarray:
    """Log-odds of probabilities, clipped to [1e-7, 1 - 1e-7] first."""
    p = np.clip(np.asarray(scores, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def apply_temperature(scores: Iterable[float], temperature: float) -> np.ndarray:
    """Probabilities after dividing their logits by ``temperature``."""
    from helpers.evaluate import sigmoid

    if not np.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    return sigmoid(logit(scores) / temperature)


def fit_temperature(y_true: Iterable[int], scores: Iterable[float]) -> float:
    """The temperature minimising the log loss of ``scores`` (validation data only).

    Searched over log T in [-5, 5] (T from 0.007 to 148) with a bounded scalar method.

    Raises
    ------
    MetricError
        With one class only (any T > 0 then fits it better than the last), or NaN scores.
    """
    from scipy.optimize import minimize_scalar

    y_true, scores = _check_labels_scores(y_true, scores, need_both_classes=True)
    z = logit(scores)

    def nll(log_t: float) -> float:
        s = z / np.exp(log_t)
        # log(1 + exp(-s)) for positives, log(1 + exp(s)) for negatives, computed stably.
        return float(np.mean(np.logaddexp(0.0, np.where(y_true == 1, -s, s))))

    result = minimize_scalar(nll, bounds=(-5.0, 5.0), method="bounded", options={"xatol": 1e-6})
    return float(np.exp(result.x))


def log_loss(y_true: Iterable[int], scores: Iterable[float]) -> float:
    """Mean negative log-likelihood of the labels (scores clipped to [1e-7, 1 - 1e-7])."""
    y_true, scores = _probabilities(y_true, scores)
    z = logit(scores)
    return float(np.mean(np.logaddexp(0.0, np.where(y_true == 1, -z, z))))


#: Temperature scaling is kept only if it lowers the validation log loss by this fraction.
MIN_IMPROVEMENT = 0.01


def temperature_report(val_labels, val_scores, test_labels, test_scores, *, n_bins: int = 10) -> dict:
    """Fit a temperature on validation, decide there whether to use it, report both on test.

    Returns
    -------
    dict
        ``temperature``; ``applied`` (True when it lowers the validation log loss by at
        least 1%: decided on validation, never on test); ``val_log_loss_before`` and
        ``_after``; ``test_before`` and ``test_after`` (Brier score and ECE on test).
    """
    t = fit_temperature(val_labels, val_scores)
    before, after = log_loss(val_labels, val_scores), log_loss(val_labels, apply_temperature(val_scores, t))
    return {
        "temperature": t,
        "applied": bool(after < before * (1 - MIN_IMPROVEMENT)),
        "val_log_loss_before": before,
        "val_log_loss_after": after,
        "test_before": calibration_summary(test_labels, test_scores, n_bins=n_bins),
        "test_after": calibration_summary(test_labels, apply_temperature(test_scores, t), n_bins=n_bins),
        "n_bins": n_bins,
    }


def calibration_summary(y_true: Iterable[int], scores: Iterable[float], *, n_bins: int = 10) -> dict:
    """Brier score and ECE of one set of scores, as plain floats."""
    return {"brier": brier_score(y_true, scores),
            "ece": expected_calibration_error(y_true, scores, n_bins=n_bins)}
