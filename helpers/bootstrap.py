"""Person-level (cluster) bootstrap intervals for test metrics, and comparing models by them.

The test images are not independent: one person may give several X-rays (the official
test folder's 390 PNEUMONIA images come from 202 persons, up to 9 each). Image-level
intervals (Wilson, DeLong in :mod:`helpers.metrics`) treat them as independent and so are
too narrow. Here the unit of resampling is the person.

How a resample is drawn
-----------------------
A *cluster* is a (person, label) pair, so a person with images in both classes cannot break
the stratification. Within each class separately, as many clusters as the class has are
drawn with replacement (a stratified bootstrap [Efron1993]_ of clusters [Davison1997]_:
every resample holds exactly as many NORMAL and PNEUMONIA persons as the data); every image
of a drawn cluster goes in, once per draw. A resample is therefore a vector of multiplicities
over the images, and every metric is computed with those multiplicities as integer weights
(for the ROC AUC: the Mann-Whitney statistic with weights, from per-score-level sums).

Intervals are *percentile* intervals: the ``(1 - confidence) / 2`` and
``(1 + confidence) / 2`` quantiles of the resampled values (NumPy's default linear
interpolation). Point estimates come from the original data. Person ids are compared as
text (``str(person)``), and clusters are ordered by id within each class, so the result
does not depend on the order of the images.

Conclusions about two models rest on the interval of their *difference* on the same
resampled persons (:func:`paired_person_bootstrap`, :func:`verdict`), never on whether
two marginal intervals overlap. Several such p-values are adjusted with
:func:`holm_adjust`.

References
----------
.. [Efron1993] B. Efron, R. J. Tibshirani, "An Introduction to the Bootstrap", Chapman & Hall,
   1993 (percentile intervals, ch. 13).
.. [Davison1997] A. C. Davison, D. V. Hinkley, "Bootstrap Methods and their Application",
   Cambridge University Press, 1997 (resampling clusters, section 3.8).
.. [Holm1979] S. Holm, "A simple sequentially rejective multiple test procedure",
   Scandinavian Journal of Statistics 6:65-70, 1979.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from numbers import Integral

import numpy as np
import pandas as pd

from helpers.config import CLASS_NAMES
from helpers.metrics import Estimate, MetricError, predict_labels

#: The public API (the rest is private by name).
__all__ = [
    "BOOTSTRAP_METRICS",
    "PAIRED_METRICS",
    "MIN_TAIL_RESAMPLES",
    "minimum_resamples",
    "person_bootstrap",
    "bootstrap_p_value",
    "paired_person_bootstrap",
    "seed_person_bootstrap",
    "holm_adjust",
    "verdict",
    "interval_table",
]

#: Metrics :func:`person_bootstrap` gives intervals for, in display order.
BOOTSTRAP_METRICS: tuple[str, ...] = (
    "auc",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "accuracy",
    "f1",
)
#: Differences :func:`paired_person_bootstrap` reports.
PAIRED_METRICS: tuple[str, ...] = ("auc", "sensitivity", "specificity")
#: The resampling seed when a caller gives none: the same intervals on every run. The
#: bootstrap's own default (summaries that take no seed use it), not a chapter's ``seed``.
DEFAULT_SEED = 42
#: Resamples each tail of a percentile interval must rest on at least (see
#: :func:`minimum_resamples`); with fewer, the interval's ends jump from seed to seed.
MIN_TAIL_RESAMPLES = 25


# ---------------------------------------------------------------------------------------
# Checking inputs
# ---------------------------------------------------------------------------------------


def minimum_resamples(confidence: float) -> int:
    """The fewest resamples accepted at ``confidence``: 25 must fall in each tail.

    A percentile interval's ends are read from the ``(1 - confidence) / 2`` share of
    resamples in each tail; 25 of them keep the ends stable. That is 1000 resamples at 95%
    and 5000 at 99%.

    >>> minimum_resamples(0.95), minimum_resamples(0.99), minimum_resamples(0.90)
    (1000, 5000, 500)
    """
    _check_confidence(confidence)
    # Rounded first: (1 - 0.95) / 2 is 0.025000000000000022 in floating point.
    return int(math.ceil(round(MIN_TAIL_RESAMPLES / ((1 - confidence) / 2), 6)))


def _check_confidence(confidence: float) -> None:
    if not (isinstance(confidence, (float, int)) and 0 < confidence < 1):
        raise MetricError(
            f"confidence must be a number strictly between 0 and 1, got {confidence!r}"
        )


def _check_resampling(n_resamples: int, seed: int, confidence: float) -> None:
    _check_confidence(confidence)
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, Integral):
        raise MetricError(f"n_resamples must be an integer, got {n_resamples!r}")
    fewest = minimum_resamples(confidence)
    if n_resamples < fewest:
        raise MetricError(
            f"n_resamples={n_resamples} is too few for a {confidence:.0%} percentile interval: "
            f"at least {fewest} are needed so that {MIN_TAIL_RESAMPLES} resamples fall in each tail"
        )
    if isinstance(seed, bool) or not isinstance(seed, Integral):
        raise MetricError(f"seed must be an integer, got {seed!r}")


def _check_labels(y_true) -> np.ndarray:
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise MetricError(f"y_true must be 1-D, got shape {y.shape}")
    if y.size == 0:
        raise MetricError("y_true is empty")
    if not np.isin(y, (0, 1)).all():
        raise MetricError(f"y_true must hold only 0 and 1, got {np.unique(y).tolist()}")
    if np.unique(y).size < 2:
        raise MetricError(
            f"only one class present in y_true (all {CLASS_NAMES[int(y[0])]}); a stratified "
            "bootstrap and the ROC AUC need both NORMAL and PNEUMONIA images"
        )
    return y.astype(np.int64)


def _check_scores(scores, name: str, n: int) -> np.ndarray:
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1 or values.size != n:
        raise MetricError(
            f"{name} must be 1-D with one score per image ({n}), got shape {values.shape}"
        )
    if np.isnan(values).any():
        raise MetricError(
            f"{name} hold {int(np.isnan(values).sum())} NaN values (of {n}); the model's outputs "
            "are not usable"
        )
    return values


def _check_threshold(threshold: float, name: str) -> float:
    if isinstance(threshold, bool) or not isinstance(
        threshold, (float, int, np.floating, np.integer)
    ):
        raise MetricError(f"{name} must be a number, got {threshold!r}")
    if not np.isfinite(threshold):
        raise MetricError(f"{name} must be finite, got {threshold!r}")
    return float(threshold)


def _clusters(y: np.ndarray, persons) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per class: the images of the class, and each one's cluster index within the class."""
    persons = list(persons)
    if len(persons) != y.size:
        raise MetricError(
            f"persons must give one person id per image: got {len(persons)} ids for {y.size} images"
        )
    for i, person in enumerate(persons):
        if (
            person is None
            or (isinstance(person, float) and math.isnan(person))
            or str(person) == ""
        ):
            raise MetricError(
                f"persons[{i}] is missing ({person!r}); every image needs a person id"
            )
    ids = np.array([str(p) for p in persons], dtype=object)
    out = []
    for label in (0, 1):
        images = np.flatnonzero(y == label)
        # np.unique sorts the ids: clusters get the same indices whatever the image order.
        _, cluster = np.unique(ids[images], return_inverse=True)
        out.append((images, cluster.ravel()))
    return out


# ---------------------------------------------------------------------------------------
# Resampling and weighted metrics
# ---------------------------------------------------------------------------------------


def _resample_weights(clusters, n_images: int, n_resamples: int, seed: int) -> np.ndarray:
    """Multiplicity of every image in each resample, shape ``(n_resamples, n_images)``.

    Drawing ``k`` clusters with replacement from ``k`` is the same as drawing how often
    each is drawn from a multinomial with ``k`` trials and equal probabilities.
    """
    rng = np.random.default_rng(seed)
    weights = np.zeros((n_resamples, n_images), dtype=np.float64)
    for images, cluster in clusters:  # NORMAL first, then PNEUMONIA: one fixed order
        k = int(cluster.max()) + 1
        draws = rng.multinomial(k, np.full(k, 1.0 / k), size=n_resamples)
        weights[:, images] = draws[:, cluster]
    return weights


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator``, NaN where the denominator is 0 (the rate is undefined)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def _weighted_rates(
    weights: np.ndarray, y: np.ndarray, called: np.ndarray
) -> dict[str, np.ndarray]:
    """Rates at a threshold for each row of integer image weights (0/0 gives NaN)."""
    positive, negative = y == 1, y == 0
    tp = weights @ (positive & called)
    fn = weights @ (positive & ~called)
    fp = weights @ (negative & called)
    tn = weights @ (negative & ~called)
    return {
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "accuracy": _ratio(tp + tn, tp + tn + fp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }


def _weighted_auc(weights: np.ndarray, y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC for each row of image weights: the weighted Mann-Whitney statistic.

    ``AUC = sum_{i pos, j neg} w_i w_j ([s_i > s_j] + [s_i = s_j] / 2) / (W_pos W_neg)``,
    computed from the weight of each class at each distinct score: a positive at a level
    beats the negatives below it and ties with those at it. With integer weights every
    sum is exact in float64; weights of 1 give scikit-learn's AUC up to rounding.
    """
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    sorted_weights = weights[:, order]
    positive = (y[order] == 1).astype(np.float64)
    pos_at = np.add.reduceat(sorted_weights * positive, starts, axis=1)
    neg_at = np.add.reduceat(sorted_weights * (1.0 - positive), starts, axis=1)
    neg_below = np.cumsum(neg_at, axis=1) - neg_at
    wins = np.sum(pos_at * (neg_below + 0.5 * neg_at), axis=1)
    return _ratio(wins, pos_at.sum(axis=1) * neg_at.sum(axis=1))


def _all_metrics(
    weights: np.ndarray, y: np.ndarray, scores: np.ndarray, threshold: float
) -> dict[str, np.ndarray]:
    called = predict_labels(scores, threshold).astype(bool)  # refuses scores outside [0, 1]
    values = {"auc": _weighted_auc(weights, y, scores), **_weighted_rates(weights, y, called)}
    return {name: values[name] for name in BOOTSTRAP_METRICS}


def _percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    defined = values[~np.isnan(values)]
    if defined.size == 0:
        return float("nan"), float("nan")
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(defined, [tail, 100 - tail])
    return float(low), float(high)


def _method(n_resamples: int, seed: int, *, paired: bool = False) -> str:
    what = "paired person-level cluster bootstrap" if paired else "person-level cluster bootstrap"
    return f"{what}, {n_resamples} resamples, percentile, stratified by class, seed {seed}"


def _cluster_counts(clusters) -> dict[str, int]:
    return {
        CLASS_NAMES[label]: int(cluster.max()) + 1 for label, (_, cluster) in enumerate(clusters)
    }


# ---------------------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------------------


def person_bootstrap(
    y_true: Iterable[int],
    scores: Iterable[float],
    persons: Iterable[str],
    *,
    threshold: float,
    n_resamples: int = 2000,
    seed: int = DEFAULT_SEED,
    confidence: float = 0.95,
) -> dict:
    """Person-level percentile intervals for AUC and the rates at ``threshold``.

    Parameters
    ----------
    y_true : array-like of {0, 1}, shape (n,)
        1 = PNEUMONIA. Both classes must be present.
    scores : array-like of float in [0, 1], shape (n,)
        Probabilities of PNEUMONIA; an image is called PNEUMONIA when ``score >= threshold``.
    persons : iterable of str, length n
        The person each image comes from (:func:`helpers.data.group_id` of its file name).
    threshold : float
        The operating point, chosen on validation data.
    n_resamples : int
        Bootstrap resamples; at least :func:`minimum_resamples` of ``confidence`` (1000 at 95%).
    seed : int
        Seed of the resampling: the same seed gives the same intervals.
    confidence : float
        Coverage of the intervals, in (0, 1).

    Returns
    -------
    dict
        ``estimates``: for each name in :data:`BOOTSTRAP_METRICS` an
        :class:`~helpers.metrics.Estimate` (point value from the original data; percentile
        interval); ``undefined_resamples``:
        per metric, how many resamples left it undefined (PPV with no image called
        PNEUMONIA, NPV with none called NORMAL) -- those resamples are left out of that
        metric's interval, and a metric undefined on the original data has a NaN value and
        interval; ``method`` (a sentence naming resampling, count, interval kind and seed),
        ``n_resamples``, ``seed``, ``confidence``, ``threshold``, ``n_images`` and
        ``n_clusters`` (clusters per class).

    Raises
    ------
    MetricError
        Lengths differ, one class only, NaN scores or scores outside [0, 1], a missing
        person id, too few resamples, or a confidence outside (0, 1).

    Examples
    --------
    >>> y = [0, 0, 0, 0, 1, 1, 1, 1]
    >>> s = [0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9]
    >>> persons = ["IM-1", "IM-2", "IM-3", "IM-4", "person1", "person1", "person2", "person3"]
    >>> result = person_bootstrap(y, s, persons, threshold=0.5)
    >>> result["estimates"]["sensitivity"].value, result["n_clusters"]
    (0.75, {'NORMAL': 4, 'PNEUMONIA': 3})
    >>> result["method"]
    'person-level cluster bootstrap, 2000 resamples, percentile, stratified by class, seed 42'
    """
    _check_resampling(n_resamples, seed, confidence)
    y = _check_labels(y_true)
    values = _check_scores(scores, "scores", y.size)
    threshold = _check_threshold(threshold, "threshold")
    clusters = _clusters(y, persons)
    point = _all_metrics(np.ones((1, y.size)), y, values, threshold)
    resampled = _all_metrics(
        _resample_weights(clusters, y.size, n_resamples, seed), y, values, threshold
    )
    estimates, undefined = {}, {}
    for name in BOOTSTRAP_METRICS:
        value = float(point[name][0])
        low, high = (
            (float("nan"), float("nan"))
            if math.isnan(value)
            else _percentile_interval(resampled[name], confidence)
        )
        estimates[name] = Estimate(value, low, high)
        undefined[name] = int(np.isnan(resampled[name]).sum())
    return {
        "method": _method(n_resamples, seed),
        "n_resamples": int(n_resamples),
        "seed": int(seed),
        "confidence": float(confidence),
        "threshold": threshold,
        "n_images": int(y.size),
        "n_clusters": _cluster_counts(clusters),
        "estimates": estimates,
        "undefined_resamples": undefined,
    }


def bootstrap_p_value(differences: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "the difference is 0" from resampled differences.

    ``p = min(1, 2 * min(k_le + 1, k_ge + 1) / (n + 1))`` with ``k_le`` (``k_ge``) the
    resamples whose difference is ``<= 0`` (``>= 0``) out of ``n``: the smallest
    ``alpha`` at which the ``1 - alpha`` percentile interval leaves 0 out, with the ``+1``
    counting the observed data as one resample, so it is never 0 (at least
    ``2 / (n + 1)``).

    >>> bootstrap_p_value(np.array([0.1, 0.2, 0.3, -0.1]))
    0.8
    >>> bootstrap_p_value(np.zeros(9))
    1.0
    """
    differences = np.asarray(differences, dtype=np.float64)
    if differences.ndim != 1 or differences.size == 0 or np.isnan(differences).any():
        raise MetricError("differences must be a non-empty 1-D array without NaN")
    n = differences.size
    k_le, k_ge = int(np.sum(differences <= 0)), int(np.sum(differences >= 0))
    return float(min(1.0, 2 * (min(k_le, k_ge) + 1) / (n + 1)))


def paired_person_bootstrap(
    y_true: Iterable[int],
    scores_a: Iterable[float],
    scores_b: Iterable[float],
    persons: Iterable[str],
    *,
    threshold_a: float,
    threshold_b: float,
    n_resamples: int = 2000,
    seed: int = DEFAULT_SEED,
    confidence: float = 0.95,
) -> dict:
    """Difference a - b of two models on the same images, with person-level intervals.

    Both models are scored on the same resampled persons (one set of multiplicities per
    resample), so what they share cancels and the interval of the difference is narrower
    than the two marginal intervals suggest.

    Parameters
    ----------
    y_true, persons
        As in :func:`person_bootstrap`.
    scores_a, scores_b : array-like of float in [0, 1], shape (n,)
        The two models' probabilities of PNEUMONIA for the same images, in the same order.
    threshold_a, threshold_b : float
        Each model's own operating point.
    n_resamples, seed, confidence
        As in :func:`person_bootstrap`.

    Returns
    -------
    dict
        ``differences``: for each name in :data:`PAIRED_METRICS` a dict with the point
        values ``a`` and ``b``, ``difference`` (an :class:`~helpers.metrics.Estimate` of
        a - b with its percentile interval) and ``p_value`` (two-sided, :func:`bootstrap_p_value`);
        ``method``, ``p_value_method``, ``n_resamples``, ``seed``, ``confidence``,
        ``thresholds`` (``{"a": ..., "b": ...}``), ``n_images``, ``n_clusters``. AUC,
        sensitivity and specificity are defined in every resample (each holds both classes).

    Raises
    ------
    MetricError
        As :func:`person_bootstrap`, for either model's scores or threshold.

    Examples
    --------
    >>> y = [0, 0, 0, 1, 1, 1]
    >>> s = [0.1, 0.4, 0.6, 0.3, 0.7, 0.9]
    >>> same = paired_person_bootstrap(y, s, s, ["a", "b", "c", "d", "e", "f"],
    ...                                threshold_a=0.5, threshold_b=0.5)
    >>> same["differences"]["auc"]["difference"], same["differences"]["auc"]["p_value"]
    (Estimate(value=0.0, ci_low=0.0, ci_high=0.0), 1.0)
    """
    _check_resampling(n_resamples, seed, confidence)
    y = _check_labels(y_true)
    values_a = _check_scores(scores_a, "scores_a", y.size)
    values_b = _check_scores(scores_b, "scores_b", y.size)
    threshold_a = _check_threshold(threshold_a, "threshold_a")
    threshold_b = _check_threshold(threshold_b, "threshold_b")
    clusters = _clusters(y, persons)
    ones = np.ones((1, y.size))
    weights = _resample_weights(clusters, y.size, n_resamples, seed)
    point_a, point_b = (
        _all_metrics(ones, y, values_a, threshold_a),
        _all_metrics(ones, y, values_b, threshold_b),
    )
    boot_a, boot_b = (
        _all_metrics(weights, y, values_a, threshold_a),
        _all_metrics(weights, y, values_b, threshold_b),
    )
    differences = {}
    for name in PAIRED_METRICS:
        a, b = float(point_a[name][0]), float(point_b[name][0])
        resampled = boot_a[name] - boot_b[name]
        differences[name] = {
            "a": a,
            "b": b,
            "difference": Estimate(a - b, *_percentile_interval(resampled, confidence)),
            "p_value": bootstrap_p_value(resampled),
        }
    return {
        "method": _method(n_resamples, seed, paired=True),
        "p_value_method": (
            "two-sided bootstrap: min(1, 2 * (min(#diff <= 0, #diff >= 0) + 1) / (n + 1))"
        ),
        "n_resamples": int(n_resamples),
        "seed": int(seed),
        "confidence": float(confidence),
        "thresholds": {"a": threshold_a, "b": threshold_b},
        "n_images": int(y.size),
        "n_clusters": _cluster_counts(clusters),
        "differences": differences,
    }


def holm_adjust(p_values: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values [Holm1979]_, in the input's order.

    Sort the ``m`` p-values ascending; the ``i``-th smallest (from 1) becomes
    ``max over j <= i of min(1, (m - j + 1) p_(j))``. Rejecting where the adjusted value is
    below ``alpha`` controls the family-wise error rate at ``alpha``.

    Parameters
    ----------
    p_values : sequence of float in [0, 1]

    Returns
    -------
    numpy.ndarray
        Adjusted p-values, never smaller than the raw ones, capped at 1; monotone in the
        raw ones. An empty input gives an empty array.

    Raises
    ------
    MetricError
        If a p-value is NaN or outside [0, 1], or the input is not 1-D.

    Examples
    --------
    >>> holm_adjust([0.01, 0.04, 0.03]).tolist()
    [0.03, 0.06, 0.06]
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise MetricError(f"p_values must be 1-D, got shape {p.shape}")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise MetricError(f"p_values must lie in [0, 1] without NaN, got {p.tolist()}")
    m = p.size
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(stepped)
    return adjusted


def verdict(
    difference_interval: Estimate | Sequence[float], *, names: tuple[str, str] = ("a", "b")
) -> str:
    """What the interval of a difference a - b allows one to say about a against b.

    Parameters
    ----------
    difference_interval : Estimate or (low, high)
        The interval of a - b, e.g.
        ``paired_person_bootstrap(...)["differences"]["auc"]["difference"]``.
        Never two marginal intervals: whether they overlap decides nothing.
    names : (str, str)
        How to call a and b.

    Returns
    -------
    str
        "<a> improves on <b> (...)" when the whole interval lies above 0, "<a> is worse
        than <b> (...)" when it lies below 0, else "these data cannot tell (difference
        between LO and HI)". An interval touching 0 cannot tell.

    Raises
    ------
    MetricError
        If the interval is NaN or its low end exceeds its high end.

    Examples
    --------
    >>> verdict((0.012, 0.048), names=("model_6", "model_1"))
    'model_6 improves on model_1 (difference between 0.012 and 0.048)'
    >>> verdict(Estimate(0.01, -0.02, 0.04))
    'these data cannot tell (difference between -0.020 and 0.040)'
    """
    if isinstance(difference_interval, Estimate):
        low, high = difference_interval.ci_low, difference_interval.ci_high
    else:
        bounds = list(difference_interval)
        if len(bounds) != 2:
            raise MetricError(
                f"difference_interval must be (low, high), got {difference_interval!r}"
            )
        low, high = bounds
    low, high = float(low), float(high)
    if math.isnan(low) or math.isnan(high):
        raise MetricError("the difference's interval is undefined (NaN): no verdict")
    if low > high:
        raise MetricError(f"the interval's low end {low} exceeds its high end {high}")
    a, b = names
    between = f"difference between {low:.3f} and {high:.3f}"
    if low > 0:
        return f"{a} improves on {b} ({between})"
    if high < 0:
        return f"{a} is worse than {b} ({between})"
    return f"these data cannot tell ({between})"


def interval_table(results: Mapping[str, dict]) -> pd.DataFrame:
    """One row per model of :func:`person_bootstrap` results, for ``helpers.plots.plot_forest``.

    Parameters
    ----------
    results : mapping of model id -> result of :func:`person_bootstrap`

    Returns
    -------
    pandas.DataFrame
        Index: model ids in the given order; for each name in :data:`BOOTSTRAP_METRICS`
        the columns ``name``, ``name_ci_low``, ``name_ci_high`` (the flat convention of
        :func:`helpers.metrics.summary`) and ``method``. ``attrs["method"]`` holds the
        method when all results share it.
    """
    if not results:
        raise MetricError("results is empty: no model to tabulate")
    rows = {}
    for model_id, result in results.items():
        if "estimates" not in result:
            raise MetricError(
                f"results[{model_id!r}] is not a person_bootstrap result (no 'estimates')"
            )
        row = {}
        for name in BOOTSTRAP_METRICS:
            estimate = result["estimates"][name]
            row.update(
                {
                    name: estimate.value,
                    f"{name}_ci_low": estimate.ci_low,
                    f"{name}_ci_high": estimate.ci_high,
                }
            )
        row["method"] = result["method"]
        rows[model_id] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    methods = set(table["method"])
    if len(methods) == 1:
        table.attrs["method"] = methods.pop()
    return table


def _check_seed_runs(scores, thresholds, name: str, n: int) -> tuple[list, list]:
    scores, thresholds = list(scores), list(thresholds)
    if len(scores) < 2:
        raise MetricError(
            f"scores_{name} must hold the test scores of at least 2 seeds (training runs) of "
            f"recipe {name}, got {len(scores)}: one run says nothing about training noise"
        )
    if len(thresholds) != len(scores):
        raise MetricError(
            f"thresholds_{name} must give one threshold per seed ({len(scores)}), "
            f"got {len(thresholds)}"
        )
    return (
        [_check_scores(s, f"scores_{name}[{i}]", n) for i, s in enumerate(scores)],
        [_check_threshold(t, f"thresholds_{name}[{i}]") for i, t in enumerate(thresholds)],
    )


def seed_person_bootstrap(
    y_true: Iterable[int],
    scores_a: Sequence[Iterable[float]],
    scores_b: Sequence[Iterable[float]],
    persons: Iterable[str],
    *,
    thresholds_a: Sequence[float],
    thresholds_b: Sequence[float],
    n_resamples: int = 2000,
    seed: int = DEFAULT_SEED,
    confidence: float = 0.95,
) -> dict:
    """Difference of two *recipes*, each trained with several seeds, on the same test images:
    an interval that counts training noise as well as the persons.

    A nested (two-level) bootstrap: each resample draws, for each recipe separately, as many
    of its seeds as it has, with replacement (the training runs one could have got), and
    draws the test persons as :func:`paired_person_bootstrap` does, the same persons for
    every run (the runs are scored on the same images). The resampled difference is the
    mean over A's drawn seeds minus the mean over B's drawn seeds of each metric, each run at
    its own threshold. The point estimate is the mean over A's seeds minus the mean over
    B's.

    With few seeds the seeds' level is coarse: 3 seeds have 10 distinct draws, and a
    bootstrap of ``k`` values understates their variance by the factor ``(k - 1) / k``.
    The interval is a floor on the uncertainty rather than an exact one; more seeds firm
    it up.

    Parameters
    ----------
    y_true, persons
        As in :func:`person_bootstrap`.
    scores_a, scores_b : sequence of array-like of float in [0, 1], each shape (n,)
        Each recipe's test scores, one array per seed (at least 2 each), all for the same
        images in the same order.
    thresholds_a, thresholds_b : sequence of float
        Each run's own operating point (chosen on its own validation data), one per seed.
    n_resamples, seed, confidence
        As in :func:`person_bootstrap`. The seeds are drawn from a stream of their own
        (``numpy.random.default_rng([seed, 1])``), the persons as the other functions here.

    Returns
    -------
    dict
        ``differences``: for each name in :data:`PAIRED_METRICS` a dict with ``a`` and
        ``b`` (the means over seeds), ``difference`` (an :class:`~helpers.metrics.Estimate`
        of mean a - mean b with its percentile interval) and ``p_value``
        (:func:`bootstrap_p_value`); ``per_seed``: for each name, ``a`` and ``b`` (each
        seed's value, in the order given); ``n_seeds`` (``{"a": ..., "b": ...}``),
        ``method``, ``n_resamples``, ``seed``, ``confidence``, ``n_images``,
        ``n_clusters``.

    Raises
    ------
    MetricError
        As :func:`paired_person_bootstrap`, for any run's scores or threshold; fewer than 2
        seeds for a recipe; a threshold count that is not the seed count.

    Examples
    --------
    >>> y = [0, 0, 0, 1, 1, 1]
    >>> s = [0.1, 0.4, 0.6, 0.3, 0.7, 0.9]
    >>> same = seed_person_bootstrap(y, [s, s], [s, s], ["a", "b", "c", "d", "e", "f"],
    ...                              thresholds_a=[0.5, 0.5], thresholds_b=[0.5, 0.5])
    >>> same["differences"]["auc"]["difference"], same["n_seeds"]
    (Estimate(value=0.0, ci_low=0.0, ci_high=0.0), {'a': 2, 'b': 2})
    """
    _check_resampling(n_resamples, seed, confidence)
    y = _check_labels(y_true)
    runs_a, cuts_a = _check_seed_runs(scores_a, thresholds_a, "a", y.size)
    runs_b, cuts_b = _check_seed_runs(scores_b, thresholds_b, "b", y.size)
    clusters = _clusters(y, persons)
    ones = np.ones((1, y.size))
    weights = _resample_weights(clusters, y.size, n_resamples, seed)
    seed_draws = np.random.default_rng([seed, 1])
    columns = np.arange(n_resamples)

    def _recipe(runs, cuts):
        point = [_all_metrics(ones, y, s, t) for s, t in zip(runs, cuts)]
        boot = [_all_metrics(weights, y, s, t) for s, t in zip(runs, cuts)]
        # Row j of `drawn`: which seed is the j-th draw in each resample.
        drawn = seed_draws.integers(0, len(runs), size=(len(runs), n_resamples))
        per_seed = {name: [float(p[name][0]) for p in point] for name in PAIRED_METRICS}
        resampled = {
            name: np.stack([b[name] for b in boot])[drawn, columns].mean(axis=0)
            for name in PAIRED_METRICS
        }
        return per_seed, resampled

    per_seed_a, boot_a = _recipe(runs_a, cuts_a)
    per_seed_b, boot_b = _recipe(runs_b, cuts_b)
    differences = {}
    for name in PAIRED_METRICS:
        a, b = float(np.mean(per_seed_a[name])), float(np.mean(per_seed_b[name]))
        resampled = boot_a[name] - boot_b[name]
        differences[name] = {
            "a": a,
            "b": b,
            "difference": Estimate(a - b, *_percentile_interval(resampled, confidence)),
            "p_value": bootstrap_p_value(resampled),
        }
    return {
        "method": (
            f"nested bootstrap: each recipe's seeds drawn with replacement ({len(runs_a)} and "
            f"{len(runs_b)} seeds), then the same persons for every run "
            f"({_method(n_resamples, seed, paired=True)})"
        ),
        "n_resamples": int(n_resamples),
        "seed": int(seed),
        "confidence": float(confidence),
        "n_images": int(y.size),
        "n_clusters": _cluster_counts(clusters),
        "n_seeds": {"a": len(runs_a), "b": len(runs_b)},
        "per_seed": {
            name: {"a": per_seed_a[name], "b": per_seed_b[name]} for name in PAIRED_METRICS
        },
        "differences": differences,
    }
