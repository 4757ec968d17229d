"""Tests of helpers.metrics against scikit-learn, hand-computed cases and brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn.metrics import confusion_matrix, roc_auc_score

from helpers import metrics
from helpers.metrics import Estimate, MetricError

Z95 = stats.norm.ppf(0.975)


# ---------------------------------------------------------------------------------------
# Reference implementations written out in the tests
# ---------------------------------------------------------------------------------------


def wilson_by_hand(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def delong_textbook(y_true, scores) -> tuple[float, float]:
    """DeLong et al. (1988): structural components by the O(m*n) double loop."""
    y_true = np.asarray(y_true)
    scores = np.asarray(scores, dtype=float)
    pos = scores[y_true == 1]
    neg = scores[y_true == 0]
    m, n = len(pos), len(neg)

    def psi(x, y):
        return 1.0 if x > y else 0.5 if x == y else 0.0

    v10 = [sum(psi(x, y) for y in neg) / n for x in pos]
    v01 = [sum(psi(x, y) for x in pos) / m for y in neg]
    auc = sum(v10) / m
    s10 = sum((v - auc) ** 2 for v in v10) / (m - 1)
    s01 = sum((v - auc) ** 2 for v in v01) / (n - 1)
    return auc, s10 / m + s01 / n


def brute_threshold_for_sensitivity(y_true, scores, target):
    y_true = np.asarray(y_true)
    scores = np.asarray(scores, dtype=float)
    best = None
    for t in np.unique(scores):
        sensitivity = np.mean(scores[y_true == 1] >= t)
        if sensitivity >= target - 1e-12 and (best is None or t > best):
            best = t
    return best


def brute_youden(y_true, scores):
    """Max J over every unique score, J compared exactly (integers), highest on ties."""
    y_true = np.asarray(y_true)
    scores = np.asarray(scores, dtype=float)
    n_pos, n_neg = int(y_true.sum()), int((1 - y_true).sum())
    best_j, best_t = None, None
    for t in np.unique(scores):
        tp = int(np.sum((scores >= t) & (y_true == 1)))
        fp = int(np.sum((scores >= t) & (y_true == 0)))
        j = tp * n_neg - fp * n_pos  # J * n_pos * n_neg
        if best_j is None or j > best_j or (j == best_j and t > best_t):
            best_j, best_t = j, t
    return best_t


def random_case(seed, n=60, decimals=1):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    scores = np.round(np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1), decimals)  # many ties
    return y, scores


# ---------------------------------------------------------------------------------------
# Confusion counts and rates
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_confusion_counts_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 40)
    pred = rng.integers(0, 2, 40)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    assert metrics.confusion_counts(y, pred) == {"tn": tn, "fp": fp, "fn": fn, "tp": tp}


def test_confusion_counts_with_one_class_present():
    assert metrics.confusion_counts([1, 1, 1], [1, 0, 1]) == {"tn": 0, "fp": 0, "fn": 1, "tp": 2}
    assert metrics.confusion_counts([0, 0], [0, 0]) == {"tn": 2, "fp": 0, "fn": 0, "tp": 0}


def test_confusion_counts_refuses_labels_other_than_0_and_1():
    with pytest.raises(MetricError):
        metrics.confusion_counts([0, 1, 2], [0, 1, 2])  # today: counts sum to 2, not 3


def test_confusion_counts_mismatched_lengths_is_a_metric_error():
    with pytest.raises(MetricError):
        metrics.confusion_counts([0, 1, 1], [0, 1])


HAND_Y = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
HAND_S = [0.1, 0.2, 0.6, 0.3, 0.9, 0.8, 0.4, 0.7, 0.55, 0.2]


def test_rates_at_threshold_hand_computed():
    # At 0.5: NORMAL 0.1 0.2 0.3 -> tn, 0.6 -> fp; PNEUMONIA 0.9 0.8 0.7 0.55 -> tp, 0.4 0.2 -> fn.
    rates = metrics.rates_at_threshold(HAND_Y, HAND_S, threshold=0.5)
    assert {k: rates[k] for k in ("tn", "fp", "fn", "tp", "n")} == {
        "tn": 3,
        "fp": 1,
        "fn": 2,
        "tp": 4,
        "n": 10,
    }
    assert rates["threshold"] == 0.5
    expected = {
        "accuracy": (7, 10),
        "sensitivity": (4, 6),
        "specificity": (3, 4),
        "ppv": (4, 5),
        "npv": (3, 5),
        "f1": (8, 11),
    }
    for name, (k, n) in expected.items():
        est = rates[name]
        assert isinstance(est, Estimate)
        assert est.value == pytest.approx(k / n, abs=1e-15)
        lo, hi = wilson_by_hand(k, n)
        assert (est.ci_low, est.ci_high) == pytest.approx((lo, hi), abs=1e-9), name
    f1 = 2 * (4 / 5) * (4 / 6) / (4 / 5 + 4 / 6)
    assert rates["f1"].value == pytest.approx(f1)


def test_score_equal_to_threshold_counts_as_pneumonia():
    rates = metrics.rates_at_threshold(HAND_Y, HAND_S, threshold=0.55)
    assert (rates["tp"], rates["fn"]) == (4, 2)
    rates = metrics.rates_at_threshold(HAND_Y, HAND_S, threshold=0.5500001)
    assert (rates["tp"], rates["fn"]) == (3, 3)


def test_rate_with_empty_denominator_is_nan():
    rates = metrics.rates_at_threshold([0, 1, 1], [0.1, 0.2, 0.3], threshold=0.9)
    assert rates["tp"] == rates["fp"] == 0
    assert math.isnan(rates["ppv"].value) and math.isnan(rates["ppv"].ci_low)
    assert rates["sensitivity"].value == 0.0
    assert rates["specificity"].value == 1.0


def test_predict_labels_refuses_scores_outside_0_1():
    assert metrics.predict_labels([0.0, 0.49, 0.5, 1.0], 0.5).tolist() == [0, 0, 1, 1]
    with pytest.raises(MetricError, match="sigmoid"):
        metrics.predict_labels([-1.3, 0.2, 2.7], 0.5)  # logits
    with pytest.raises(MetricError):
        metrics.predict_labels([0.2, 1.0001], 0.5)
    with pytest.raises(MetricError):
        metrics.predict_labels([0.2, float("nan")], 0.5)
    with pytest.raises(MetricError):
        metrics.rates_at_threshold([0, 1], [-0.5, 3.0], threshold=0.5)


# ---------------------------------------------------------------------------------------
# Wilson intervals
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "k, n, low, high",
    [(8, 10, 0.4902, 0.9433), (0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0), (1, 2, 0.0945, 0.9055)],
)
def test_wilson_interval_hand_computed(k, n, low, high):
    lo, hi = metrics.wilson_interval(k, n)
    assert (round(lo, 4), round(hi, 4)) == (low, high)
    assert (lo, hi) == pytest.approx(wilson_by_hand(k, n), abs=1e-12)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_wilson_interval_edge_cases():
    assert all(math.isnan(v) for v in metrics.wilson_interval(0, 0))
    with pytest.raises(MetricError):
        metrics.wilson_interval(11, 10)
    with pytest.raises(MetricError):
        metrics.wilson_interval(-1, 10)
    lo90, hi90 = metrics.wilson_interval(8, 10, confidence=0.90)
    lo95, hi95 = metrics.wilson_interval(8, 10)
    assert lo95 < lo90 < 0.8 < hi90 < hi95
    assert (lo90, hi90) == pytest.approx(wilson_by_hand(8, 10, stats.norm.ppf(0.95)), abs=1e-12)


def test_estimate_formats_with_interval():
    est = Estimate(0.5, 0.25, 0.75)
    assert f"{est}" == "0.500 (0.250-0.750)"
    assert f"{est:.1f}" == "0.5 (0.2-0.8)"
    assert est.as_dict() == {"value": 0.5, "ci_low": 0.25, "ci_high": 0.75}


# ---------------------------------------------------------------------------------------
# ROC AUC and DeLong
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_auc_equals_sklearn(seed):
    y, s = random_case(seed, decimals=2 if seed % 2 else 1)
    assert metrics.roc_auc_with_ci(y, s).value == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auc_docstring_case():
    est = metrics.roc_auc_with_ci([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert est.value == 0.75
    assert 0.0 <= est.ci_low <= 0.75 <= est.ci_high <= 1.0


@pytest.mark.parametrize("seed", range(6))
def test_fast_delong_variance_equals_textbook(seed):
    y, s = random_case(seed, n=30 + 7 * seed)
    auc, var = delong_textbook(y, s)
    assert metrics.delong_variance(y, s) == pytest.approx(var, rel=1e-10, abs=1e-15)
    est = metrics.roc_auc_with_ci(y, s)
    assert est.value == pytest.approx(auc, abs=1e-12)
    half = Z95 * math.sqrt(var)
    assert est.ci_low == pytest.approx(max(0.0, auc - half), abs=1e-10)
    assert est.ci_high == pytest.approx(min(1.0, auc + half), abs=1e-10)


def test_delong_hand_case():
    # pos = [0.8, 0.35], neg = [0.1, 0.4]: V10 = [1, 0.5], V01 = [1, 0.5]; AUC 0.75,
    # S10 = S01 = 0.125, var = 0.125 / 2 + 0.125 / 2 = 0.125.
    assert metrics.delong_variance([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.125)


def test_constant_score_gives_auc_one_half_and_zero_variance():
    y = [0, 1, 0, 1, 1, 0]
    est = metrics.roc_auc_with_ci(y, [0.3] * 6)
    assert (est.value, est.ci_low, est.ci_high) == (0.5, 0.5, 0.5)
    assert metrics.delong_variance(y, [0.3] * 6) == 0.0


def test_perfect_separation_clips_interval_at_one():
    est = metrics.roc_auc_with_ci([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    assert est.value == 1.0 and est.ci_high == 1.0 and est.ci_low <= 1.0


def test_auc_with_a_single_positive_has_a_value_but_no_interval():
    # DeLong's variance needs two images of each class: the interval is NaN, not too narrow.
    est = metrics.roc_auc_with_ci([0, 0, 0, 1], [0.1, 0.5, 0.3, 0.4])
    assert est.value == pytest.approx(roc_auc_score([0, 0, 0, 1], [0.1, 0.5, 0.3, 0.4]))
    assert math.isnan(est.ci_low) and math.isnan(est.ci_high)


def test_delong_variance_and_auc_interval_agree_with_a_single_positive():
    import warnings

    y, s = [0, 0, 0, 1], [0.1, 0.5, 0.3, 0.4]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        var = metrics.delong_variance(y, s)
        est = metrics.roc_auc_with_ci(y, s)
    if math.isnan(var):
        assert math.isnan(est.ci_low) and math.isnan(est.ci_high)
    else:
        assert est.ci_high - est.ci_low == pytest.approx(2 * Z95 * math.sqrt(var))


# ---------------------------------------------------------------------------------------
# Thresholds chosen on validation data
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("target", [0.5, 0.8, 0.95, 1.0])
def test_threshold_for_sensitivity_is_the_highest_reaching_the_target(seed, target):
    y, s = random_case(seed)
    got = metrics.threshold_for_sensitivity(y, s, target=target)
    assert got == brute_threshold_for_sensitivity(y, s, target)
    assert np.mean(s[y == 1] >= got) >= target
    higher = s[s > got]
    if higher.size:  # the next score up misses the target
        assert np.mean(s[y == 1] >= higher.min()) < target


@pytest.mark.parametrize("seed", range(8))
def test_youden_threshold_maximises_j(seed):
    y, s = random_case(seed, decimals=1 + seed % 2)
    assert metrics.youden_threshold(y, s) == brute_youden(y, s)


def test_threshold_docstring_cases():
    y, s = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    assert metrics.youden_threshold(y, s) == 0.8
    assert metrics.threshold_for_sensitivity(y, s, target=0.95) == 0.35
    assert metrics.threshold_for_sensitivity(y, s, target=0.5) == 0.8


def test_choose_threshold_methods():
    y, s = random_case(1)
    chosen = metrics.choose_threshold(y, s, target=0.9)
    assert chosen == {
        "threshold": brute_threshold_for_sensitivity(y, s, 0.9),
        "method": "sensitivity",
        "target_sensitivity": 0.9,
    }
    assert metrics.choose_threshold(y, s, method="youden") == {
        "threshold": brute_youden(y, s),
        "method": "youden",
    }
    with pytest.raises(MetricError, match="method"):
        metrics.choose_threshold(y, s, method="f1")
    for target in (0.0, -0.1, 1.5):
        with pytest.raises(MetricError, match="target"):
            metrics.threshold_for_sensitivity(y, s, target=target)


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------


ONE_CLASS = ([1, 1, 1, 1], [0.2, 0.4, 0.6, 0.8])
WITH_NAN = ([0, 1, 0, 1], [0.2, float("nan"), 0.6, 0.8])
MISMATCHED = ([0, 1, 0, 1], [0.2, 0.4, 0.6])


@pytest.mark.parametrize(
    "call",
    [
        lambda y, s: metrics.roc_auc_with_ci(y, s),
        lambda y, s: metrics.delong_variance(y, s),
        lambda y, s: metrics.threshold_for_sensitivity(y, s),
        lambda y, s: metrics.youden_threshold(y, s),
        lambda y, s: metrics.choose_threshold(y, s),
        lambda y, s: metrics.summary(y, s, threshold=0.5),
    ],
    ids=["auc", "delong", "sensitivity", "youden", "choose", "summary"],
)
@pytest.mark.parametrize(
    "case", [ONE_CLASS, WITH_NAN, MISMATCHED], ids=["one-class", "nan", "mismatched"]
)
def test_undefined_inputs_raise_metric_error(call, case):
    with pytest.raises(MetricError):
        call(*case)


def test_error_messages_say_what_is_wrong():
    with pytest.raises(MetricError, match="only one class"):
        metrics.roc_auc_with_ci(*ONE_CLASS)
    with pytest.raises(MetricError, match="NaN"):
        metrics.rates_at_threshold(*WITH_NAN, threshold=0.5)
    with pytest.raises(MetricError, match="same length"):
        metrics.rates_at_threshold(*MISMATCHED, threshold=0.5)
    with pytest.raises(MetricError, match="0 and 1"):
        metrics.roc_auc_with_ci([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(MetricError, match="empty"):
        metrics.rates_at_threshold([], [], threshold=0.5)
    with pytest.raises(MetricError, match="1-D"):
        metrics.roc_auc_with_ci([[0, 1]], [[0.1, 0.2]])


@pytest.mark.parametrize("func", [metrics.threshold_for_sensitivity, metrics.youden_threshold])
def test_all_equal_scores_cannot_choose_a_threshold(func):
    with pytest.raises(MetricError, match="equal"):
        func([0, 1, 0, 1], [0.7, 0.7, 0.7, 0.7])


def test_rates_are_defined_for_one_class():
    rates = metrics.rates_at_threshold(*ONE_CLASS, threshold=0.5)
    assert rates["sensitivity"].value == 0.5
    assert math.isnan(rates["specificity"].value)


# ---------------------------------------------------------------------------------------
# summary and report
# ---------------------------------------------------------------------------------------


def test_summary_is_flat_and_consistent():
    flat = metrics.summary(HAND_Y, HAND_S, threshold=0.5)
    rates = metrics.rates_at_threshold(HAND_Y, HAND_S, threshold=0.5)
    auc = metrics.roc_auc_with_ci(HAND_Y, HAND_S)
    assert flat["threshold"] == 0.5
    assert (flat["auc"], flat["auc_ci_low"], flat["auc_ci_high"]) == (
        auc.value,
        auc.ci_low,
        auc.ci_high,
    )
    for name in metrics.RATE_NAMES:
        if name == "f1":
            continue
        assert (flat[name], flat[f"{name}_ci_low"], flat[f"{name}_ci_high"]) == (
            rates[name].value,
            rates[name].ci_low,
            rates[name].ci_high,
        )
    assert flat["tp"] + flat["fp"] + flat["tn"] + flat["fn"] == flat["n"] == 10
    no_interval = {"f1_ci_low", "f1_ci_high"}
    assert all(isinstance(v, (int, float)) for k, v in flat.items() if k not in no_interval)


def test_summary_keeps_f1_but_gives_it_no_image_level_interval():
    # F1 = 2 tp / (2 tp + fp + fn) = 8 / 11 here; a Wilson interval of "8 of 11" would
    # count the 4 true positives twice, so summary() gives none (None, null in JSON).
    flat = metrics.summary(HAND_Y, HAND_S, threshold=0.5)
    assert flat["f1"] == pytest.approx(8 / 11, abs=1e-15)
    assert flat["f1_ci_low"] is None and flat["f1_ci_high"] is None
    assert (
        flat["ppv_ci_low"]
        == metrics.rates_at_threshold(HAND_Y, HAND_S, threshold=0.5)["ppv"].ci_low
    )


def test_classification_report_names_the_classes():
    report = metrics.classification_report(HAND_Y, HAND_S, threshold=0.5)
    assert "NORMAL" in report and "PNEUMONIA" in report
    assert "0.667" in report  # PNEUMONIA recall 4/6


# ---------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------

labels_and_levels = st.integers(2, 40).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 1), min_size=n, max_size=n),
        st.lists(st.integers(0, 20), min_size=n, max_size=n),  # 21 levels: ties are common
    )
)


@settings(max_examples=80, deadline=None)
@given(labels_and_levels, st.integers(0, 21))
def test_every_rate_lies_in_0_1_and_inside_its_interval(case, cut):
    y, levels = case
    scores = np.array(levels) / 20
    rates = metrics.rates_at_threshold(y, scores, threshold=cut / 20)
    assert rates["tn"] + rates["fp"] + rates["fn"] + rates["tp"] == rates["n"] == len(y)
    for name in metrics.RATE_NAMES:
        est = rates[name]
        if math.isnan(est.value):
            assert math.isnan(est.ci_low) and math.isnan(est.ci_high)
            continue
        assert 0.0 <= est.ci_low <= est.value <= est.ci_high <= 1.0, name


@settings(max_examples=80, deadline=None)
@given(labels_and_levels)
def test_auc_is_rank_based(case):
    y, levels = case
    y = np.array(y)
    if y.min() == y.max():
        y[0] = 1 - y[0]
    scores = np.array(levels) / 20
    auc = metrics.roc_auc_with_ci(y, scores)
    if min(y.sum(), (1 - y).sum()) >= 2:
        assert 0.0 <= auc.ci_low <= auc.value <= auc.ci_high <= 1.0
    else:  # one image of a class: no DeLong interval
        assert math.isnan(auc.ci_low) and math.isnan(auc.ci_high)
    assert auc.value == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    for transform in (lambda s: np.exp(3 * s), lambda s: s**3 + 10, lambda s: np.log1p(s) * 100):
        assert metrics.roc_auc_with_ci(y, transform(scores)).value == pytest.approx(
            auc.value, abs=1e-12
        )
    assert metrics.roc_auc_with_ci(y, -scores).value == pytest.approx(1 - auc.value, abs=1e-12)
    if min(y.sum(), (1 - y).sum()) >= 2:  # DeLong's variance needs two of each class
        var = metrics.delong_variance(y, scores)
        assert metrics.delong_variance(y, -scores) == pytest.approx(var, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1)), min_size=1, max_size=50))
def test_confusion_matrix_sums_to_n(pairs):
    y, pred = zip(*pairs)
    counts = metrics.confusion_counts(y, pred)
    assert sum(counts.values()) == len(pairs)
    assert counts["tp"] + counts["fn"] == sum(y)
    assert counts["tp"] + counts["fp"] == sum(pred)


@settings(max_examples=60, deadline=None)
@given(labels_and_levels, st.sampled_from([0.5, 0.8, 0.9, 0.95, 1.0]))
def test_thresholds_match_brute_force(case, target):
    y, levels = case
    y = np.array(y)
    scores = np.array(levels) / 20
    if y.min() == y.max() or scores.min() == scores.max():
        with pytest.raises(MetricError):
            metrics.threshold_for_sensitivity(y, scores, target=target)
        return
    assert metrics.threshold_for_sensitivity(
        y, scores, target=target
    ) == brute_threshold_for_sensitivity(y, scores, target)
    # Youden's J of the chosen threshold is the maximum (exact ties: see the next test).
    got = metrics.youden_threshold(y, scores)
    assert youden_j(y, scores, got) == pytest.approx(
        youden_j(y, scores, brute_youden(y, scores)), abs=1e-12
    )


def youden_j(y, scores, t):
    return np.mean(scores[y == 1] >= t) + np.mean(scores[y == 0] < t) - 1


def test_youden_exact_tie_returns_the_highest_threshold():
    # 14 NORMAL (10 at 0, 4 at 0.05), 21 PNEUMONIA (10 at 0, 6 at 0.05, 5 at 0.1).
    # J(0.1) = 5/21 and J(0.05) = 11/21 - 4/14 = 5/21: a tie, so 0.1 is the answer.
    y = np.array([0] * 14 + [1] * 21)
    s = np.array([0.0] * 10 + [0.05] * 4 + [0.0] * 10 + [0.05] * 6 + [0.1] * 5)
    assert brute_youden(y, s) == 0.1
    assert metrics.youden_threshold(y, s) == 0.1


# ---------------------------------------------------------------------------------------
# Paired comparisons
# ---------------------------------------------------------------------------------------


def test_mcnemar_known_results():
    y = np.ones(12, dtype=int)
    a = np.array([1] * 10 + [0] * 2)
    b = np.array([0] * 10 + [1] * 2)
    test = metrics.mcnemar_test(y, a, b)
    # Exact two-sided binomial: 2 * P(X <= 2 | n = 12, p = 1/2) = 2 * 79 / 4096.
    assert test.p_value == pytest.approx(2 * 79 / 4096)
    assert test.detail == {"only_a_right": 10, "only_b_right": 2, "both_right": 0, "both_wrong": 0}
    assert test.difference == pytest.approx(10 / 12 - 2 / 12)
    same = metrics.mcnemar_test([0, 1, 1], [0, 1, 0], [0, 1, 0])
    assert same.p_value == 1.0 and same.detail["only_a_right"] == same.detail["only_b_right"] == 0
    swapped = metrics.mcnemar_test(y, b, a)
    assert swapped.p_value == pytest.approx(test.p_value)
    with pytest.raises(MetricError, match="one length"):
        metrics.mcnemar_test([0, 1], [0, 1, 1], [0, 1])


def _delong_covariance_by_definition(y, a, b):
    """DeLong's covariance from structural components computed pair by pair (O(m n))."""
    pos, neg = y == 1, y == 0

    def psi(x, z):
        return (x > z) + 0.5 * (x == z)

    comps = []
    for s in (a, b):
        sp, sn = s[pos], s[neg]
        v10 = np.array([np.mean(psi(x, sn)) for x in sp])
        v01 = np.array([np.mean(psi(sp, z)) for z in sn])
        comps.append((v10, v01))
    m, n = pos.sum(), neg.sum()
    s10 = np.cov(np.vstack([comps[0][0], comps[1][0]]))
    s01 = np.cov(np.vstack([comps[0][1], comps[1][1]]))
    return s10 / m + s01 / n


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delong_test_matches_the_definition(seed):
    rng = np.random.default_rng(seed)
    y = np.array([0] * 30 + [1] * 40)
    a = np.round(y * 0.8 + rng.normal(0, 0.6, y.size), 1)  # rounded: ties occur
    b = np.round(y * 0.5 + rng.normal(0, 0.6, y.size), 1)
    test = metrics.delong_test(y, a, b)
    cov = _delong_covariance_by_definition(y, a, b)
    se = np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    diff = roc_auc_score(y, a) - roc_auc_score(y, b)
    assert test.difference == pytest.approx(diff, abs=1e-12)
    assert test.detail["se_difference"] == pytest.approx(se, rel=1e-9)
    assert test.statistic == pytest.approx(diff / se, rel=1e-9)
    assert test.p_value == pytest.approx(2 * stats.norm.sf(abs(diff / se)), rel=1e-9)
    # Each AUC's own variance agrees with delong_variance.
    assert cov[0, 0] == pytest.approx(metrics.delong_variance(y, a), rel=1e-9)


def test_delong_test_of_a_model_with_itself_and_a_monotone_copy():
    rng = np.random.default_rng(3)
    y = np.array([0] * 20 + [1] * 20)
    a = y + rng.normal(0, 1, 40)
    for b in (a, np.exp(a)):
        test = metrics.delong_test(y, a, b)
        assert test.difference == 0.0 and test.p_value == 1.0
    with pytest.raises(MetricError, match="two images of each class"):
        metrics.delong_test([0, 1, 1], [0.1, 0.5, 0.9], [0.2, 0.3, 0.4])


def test_sensitivity_by_kind_counts_from_file_names():
    paths = [
        "test/PNEUMONIA/person1_bacteria_1.jpeg",
        "test/PNEUMONIA/person2_bacteria_2.jpeg",
        "test/PNEUMONIA/person3_virus_3.jpeg",
        "test/NORMAL/IM-0001-0001.jpeg",
        "test/PNEUMONIA/odd_name.jpeg",
    ]
    y = [1, 1, 1, 0, 1]
    scores = [0.9, 0.2, 0.7, 0.8, 0.6]
    table = metrics.sensitivity_by_kind(paths, y, scores, threshold=0.5)
    assert table.index.tolist() == ["bacteria", "virus", "unknown"]
    assert table.loc["bacteria", ["images", "detected"]].tolist() == [2, 1]
    assert table.loc["virus", "sensitivity"] == 1.0
    low, high = metrics.wilson_interval(1, 2)
    assert table.loc["bacteria", ["ci_low", "ci_high"]].tolist() == pytest.approx([low, high])
