"""Tests of helpers.bootstrap: person-level intervals behave as the design says they must.

Cases are synthetic, seeded and small (at most 600 images, 1000-2000 resamples): each test
runs in well under a second.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from helpers import bootstrap, metrics
from helpers.bootstrap import holm_adjust, paired_person_bootstrap, person_bootstrap, verdict
from helpers.metrics import Estimate, MetricError

# Tolerance for "the person-level interval is close to the image-level one" when every
# person has one image: an end of a 2000-resample percentile interval moves by about
# 0.002 from seed to seed here, the rates move in steps of 1/300, and the intervals are
# 0.05-0.09 wide; 0.01 leaves room for both and still catches a wrong resampling unit.
CLOSE_TO_IMAGE_LEVEL = 0.01


def scored_images(seed: int, n_per_class: int = 300, *, noise: float = 0.18):
    """Labels and rounded (so tied) scores of a model with AUC about 0.89."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n_per_class)
    scores = np.clip(rng.normal(0.35 + 0.3 * y, noise), 0, 1).round(3)
    return y, scores


def one_image_each(n: int) -> list[str]:
    return [f"person{i}" for i in range(n)]


def interval(result: dict, name: str) -> tuple[float, float]:
    estimate = result["estimates"][name]
    return estimate.ci_low, estimate.ci_high


# ---------------------------------------------------------------------------------------
# Point estimates and the weighted AUC
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_weighted_auc_equals_sklearn_with_sample_weights(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 80)
    y[:2] = [0, 1]
    scores = rng.integers(0, 12, 80) / 11  # many ties
    weights = rng.integers(0, 4, (5, 80)).astype(float)
    weights[:, :2] = 1  # both classes in every row
    got = bootstrap._weighted_auc(weights, y, scores)
    expected = [roc_auc_score(y, scores, sample_weight=w) for w in weights]
    assert got == pytest.approx(expected, abs=1e-12)


def test_point_estimates_are_those_of_the_original_data():
    y, scores = scored_images(0, 40)
    persons = [f"person{i // 3}" for i in range(y.size)]
    result = person_bootstrap(y, scores, persons, threshold=0.5, n_resamples=1000)
    rates = metrics.rates_at_threshold(y, scores, threshold=0.5)
    for name in metrics.RATE_NAMES:
        assert result["estimates"][name].value == pytest.approx(rates[name].value, abs=1e-15), name
    assert result["estimates"]["auc"].value == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    for name in bootstrap.BOOTSTRAP_METRICS:
        assert isinstance(result["estimates"][name], Estimate)


def test_result_records_its_method():
    y, scores = scored_images(0, 20)
    result = person_bootstrap(
        y, scores, one_image_each(y.size), threshold=0.5, n_resamples=1500, seed=7
    )
    assert result["method"] == (
        "person-level cluster bootstrap, 1500 resamples, percentile, stratified by class, seed 7"
    )
    assert (result["n_resamples"], result["seed"], result["confidence"]) == (1500, 7, 0.95)
    assert result["n_images"] == 40 and result["n_clusters"] == {"NORMAL": 20, "PNEUMONIA": 20}


# ---------------------------------------------------------------------------------------
# What the resampling unit does to the intervals
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_one_image_per_person_is_close_to_wilson_and_delong(seed):
    # With one image per person the stratified bootstrap of sensitivity (specificity) is a
    # binomial over the 300 PNEUMONIA (NORMAL) images: Wilson's interval; DeLong's variance
    # is the AUC's variance for fixed class sizes. (PPV and NPV are not compared: the
    # stratified design fixes the prevalence among them, Wilson does not.)
    y, scores = scored_images(seed)
    result = person_bootstrap(y, scores, one_image_each(y.size), threshold=0.5)
    rates = metrics.rates_at_threshold(y, scores, threshold=0.5)
    for name in ("sensitivity", "specificity"):
        assert interval(result, name) == pytest.approx(
            (rates[name].ci_low, rates[name].ci_high), abs=CLOSE_TO_IMAGE_LEVEL
        ), name
    auc = metrics.roc_auc_with_ci(y, scores)
    assert interval(result, "auc") == pytest.approx(
        (auc.ci_low, auc.ci_high), abs=CLOSE_TO_IMAGE_LEVEL
    )


def test_duplicating_every_image_leaves_person_level_intervals_unchanged():
    y, scores = scored_images(1, 60)
    persons = [f"person{i // 2}" for i in range(y.size)]  # two images each, one class each
    once = person_bootstrap(y, scores, persons, threshold=0.5, n_resamples=1000)
    twice = person_bootstrap(
        np.r_[y, y], np.r_[scores, scores], persons + persons, threshold=0.5, n_resamples=1000
    )
    assert twice["n_clusters"] == once["n_clusters"]
    assert twice["estimates"] == once["estimates"]  # exactly: every count doubles
    # The image-level intervals believe they got twice the evidence.
    for name in ("sensitivity", "specificity"):
        k = metrics.rates_at_threshold(y, scores, threshold=0.5)[name]
        k2 = metrics.rates_at_threshold(np.r_[y, y], np.r_[scores, scores], threshold=0.5)[name]
        assert k2.ci_high - k2.ci_low < 0.8 * (k.ci_high - k.ci_low), name
    auc = metrics.roc_auc_with_ci(y, scores)
    auc2 = metrics.roc_auc_with_ci(np.r_[y, y], np.r_[scores, scores])
    assert auc2.ci_high - auc2.ci_low < 0.8 * (auc.ci_high - auc.ci_low)


def test_persons_with_alike_images_widen_the_interval():
    # Each person's 5 images share a score: 5 images carry the evidence of one.
    rng = np.random.default_rng(3)
    person_y = np.repeat([0, 1], 40)
    person_scores = np.clip(rng.normal(0.35 + 0.3 * person_y, 0.18), 0, 1)
    y, scores = np.repeat(person_y, 5), np.repeat(person_scores, 5)
    persons = [f"person{i // 5}" for i in range(y.size)]
    clustered = person_bootstrap(y, scores, persons, threshold=0.5)
    image_level = metrics.roc_auc_with_ci(y, scores)
    width = clustered["estimates"]["auc"].ci_high - clustered["estimates"]["auc"].ci_low
    assert width > 1.8 * (image_level.ci_high - image_level.ci_low)  # about sqrt(5) = 2.24


def test_result_does_not_depend_on_image_order():
    y, scores = scored_images(2, 50)
    persons = np.array([f"person{i // 3}" for i in range(y.size)])
    order = np.random.default_rng(0).permutation(y.size)
    first = person_bootstrap(y, scores, persons, threshold=0.5, n_resamples=1000)
    shuffled = person_bootstrap(
        y[order], scores[order], persons[order], threshold=0.5, n_resamples=1000
    )
    assert shuffled["estimates"] == first["estimates"]


def test_every_resample_keeps_the_number_of_persons_of_each_class():
    y = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    persons = ["IM-1", "IM-1", "IM-2", "person1", "person2", "person2", "person2", "person3"]
    clusters = bootstrap._clusters(y, persons)
    weights = bootstrap._resample_weights(clusters, y.size, 1000, 0)
    # Drawn clusters per class = weight of each cluster's first image, summed over clusters.
    firsts = {0: [0, 2], 1: [3, 4, 7]}
    for images in firsts.values():
        assert (weights[:, images].sum(axis=1) == len(images)).all()
    # All of a drawn person's images go in together.
    assert (weights[:, 0] == weights[:, 1]).all()
    assert (weights[:, 4] == weights[:, 5]).all() and (weights[:, 5] == weights[:, 6]).all()


def test_a_person_in_both_classes_is_two_clusters():
    y = [0, 0, 1, 1, 1]
    persons = ["p1", "p2", "p1", "p3", "p3"]
    result = person_bootstrap(
        y, [0.1, 0.6, 0.7, 0.8, 0.4], persons, threshold=0.5, n_resamples=1000
    )
    assert result["n_clusters"] == {"NORMAL": 2, "PNEUMONIA": 2}


# ---------------------------------------------------------------------------------------
# Seeds and undefined values
# ---------------------------------------------------------------------------------------


def test_same_seed_same_interval_other_seed_slightly_different():
    y, scores = scored_images(4, 80)
    persons = [f"person{i // 2}" for i in range(y.size)]
    a = person_bootstrap(y, scores, persons, threshold=0.5, seed=1)
    b = person_bootstrap(y, scores, persons, threshold=0.5, seed=1)
    c = person_bootstrap(y, scores, persons, threshold=0.5, seed=2)
    assert a["estimates"] == b["estimates"]
    assert interval(a, "auc") != interval(c, "auc")
    for name in ("auc", "sensitivity", "specificity"):
        assert interval(c, name) == pytest.approx(interval(a, name), abs=0.02), name


def test_metric_undefined_on_the_data_is_nan_with_no_interval():
    y, scores = scored_images(0, 20)
    result = person_bootstrap(y, scores, one_image_each(y.size), threshold=1.01, n_resamples=1000)
    ppv = result["estimates"]["ppv"]
    assert math.isnan(ppv.value) and math.isnan(ppv.ci_low) and math.isnan(ppv.ci_high)
    assert result["undefined_resamples"]["ppv"] == 1000
    assert result["estimates"]["sensitivity"] == Estimate(0.0, 0.0, 0.0)


def test_resamples_where_a_metric_is_undefined_are_counted_and_left_out():
    # Only one NORMAL person (of 4) is called PNEUMONIA and no PNEUMONIA image is: PPV is
    # 0 where that person is drawn and undefined (0/0) where not, (3/4)^4 = 32% of draws.
    y = [0, 0, 0, 0, 1, 1, 1]
    scores = [0.9, 0.1, 0.2, 0.3, 0.4, 0.3, 0.2]
    result = person_bootstrap(y, scores, one_image_each(7), threshold=0.5, n_resamples=2000)
    undefined = result["undefined_resamples"]["ppv"]
    assert 0.27 * 2000 < undefined < 0.37 * 2000
    assert result["estimates"]["ppv"] == Estimate(0.0, 0.0, 0.0)
    assert result["undefined_resamples"]["sensitivity"] == result["undefined_resamples"]["auc"] == 0


# ---------------------------------------------------------------------------------------
# Paired differences
# ---------------------------------------------------------------------------------------


def test_model_against_itself_differs_by_exactly_zero():
    y, scores = scored_images(5, 50)
    persons = [f"person{i // 2}" for i in range(y.size)]
    result = paired_person_bootstrap(y, scores, scores, persons, threshold_a=0.5, threshold_b=0.5)
    for name in bootstrap.PAIRED_METRICS:
        entry = result["differences"][name]
        assert entry["difference"] == Estimate(0.0, 0.0, 0.0), name
        assert entry["p_value"] == 1.0
        assert verdict(entry["difference"]).startswith("these data cannot tell")


def test_paired_difference_finds_the_better_model():
    rng = np.random.default_rng(6)
    y = np.repeat([0, 1], 150)
    latent = rng.normal(0, 1, y.size)
    better = 1 / (1 + np.exp(-(2.5 * (y - 0.5) * 2 + 0.8 * latent)))
    worse = 1 / (1 + np.exp(-(1.0 * (y - 0.5) * 2 + 0.8 * latent + rng.normal(0, 1, y.size))))
    persons = [f"person{i // 2}" for i in range(y.size)]
    ab = paired_person_bootstrap(y, better, worse, persons, threshold_a=0.5, threshold_b=0.5)
    auc = ab["differences"]["auc"]
    assert auc["a"] == pytest.approx(roc_auc_score(y, better)) and auc["b"] == pytest.approx(
        roc_auc_score(y, worse)
    )
    assert auc["difference"].value == pytest.approx(auc["a"] - auc["b"])
    assert auc["difference"].ci_low > 0
    assert auc["p_value"] == pytest.approx(2 / 2001)  # no resample at or below 0
    assert verdict(auc["difference"], names=("better", "worse")).startswith(
        "better improves on worse"
    )
    # Swapping the models negates every resampled difference: same resamples for both.
    ba = paired_person_bootstrap(y, worse, better, persons, threshold_a=0.5, threshold_b=0.5)
    for name in bootstrap.PAIRED_METRICS:
        d, e = ab["differences"][name]["difference"], ba["differences"][name]["difference"]
        assert (e.value, e.ci_low, e.ci_high) == pytest.approx(
            (-d.value, -d.ci_high, -d.ci_low), abs=1e-12
        )
        assert ba["differences"][name]["p_value"] == ab["differences"][name]["p_value"]
    assert verdict(ba["differences"]["auc"]["difference"], names=("worse", "better")).startswith(
        "worse is worse than better"
    )


def test_paired_difference_interval_is_narrower_than_the_marginal_ones():
    # Two models that share most of their errors: their difference varies far less than
    # either one, which is why overlapping marginal intervals decide nothing.
    y, scores = scored_images(7, 100)
    rng = np.random.default_rng(7)
    other = np.clip(scores + rng.normal(0, 0.02, scores.size), 0, 1)
    persons = one_image_each(y.size)
    paired = paired_person_bootstrap(y, scores, other, persons, threshold_a=0.5, threshold_b=0.5)
    marginal = person_bootstrap(y, scores, persons, threshold=0.5)
    d = paired["differences"]["auc"]["difference"]
    assert d.ci_high - d.ci_low < 0.3 * (
        marginal["estimates"]["auc"].ci_high - marginal["estimates"]["auc"].ci_low
    )
    assert paired["thresholds"] == {"a": 0.5, "b": 0.5}
    assert paired["method"].startswith("paired person-level cluster bootstrap, 2000 resamples")


def test_bootstrap_p_value_by_hand():
    # 2 of 9 at or below 0, 8 at or above: p = 2 * (2 + 1) / 10 = 0.6.
    assert bootstrap.bootstrap_p_value(
        np.array([-0.1, 0.0, 0.1, 0.2, 0.3, 0.1, 0.2, 0.4, 0.5])
    ) == pytest.approx(0.6)
    assert bootstrap.bootstrap_p_value(np.full(99, 0.3)) == pytest.approx(2 / 100)
    with pytest.raises(MetricError):
        bootstrap.bootstrap_p_value(np.array([0.1, np.nan]))


# ---------------------------------------------------------------------------------------
# Holm and verdicts
# ---------------------------------------------------------------------------------------


def test_holm_hand_computed():
    # Sorted: 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04; running
    # maximum 0.02, 0.03, 0.06, 0.06; back in input order:
    adjusted = holm_adjust([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-15)
    assert holm_adjust([0.5, 0.6]).tolist() == [1.0, 1.0]  # 2 * 0.5 = 1, capped
    assert holm_adjust([0.2]).tolist() == [0.2]
    assert holm_adjust([]).size == 0


def test_holm_is_monotone_capped_and_never_below_raw():
    p = np.random.default_rng(0).uniform(0, 0.3, 12)
    adjusted = holm_adjust(p)
    order = np.argsort(p)
    assert (np.diff(adjusted[order]) >= 0).all()
    assert (adjusted >= p).all() and (adjusted <= 1).all()


@pytest.mark.parametrize("bad", [[0.1, np.nan], [0.1, 1.2], [-0.01], [[0.1, 0.2]]])
def test_holm_refuses_values_that_are_not_p_values(bad):
    with pytest.raises(MetricError, match="p_values"):
        holm_adjust(bad)


def test_verdict_reads_only_the_interval_of_the_difference():
    assert verdict((0.01, 0.05), names=("model_6", "model_1")) == (
        "model_6 improves on model_1 (difference between 0.010 and 0.050)"
    )
    assert (
        verdict(Estimate(-0.03, -0.05, -0.01))
        == "a is worse than b (difference between -0.050 and -0.010)"
    )
    assert verdict((-0.02, 0.03)) == "these data cannot tell (difference between -0.020 and 0.030)"
    assert verdict((0.0, 0.03)).startswith("these data cannot tell")  # touching 0 is not above it
    with pytest.raises(MetricError, match="NaN"):
        verdict(Estimate(0.1, float("nan"), float("nan")))
    with pytest.raises(MetricError, match="exceeds"):
        verdict((0.05, 0.01))
    with pytest.raises(MetricError, match="low, high"):
        verdict((0.01, 0.02, 0.03))


# ---------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------

Y = [0, 0, 1, 1]
S = [0.1, 0.6, 0.4, 0.9]
P = ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scores": [0.1, 0.6, 0.4]}, "scores must be 1-D with one score per image"),
        ({"persons": ["a", "b", "c"]}, "3 ids for 4 images"),
        ({"y_true": [1, 1, 1, 1]}, "only one class"),
        ({"y_true": [0, 1, 2, 1]}, "only 0 and 1"),
        ({"scores": [0.1, float("nan"), 0.4, 0.9]}, "scores hold 1 NaN"),
        ({"scores": [-0.5, 0.6, 0.4, 3.0]}, "probabilities in \\[0, 1\\]"),
        ({"persons": ["a", None, "c", "d"]}, "persons\\[1\\] is missing"),
        ({"persons": ["a", "b", float("nan"), "d"]}, "persons\\[2\\] is missing"),
        ({"n_resamples": 999}, "n_resamples=999 is too few .* at least 1000"),
        ({"n_resamples": 2000, "confidence": 0.99}, "at least 5000"),
        ({"n_resamples": 1500.0}, "n_resamples must be an integer"),
        ({"confidence": 1.0}, "confidence must be"),
        ({"seed": None}, "seed must be an integer"),
        ({"threshold": float("nan")}, "threshold must be finite"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(kwargs, message):
    args = {"y_true": Y, "scores": S, "persons": P, "threshold": 0.5, **kwargs}
    with pytest.raises(MetricError, match=message):
        person_bootstrap(args.pop("y_true"), args.pop("scores"), args.pop("persons"), **args)


def test_paired_bad_input_names_the_model():
    with pytest.raises(MetricError, match="scores_b hold 1 NaN"):
        paired_person_bootstrap(Y, S, [0.1, np.nan, 0.4, 0.9], P, threshold_a=0.5, threshold_b=0.5)
    with pytest.raises(MetricError, match="scores_a must be 1-D"):
        paired_person_bootstrap(Y, S[:3], S, P, threshold_a=0.5, threshold_b=0.5)
    with pytest.raises(MetricError, match="threshold_b must be a number"):
        paired_person_bootstrap(Y, S, S, P, threshold_a=0.5, threshold_b="0.5")
    with pytest.raises(MetricError, match="only one class"):
        paired_person_bootstrap([0, 0, 0, 0], S, S, P, threshold_a=0.5, threshold_b=0.5)


# ---------------------------------------------------------------------------------------
# The table for the forest plot
# ---------------------------------------------------------------------------------------


def test_interval_table_is_flat_like_summary():
    y, scores = scored_images(0, 20)
    persons = one_image_each(y.size)
    results = {
        m: person_bootstrap(y, scores, persons, threshold=t, n_resamples=1000)
        for m, t in (("model_1", 0.5), ("model_2", 0.4))
    }
    table = bootstrap.interval_table(results)
    assert list(table.index) == ["model_1", "model_2"]
    auc = results["model_2"]["estimates"]["auc"]
    assert tuple(table.loc["model_2", ["auc", "auc_ci_low", "auc_ci_high"]]) == (
        auc.value,
        auc.ci_low,
        auc.ci_high,
    )
    assert table.attrs["method"] == results["model_1"]["method"]
    with pytest.raises(MetricError, match="empty"):
        bootstrap.interval_table({})
    with pytest.raises(MetricError, match="model_3"):
        bootstrap.interval_table({"model_3": {"auc": 0.9}})
    assert isinstance(table, pd.DataFrame)
