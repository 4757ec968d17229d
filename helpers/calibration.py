"""Calibration: do the scores mean what they say, and temperature scaling where they do not.

A score of 0.8 should mean "about 80% of images scored like this have pneumonia". Ranking
(AUC) and thresholds do not need that; a clinician reading a probability does. Here:

- :func:`brier_score`: mean squared error of the probabilities (0 is perfect);
- :func:`reliability_table`: images in equal-width score bins, mean score against the
  fraction with pneumonia (the reliability diagram's points);
- :func:`expected_calibration_error`: the bins' ``|fraction - mean score|``, weighted by their
  share of images;
- :func:`fit_temperature` / :func:`apply_temperature`: one parameter T > 0 that divides the
  logits, fitted on validation data by maximum likelihood [Guo2017]_. T > 1 softens
  over-confident scores; T does not change the ranking, so AUC and the images' order stay.
- :func:`fit_platt` / :func:`apply_platt`: a slope and an intercept on the logit (Platt, 1999);
  the intercept moves with the prevalence, which a temperature cannot follow.
- :func:`recalibration_report`: both, fitted on validation, measured on test.

References
----------
.. [Guo2017] C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger, "On calibration of modern neural
   networks", ICML 2017.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from helpers.metrics import MetricError, _check_labels_scores

#: The public API (the rest is private by name).
__all__ = [
    "brier_score",
    "reliability_table",
    "expected_calibration_error",
    "logit",
    "apply_temperature",
    "fit_temperature",
    "log_loss",
    "fit_platt",
    "apply_platt",
    "ADOPTED",
    "recalibration_report",
]

#: Scores are clipped this far from 0 and 1 before taking logits.
_EPS = 1e-7


def _probabilities(y_true, scores):
    y_true, scores = _check_labels_scores(y_true, scores, need_both_classes=False)
    if np.any((scores < 0) | (scores > 1)):
        raise MetricError(
            "calibration needs probabilities in [0, 1]; convert logits with a sigmoid first"
        )
    return y_true, scores


def brier_score(y_true: Iterable[int], scores: Iterable[float]) -> float:
    """Mean of ``(score - label)**2``.

    >>> brier_score([0, 1, 1], [0.0, 1.0, 0.5])
    0.08333333333333333
    """
    from sklearn.metrics import brier_score_loss

    y_true, scores = _probabilities(y_true, scores)
    return float(brier_score_loss(y_true, scores, labels=[0, 1]))


def reliability_table(
    y_true: Iterable[int], scores: Iterable[float], *, n_bins: int = 10
) -> pd.DataFrame:
    """Images per equal-width score bin with their mean score and fraction of PNEUMONIA.

    The points of scikit-learn's :func:`~sklearn.calibration.calibration_curve` (uniform
    bins, the same edges: ``[0, 1/n], (1/n, 2/n], ..., ((n-1)/n, 1]``), with each bin's
    edges and number of images beside them; empty bins are left out.

    Returns
    -------
    pandas.DataFrame
        Columns ``bin_low``, ``bin_high``, ``images``, ``mean_score``, ``fraction_positive``.
    """
    from sklearn.calibration import calibration_curve

    y_true, scores = _probabilities(y_true, scores)
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.searchsorted(edges[1:-1], scores)  # calibration_curve's own binning
    counts = np.bincount(index, minlength=n_bins)
    filled = np.flatnonzero(counts)
    columns = ["bin_low", "bin_high", "images", "mean_score", "fraction_positive"]
    fraction, mean = calibration_curve(y_true, scores, n_bins=n_bins, strategy="uniform")
    return pd.DataFrame(
        {
            "bin_low": edges[filled],
            "bin_high": edges[filled + 1],
            "images": counts[filled],
            "mean_score": mean,
            "fraction_positive": fraction,
        },
        columns=columns,
    )


def expected_calibration_error(
    y_true: Iterable[int], scores: Iterable[float], *, n_bins: int = 10
) -> float:
    """ECE: ``sum_bins (images_in_bin / n) * |fraction_positive - mean_score|``.

    >>> round(expected_calibration_error([0, 1, 1, 1], [0.1, 0.2, 0.9, 0.9], n_bins=10), 3)
    0.275
    """
    table = reliability_table(y_true, scores, n_bins=n_bins)
    weights = table["images"] / table["images"].sum()
    return float(np.sum(weights * np.abs(table["fraction_positive"] - table["mean_score"])))


def logit(scores: Iterable[float]) -> np.ndarray:
    """Log-odds of probabilities, clipped to [1e-7, 1 - 1e-7] first."""
    from scipy.special import logit as log_odds

    return log_odds(np.clip(np.asarray(scores, dtype=np.float64), _EPS, 1 - _EPS))


def apply_temperature(scores: Iterable[float], temperature: float) -> np.ndarray:
    """Probabilities after dividing their logits by ``temperature``."""
    from scipy.special import expit

    if not np.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    return expit(logit(scores) / temperature)


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
    from sklearn.metrics import log_loss as sk_log_loss

    y_true, scores = _probabilities(y_true, scores)
    return float(sk_log_loss(y_true, np.clip(scores, _EPS, 1 - _EPS), labels=[0, 1]))


def fit_platt(y_true: Iterable[int], scores: Iterable[float]) -> tuple[float, float]:
    """Platt scaling on the logit: ``slope`` and ``intercept`` of a logistic regression of
    the labels on ``logit(score)`` (unpenalised, maximum likelihood; validation data only).

    Unlike a temperature (a slope alone), the intercept can move: it absorbs a change of
    prevalence, such as class weights that trained the model as if half of the images
    were PNEUMONIA.
    """
    from sklearn.linear_model import LogisticRegression

    y_true, scores = _check_labels_scores(y_true, scores, need_both_classes=True)
    fit = LogisticRegression(C=np.inf, solver="lbfgs", max_iter=1000)
    fit.fit(logit(scores).reshape(-1, 1), y_true)
    return float(fit.coef_[0, 0]), float(fit.intercept_[0])


def apply_platt(scores: Iterable[float], slope: float, intercept: float) -> np.ndarray:
    """Probabilities ``sigmoid(slope * logit(score) + intercept)``."""
    from scipy.special import expit

    if not (np.isfinite(slope) and np.isfinite(intercept)):
        raise ValueError(f"slope and intercept must be finite, got {slope!r}, {intercept!r}")
    return expit(slope * logit(scores) + intercept)


#: What the book does with the refits below, and why (decided without the test set).
ADOPTED = (
    "none: the book reports each model's probabilities as trained. Both refits are fitted on "
    "validation images drawn from the training folder, where they help by construction; "
    "nothing on validation can tell whether they transfer to a separately collected folder "
    "with another prevalence, so neither is applied to metrics.json or to helpers.predict"
)


def recalibration_report(
    val_labels, val_scores, test_labels, test_scores, *, n_bins: int = 10
) -> dict:
    """Fit a temperature and Platt scaling on validation; measure both on test.

    Returns
    -------
    dict
        ``temperature``; ``platt`` (``slope``, ``intercept``); the validation log loss as
        trained and after each refit; ``test_before``, ``test_after`` (temperature) and
        ``test_platt``: Brier score, ECE and mean score on test; ``val_prevalence`` and
        ``test_prevalence`` (share of PNEUMONIA); ``adopted`` (:data:`ADOPTED`).
    """
    t = fit_temperature(val_labels, val_scores)
    slope, intercept = fit_platt(val_labels, val_scores)
    test_labels = np.asarray(test_labels)
    return {
        "temperature": t,
        "platt": {"slope": slope, "intercept": intercept},
        "val_log_loss_before": log_loss(val_labels, val_scores),
        "val_log_loss_after": log_loss(val_labels, apply_temperature(val_scores, t)),
        "val_log_loss_platt": log_loss(val_labels, apply_platt(val_scores, slope, intercept)),
        "test_before": _calibration_summary(test_labels, test_scores, n_bins=n_bins),
        "test_after": _calibration_summary(
            test_labels, apply_temperature(test_scores, t), n_bins=n_bins
        ),
        "test_platt": _calibration_summary(
            test_labels, apply_platt(test_scores, slope, intercept), n_bins=n_bins
        ),
        "val_prevalence": float(np.mean(val_labels)),
        "test_prevalence": float(np.mean(test_labels)),
        "n_bins": n_bins,
        "adopted": ADOPTED,
    }


def _calibration_summary(
    y_true: Iterable[int], scores: Iterable[float], *, n_bins: int = 10
) -> dict:
    """Brier score and ECE of one set of scores, as plain floats."""
    return {
        "brier": brier_score(y_true, scores),
        "ece": expected_calibration_error(y_true, scores, n_bins=n_bins),
        "mean_score": float(np.mean(np.asarray(scores, dtype=np.float64))),
    }
