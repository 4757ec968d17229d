"""Diagnostic metrics with 95% intervals, and operating points chosen on validation data.

Conventions (as in scikit-learn): ``y_true`` first, then scores or predictions, then
keyword-only options. Labels are 0 = NORMAL (negative) and 1 = PNEUMONIA (positive);
scores are probabilities of PNEUMONIA, and an image is called PNEUMONIA when
``score >= threshold``.

Rates (sensitivity, specificity, ...) get Wilson score intervals [Wilson1927]_; the ROC AUC gets
a DeLong interval [DeLong1988]_, computed with the fast algorithm of Sun and Xu [SunXu2014]_.

References
----------
.. [Wilson1927] E. B. Wilson, "Probable inference, the law of succession, and statistical
   inference", JASA 22:209-212, 1927.
.. [DeLong1988] E. R. DeLong, D. M. DeLong, D. L. Clarke-Pearson, "Comparing the areas under two or
   more correlated receiver operating characteristic curves: a nonparametric approach",
   Biometrics 44:837-845, 1988.
.. [SunXu2014] X. Sun, W. Xu, "Fast implementation of DeLong's algorithm for comparing the areas
   under correlated receiver operating characteristic curves", IEEE Signal Processing
   Letters 21(11):1389-1393, 2014.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats

if TYPE_CHECKING:  # pandas is imported where the table is built, not at import time
    import pandas as pd

#: The public API (the rest is private by name).
__all__ = [
    "RATE_NAMES",
    "MetricError",
    "Estimate",
    "wilson_interval",
    "confusion_counts",
    "predict_labels",
    "rates_at_threshold",
    "delong_variance",
    "roc_auc_with_ci",
    "youden_threshold",
    "threshold_for_sensitivity",
    "choose_threshold",
    "summary",
    "classification_report",
    "PairedTest",
    "mcnemar_test",
    "delong_test",
    "sensitivity_by_kind",
]

#: Names of the rates :func:`rates_at_threshold` reports, in display order.
RATE_NAMES: tuple[str, ...] = ("accuracy", "sensitivity", "specificity", "ppv", "npv", "f1")


class MetricError(ValueError):
    """The inputs make a metric undefined (one class only, NaN scores, ...)."""


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its 95% interval (NaN where undefined)."""

    value: float
    ci_low: float
    ci_high: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def __format__(self, spec: str) -> str:
        spec = spec or ".3f"
        return f"{self.value:{spec}} ({self.ci_low:{spec}}-{self.ci_high:{spec}})"


def _check_labels_scores(y_true, scores, *, need_both_classes: bool):
    y_true = np.asarray(y_true)
    scores = np.asarray(scores, dtype=np.float64)
    if y_true.ndim != 1 or scores.ndim != 1:
        raise MetricError(
            f"y_true and scores must be 1-D, got shapes {y_true.shape} and {scores.shape}"
        )
    if y_true.shape != scores.shape:
        raise MetricError(
            f"y_true and scores must have the same length, got {y_true.size} and {scores.size}"
        )
    if y_true.size == 0:
        raise MetricError("y_true is empty")
    if not np.isin(y_true, (0, 1)).all():
        raise MetricError(f"y_true must hold only 0 and 1, got {np.unique(y_true).tolist()}")
    if np.isnan(scores).any():
        raise MetricError(
            f"scores hold {int(np.isnan(scores).sum())} NaN values (of {scores.size}); "
            "the model's outputs are not usable"
        )
    if need_both_classes and np.unique(y_true).size < 2:
        raise MetricError(
            f"only one class present in y_true (all {int(y_true[0])}); "
            "ROC AUC and thresholds need both NORMAL and PNEUMONIA images"
        )
    return y_true.astype(np.int64), scores


def wilson_interval(successes: int, total: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (NaN, NaN when ``total`` is 0).

    >>> lo, hi = wilson_interval(8, 10)
    >>> round(lo, 4), round(hi, 4)
    (0.4902, 0.9433)
    """
    if total == 0:
        return float("nan"), float("nan")
    if not 0 <= successes <= total:
        raise MetricError(f"successes must lie in [0, total={total}], got {successes}")
    ci = stats.binomtest(int(successes), int(total)).proportion_ci(
        confidence_level=confidence, method="wilson"
    )
    return float(ci.low), float(ci.high)


def confusion_counts(y_true: Iterable[int], y_pred: Iterable[int]) -> dict[str, int]:
    """Counts ``tn, fp, fn, tp`` of binary decisions (scikit-learn's confusion matrix).

    >>> confusion_counts([0, 0, 1, 1], [0, 1, 1, 1])
    {'tn': 1, 'fp': 1, 'fn': 0, 'tp': 2}
    """
    from sklearn.metrics import confusion_matrix

    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise MetricError(
            f"y_true and y_pred must be 1-D of the same length, got shapes {y_true.shape} "
            f"and {y_pred.shape}"
        )
    for name, values in (("y_true", y_true), ("y_pred", y_pred)):
        if not np.isin(values, (0, 1)).all():
            raise MetricError(f"{name} must hold only 0 and 1, got {np.unique(values).tolist()}")
    tn, fp, fn, tp = confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    return {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)}


def predict_labels(scores: Iterable[float], threshold: float) -> np.ndarray:
    """Decisions ``score >= threshold`` (1 = PNEUMONIA) from probabilities.

    Scores must be probabilities in [0, 1]: logits compared with a probability threshold
    were one of the case study's bugs, so anything outside [0, 1] is refused.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if np.isnan(scores).any():
        raise MetricError("scores hold NaN values")
    if scores.size and (scores.min() < 0 or scores.max() > 1):
        raise MetricError(
            f"scores must be probabilities in [0, 1], got range [{scores.min():.3g}, "
            f"{scores.max():.3g}]; convert logits with a sigmoid first"
        )
    return (scores >= threshold).astype(np.int64)


def rates_at_threshold(
    y_true: Iterable[int], scores: Iterable[float], *, threshold: float, confidence: float = 0.95
) -> dict:
    """Accuracy, sensitivity, specificity, PPV, NPV and F1 at a threshold, with intervals.

    Parameters
    ----------
    y_true : array-like of {0, 1}, shape (n,)
    scores : array-like of float, shape (n,)
        Probabilities of PNEUMONIA.
    threshold : float
        Call PNEUMONIA when ``score >= threshold``.

    Returns
    -------
    dict
        ``threshold``, the counts ``tn, fp, fn, tp``, ``n``, and for each name in
        :data:`RATE_NAMES` an :class:`Estimate`. Each rate is a proportion with a Wilson
        interval: sensitivity = tp / (tp + fn), specificity = tn / (tn + fp),
        PPV = tp / (tp + fp), NPV = tn / (tn + fn), accuracy = (tp + tn) / n. F1 is a
        harmonic mean, not a proportion; its interval is the Wilson interval of
        ``2 tp / (2 tp + fp + fn)`` read as the proportion ``2 tp`` of ``2 tp + fp + fn``,
        which counts every true positive twice and so is too narrow: :func:`summary`
        drops it (use :func:`helpers.bootstrap.person_bootstrap` for an F1 interval).
        A rate whose denominator is 0 is NaN.
    """
    y_true, scores = _check_labels_scores(y_true, scores, need_both_classes=False)
    counts = confusion_counts(y_true, predict_labels(scores, threshold))
    tn, fp, fn, tp = counts["tn"], counts["fp"], counts["fn"], counts["tp"]
    fractions = {
        "accuracy": (tp + tn, tn + fp + fn + tp),
        "sensitivity": (tp, tp + fn),
        "specificity": (tn, tn + fp),
        "ppv": (tp, tp + fp),
        "npv": (tn, tn + fn),
        "f1": (2 * tp, 2 * tp + fp + fn),
    }
    out: dict = {"threshold": float(threshold), **counts, "n": int(y_true.size)}
    for name in RATE_NAMES:
        k, n = fractions[name]
        value = k / n if n else float("nan")
        out[name] = Estimate(value, *wilson_interval(k, n, confidence=confidence))
    return out


def _midranks(x: np.ndarray) -> np.ndarray:
    return stats.rankdata(x, method="average")


def _delong_components(y_true: np.ndarray, scores: np.ndarray):
    """AUC and DeLong's structural components V10 (positives) and V01 (negatives)."""
    pos = scores[y_true == 1]
    neg = scores[y_true == 0]
    m, n = pos.size, neg.size
    tx, ty = _midranks(pos), _midranks(neg)
    tz = _midranks(np.concatenate([pos, neg]))
    auc = (tz[:m].sum() - m * (m + 1) / 2) / (m * n)
    v10 = (tz[:m] - tx) / n
    v01 = 1.0 - (tz[m:] - ty) / m
    return auc, v10, v01


def _variance_from_components(v10: np.ndarray, v01: np.ndarray) -> float:
    # With one positive or one negative the sample variance is undefined: NaN, not 0.
    if v10.size < 2 or v01.size < 2:
        return float("nan")
    return float(np.var(v10, ddof=1) / v10.size + np.var(v01, ddof=1) / v01.size)


def delong_variance(y_true: Iterable[int], scores: Iterable[float]) -> float:
    """DeLong's variance of the empirical ROC AUC (NaN with fewer than 2 of a class)."""
    y_true, scores = _check_labels_scores(y_true, scores, need_both_classes=True)
    _, v10, v01 = _delong_components(y_true, scores)
    return _variance_from_components(v10, v01)


def roc_auc_with_ci(
    y_true: Iterable[int], scores: Iterable[float], *, confidence: float = 0.95
) -> Estimate:
    """ROC AUC with a DeLong interval, clipped to [0, 1].

    The AUC equals scikit-learn's :func:`~sklearn.metrics.roc_auc_score`; the interval is
    ``AUC +- z * sqrt(var)`` with DeLong's variance.

    Raises
    ------
    MetricError
        If only one class is present or scores hold NaN.

    Examples
    --------
    >>> roc_auc_with_ci([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]).value
    0.75
    """
    from sklearn.metrics import roc_auc_score

    y_true, scores = _check_labels_scores(y_true, scores, need_both_classes=True)
    auc, var = roc_auc_score(y_true, scores), delong_variance(y_true, scores)
    if np.isnan(var):
        return Estimate(float(auc), float("nan"), float("nan"))
    half = stats.norm.ppf(0.5 + confidence / 2) * np.sqrt(var)
    return Estimate(float(auc), float(max(0.0, auc - half)), float(min(1.0, auc + half)))


def _check_threshold_inputs(y_true, scores):
    y_true, scores = _check_labels_scores(y_true, scores, need_both_classes=True)
    if np.unique(scores).size < 2:
        raise MetricError(
            f"all {scores.size} scores are equal ({scores[0]:.6g}): the model does not rank "
            "images, so no threshold separates the classes"
        )
    return y_true, scores


def youden_threshold(y_true: Iterable[int], scores: Iterable[float]) -> float:
    """Threshold maximising Youden's J = sensitivity + specificity - 1 (highest on ties).

    >>> youden_threshold([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.8
    """
    from sklearn.metrics import roc_curve

    y_true, scores = _check_threshold_inputs(y_true, scores)
    fpr, tpr, thresholds = roc_curve(y_true, scores, drop_intermediate=False)
    n_pos, n_neg = int(y_true.sum()), int((1 - y_true).sum())
    # J * n_pos * n_neg = tp * n_neg - fp * n_pos, compared exactly as integers, so that
    # ties really go to the highest threshold (thresholds are decreasing).
    tp = np.rint(tpr * n_pos).astype(np.int64)
    fp = np.rint(fpr * n_neg).astype(np.int64)
    j = np.where(np.isfinite(thresholds), tp * n_neg - fp * n_pos, np.iinfo(np.int64).min)
    return float(thresholds[int(np.argmax(j))])


def threshold_for_sensitivity(
    y_true: Iterable[int], scores: Iterable[float], *, target: float = 0.95
) -> float:
    """The highest threshold whose sensitivity reaches ``target``.

    Among thresholds reaching the target sensitivity, the highest keeps the most
    specificity. Choose it on validation data, never on the test set.

    >>> threshold_for_sensitivity([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], target=0.95)
    0.35
    """
    from sklearn.metrics import roc_curve

    if not 0 < target <= 1:
        raise MetricError(f"target sensitivity must be in (0, 1], got {target!r}")
    y_true, scores = _check_threshold_inputs(y_true, scores)
    _, tpr, thresholds = roc_curve(y_true, scores, drop_intermediate=False)
    reach = np.flatnonzero((tpr >= target - 1e-12) & np.isfinite(thresholds))
    return float(thresholds[reach[0]])


def choose_threshold(
    y_true: Iterable[int],
    scores: Iterable[float],
    *,
    method: str = "sensitivity",
    target: float = 0.95,
) -> dict:
    """Pick an operating point on validation scores.

    Parameters
    ----------
    method : {"sensitivity", "youden"}
        ``"sensitivity"``: :func:`threshold_for_sensitivity` at ``target``;
        ``"youden"``: :func:`youden_threshold`.

    Returns
    -------
    dict
        ``threshold``, ``method`` and (for ``"sensitivity"``) ``target_sensitivity``.
    """
    if method == "sensitivity":
        return {
            "threshold": threshold_for_sensitivity(y_true, scores, target=target),
            "method": "sensitivity",
            "target_sensitivity": float(target),
        }
    if method == "youden":
        return {"threshold": youden_threshold(y_true, scores), "method": "youden"}
    raise MetricError(f"method must be 'sensitivity' or 'youden', got {method!r}")


def summary(
    y_true: Iterable[int], scores: Iterable[float], *, threshold: float, confidence: float = 0.95
) -> dict:
    """All test metrics at one threshold as plain floats (for ``metrics.json`` and tables).

    Returns a flat dict: ``auc``, ``auc_ci_low``, ``auc_ci_high``, each rate with its
    ``_ci_low``/``_ci_high``, the counts and the threshold. F1 keeps its point value but
    ``f1_ci_low`` and ``f1_ci_high`` are None: no image-level interval is valid for it
    (the Wilson one counts true positives twice); a person-level one comes from
    :func:`helpers.bootstrap.person_bootstrap`.
    """
    rates = rates_at_threshold(y_true, scores, threshold=threshold, confidence=confidence)
    auc = roc_auc_with_ci(y_true, scores, confidence=confidence)
    flat: dict = {"threshold": rates["threshold"]}
    for name, estimate in [("auc", auc)] + [(n, rates[n]) for n in RATE_NAMES]:
        flat[name] = estimate.value
        flat[f"{name}_ci_low"] = estimate.ci_low
        flat[f"{name}_ci_high"] = estimate.ci_high
    flat["f1_ci_low"] = flat["f1_ci_high"] = None
    for key in ("tp", "fp", "tn", "fn", "n"):
        flat[key] = rates[key]
    return flat


def classification_report(
    y_true: Iterable[int], scores: Iterable[float], *, threshold: float
) -> str:
    """scikit-learn's classification report at ``threshold``, with class names."""
    from sklearn.metrics import classification_report as sk_report

    from helpers.config import CLASS_NAMES

    y_true, scores = _check_labels_scores(y_true, scores, need_both_classes=False)
    return sk_report(
        y_true,
        predict_labels(scores, threshold),
        labels=[0, 1],
        target_names=list(CLASS_NAMES),
        digits=3,
        zero_division=0,
    )


# ---------------------------------------------------------------------------------------
# Comparing two models on the same images
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairedTest:
    """A paired comparison of model A with model B on the same images.

    Attributes
    ----------
    statistic : float
        The test's statistic (discordant pairs where only A is right, for McNemar; z for
        DeLong).
    p_value : float
        Two-sided.
    difference : float
        A minus B (accuracy for McNemar, AUC for DeLong).
    detail : dict
        The counts or the two AUCs and the standard error of the difference.
    """

    statistic: float
    p_value: float
    difference: float
    detail: dict


def mcnemar_test(y_true: Iterable[int], pred_a: Iterable[int], pred_b: Iterable[int]) -> PairedTest:
    """Exact McNemar test: do two models' decisions err on the same images equally often?

    Only discordant images count: ``b`` where A is right and B wrong, ``c`` where B is
    right and A wrong. Under the null hypothesis ``b ~ Binomial(b + c, 1/2)``; the p-value
    is the exact two-sided binomial one (no continuity correction needed), 1 when
    ``b + c == 0``.

    Examples
    --------
    >>> t = mcnemar_test([1] * 12, [1] * 10 + [0] * 2, [0] * 10 + [1] * 2)
    >>> (t.detail["only_a_right"], t.detail["only_b_right"], round(t.p_value, 5))
    (10, 2, 0.03857)
    """
    y_true = np.asarray(y_true)
    pred_a, pred_b = np.asarray(pred_a), np.asarray(pred_b)
    if not (y_true.shape == pred_a.shape == pred_b.shape) or y_true.ndim != 1:
        raise MetricError(
            f"y_true, pred_a and pred_b must be 1-D of one length, got {y_true.shape}, "
            f"{pred_a.shape}, {pred_b.shape}"
        )
    for name, values in (("y_true", y_true), ("pred_a", pred_a), ("pred_b", pred_b)):
        if not np.isin(values, (0, 1)).all():
            raise MetricError(f"{name} must hold only 0 and 1, got {np.unique(values).tolist()}")
    right_a, right_b = pred_a == y_true, pred_b == y_true
    b = int(np.sum(right_a & ~right_b))
    c = int(np.sum(~right_a & right_b))
    p = 1.0 if b + c == 0 else float(stats.binomtest(b, b + c, 0.5).pvalue)
    return PairedTest(
        statistic=float(b),
        p_value=p,
        difference=float(right_a.mean() - right_b.mean()),
        detail={
            "only_a_right": b,
            "only_b_right": c,
            "both_right": int(np.sum(right_a & right_b)),
            "both_wrong": int(np.sum(~right_a & ~right_b)),
        },
    )


def delong_test(
    y_true: Iterable[int], scores_a: Iterable[float], scores_b: Iterable[float]
) -> PairedTest:
    """DeLong's test for the difference of two correlated ROC AUCs (same images) [DeLong1988]_.

    ``z = (AUC_A - AUC_B) / sqrt(var_A + var_B - 2 cov_AB)`` with DeLong's covariance of
    the structural components; two-sided normal p-value. Identical rankings give
    difference 0 and p-value 1.

    Raises
    ------
    MetricError
        With one class only, NaN scores, or fewer than two images of a class.
    """
    y_true, scores_a = _check_labels_scores(y_true, scores_a, need_both_classes=True)
    _, scores_b = _check_labels_scores(y_true, scores_b, need_both_classes=True)
    auc_a, v10_a, v01_a = _delong_components(y_true, scores_a)
    auc_b, v10_b, v01_b = _delong_components(y_true, scores_b)
    m, n = v10_a.size, v01_a.size
    if m < 2 or n < 2:
        raise MetricError("DeLong's test needs at least two images of each class")
    s10 = np.cov(np.vstack([v10_a, v10_b]), ddof=1)
    s01 = np.cov(np.vstack([v01_a, v01_b]), ddof=1)
    cov = s10 / m + s01 / n
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    diff = float(auc_a - auc_b)
    if var <= 1e-15:
        z, p = (0.0, 1.0) if abs(diff) < 1e-15 else (float("inf") * np.sign(diff), 0.0)
    else:
        z = diff / np.sqrt(var)
        p = float(2 * stats.norm.sf(abs(z)))
    return PairedTest(
        statistic=float(z),
        p_value=p,
        difference=diff,
        detail={
            "auc_a": float(auc_a),
            "auc_b": float(auc_b),
            "se_difference": float(np.sqrt(max(var, 0.0))),
        },
    )


def sensitivity_by_kind(
    paths: Iterable[str], y_true: Iterable[int], scores: Iterable[float], *, threshold: float
) -> pd.DataFrame:
    """Sensitivity for bacterial and for viral pneumonia separately, with Wilson intervals.

    The kind comes from the file name (``person12_virus_45.jpeg``, see
    :func:`helpers.data.pneumonia_kind`); PNEUMONIA images of neither kind form a row
    ``"unknown"``.

    Returns
    -------
    pandas.DataFrame
        Index ``kind``; columns ``images``, ``detected``, ``sensitivity``, ``ci_low``,
        ``ci_high``.
    """
    import pandas as pd

    from helpers.data import pneumonia_kind

    y_true, scores = _check_labels_scores(y_true, scores, need_both_classes=False)
    paths = list(paths)
    if len(paths) != y_true.size:
        raise MetricError(f"paths and y_true differ in length: {len(paths)} and {y_true.size}")
    called = predict_labels(scores, threshold)
    rows = {}
    for path, label, call in zip(paths, y_true, called):
        if label != 1:
            continue
        kind = pneumonia_kind(path) or "unknown"
        images, detected = rows.get(kind, (0, 0))
        rows[kind] = (images + 1, detected + int(call))
    out = []
    for kind in sorted(rows, key=lambda k: {"bacteria": 0, "virus": 1}.get(k, 2)):
        images, detected = rows[kind]
        low, high = wilson_interval(detected, images)
        out.append(
            {
                "kind": kind,
                "images": images,
                "detected": detected,
                "sensitivity": detected / images,
                "ci_low": low,
                "ci_high": high,
            }
        )
    return pd.DataFrame(
        out, columns=["kind", "images", "detected", "sensitivity", "ci_low", "ci_high"]
    ).set_index("kind")
