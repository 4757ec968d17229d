"""Tests of helpers.train: seeding, parameter checks, one-epoch runs and the results folder."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

keras = pytest.importorskip("keras")

from helpers import config, data, evaluate, metrics, models, train  # noqa: E402
from helpers.results import PREDICTION_COLUMNS  # noqa: E402

# Keras' TensorFlow backend trips a NumPy 2 deprecation inside fit/predict; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

RESULT_FILES = {"predictions_val.csv", "predictions_test.csv", "metrics.json", "history.csv", "model.keras"}
RATES = ("auc", "sensitivity", "specificity", "ppv", "npv", "f1", "accuracy")


def one_epoch_run(model_id, folder_root, results_dir, **build_kwargs):
    xrays = data.load_chest_xrays(folder_root, image_size=32, results_dir=results_dir)
    built = train.build(model_id, xrays, seed=0, **build_kwargs)
    run = train.fit(built, xrays, epochs=1, batch_size=16, seed=0, verbose=0)
    result = train.evaluate_and_save(run, xrays, results_dir=results_dir)
    folder = results_dir / model_id
    return SimpleNamespace(
        xrays=xrays,
        run=run,
        result=result,
        results_dir=results_dir,
        folder=folder,
        metrics=json.loads((folder / "metrics.json").read_text()),
        split_csv=pd.read_csv(results_dir / "split.csv"),
    )


@pytest.fixture(scope="module")
def model_1_run(xray_folder, tmp_path_factory):
    return one_epoch_run("model_1", xray_folder.root, tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def model_5_fit(xray_folder, tmp_path_factory):
    """model_5 without pretrained weights, trained one epoch (not yet evaluated)."""
    results_dir = tmp_path_factory.mktemp("results5")
    xrays = data.load_chest_xrays(xray_folder.root, image_size=32, results_dir=results_dir)
    built = train.build("model_5", xrays, seed=0, base_weights=None)
    run = train.fit(built, xrays, epochs=1, batch_size=16, seed=0, verbose=0)
    return SimpleNamespace(xrays=xrays, run=run, results_dir=results_dir, folder=results_dir / "model_5")


# ---------------------------------------------------------------------------------------
# Parameters and seeds
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"epochs": -1}, "epochs"),
        ({"epochs": 1.5}, "epochs"),
        ({"epochs": True}, "epochs"),
        ({"epochs": "10"}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": -16}, "batch_size"),
        ({"seed": -1}, "seed"),
        ({"seed": 0.5}, "seed"),
    ],
)
def test_check_training_parameters_refuses(kwargs, name):
    params = {"epochs": 1, "batch_size": 16, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=name):
        train.check_training_parameters(**params)


def test_check_training_parameters_accepts_valid_values():
    train.check_training_parameters(epochs=0, batch_size=1, seed=0)
    train.check_training_parameters(epochs=np.int64(10), batch_size=128, seed=42)


@pytest.mark.parametrize("seed", [-1, 1.5, True, "42"])
def test_set_seed_refuses_bad_seeds(seed):
    with pytest.raises(ValueError, match="seed"):
        train.set_seed(seed)


def test_same_seed_gives_same_initial_weights(xrays32):
    first = train.build("model_1", xrays32, seed=3).model.get_weights()
    second = train.build("model_1", xrays32, seed=3).model.get_weights()
    other = train.build("model_1", xrays32, seed=4).model.get_weights()
    assert len(first) == len(second) == 10
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_same_seed_gives_same_split(xray_folder):
    a = data.load_chest_xrays(xray_folder.root, image_size=16, seed=3)
    b = data.load_chest_xrays(xray_folder.root, image_size=16, seed=3)
    pd.testing.assert_frame_equal(a.table, b.table)
    for name in ("train", "val", "test"):
        assert a[name].paths == b[name].paths
        assert np.array_equal(a[name].images, b[name].images)


def test_build_refuses_unknown_model_before_seeding(xrays32, monkeypatch):
    monkeypatch.setattr(train, "set_seed", lambda seed: pytest.fail("seeded before checking the id"))
    with pytest.raises(ValueError, match="model_9.*known ids"):
        train.build("model_9", xrays32)


def test_build_follows_the_data_channels(xray_folder):
    gray = data.load_chest_xrays(xray_folder.root, image_size=32, color_mode="grayscale", seed=0)
    built = train.build("model_1", gray, seed=0)
    assert built.model.input_shape == (None, 32, 32, 1)


def test_fit_refuses_bad_parameters_before_training(xrays32):
    built = train.build("model_1", xrays32, seed=0)
    before = built.model.get_weights()
    for kwargs in ({"epochs": -1}, {"batch_size": 0}, {"seed": -3}):
        with pytest.raises(ValueError):
            train.fit(built, xrays32, **{"epochs": 1, "batch_size": 16, "seed": 0, "verbose": 0, **kwargs})
    assert all(np.array_equal(a, b) for a, b in zip(before, built.model.get_weights()))


def test_same_seed_gives_same_trained_weights(xrays32):
    runs = []
    for _ in range(2):
        built = train.build("model_1", xrays32, seed=1)
        runs.append(train.fit(built, xrays32, epochs=1, batch_size=16, seed=1, verbose=0, use_class_weights=True))
    a, b = (r.model.get_weights() for r in runs)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    pd.testing.assert_frame_equal(runs[0].history, runs[1].history)
    assert runs[0].class_weight == data.class_weights(xrays32.train.labels)


# ---------------------------------------------------------------------------------------
# A one-epoch model_1 run and its results folder
# ---------------------------------------------------------------------------------------


def test_results_folder_holds_exactly_the_contract_files(model_1_run):
    assert {p.name for p in model_1_run.folder.iterdir()} == RESULT_FILES
    # Nothing else beside it: no staging or backup folders, no temporary files.
    assert {p.name for p in model_1_run.results_dir.iterdir()} == {"split.csv", "model_1"}
    assert model_1_run.result.folder == model_1_run.folder


def test_split_csv_matches_the_loaded_split(model_1_run):
    split_csv = model_1_run.split_csv
    assert list(split_csv.columns) == ["path", "split", "label"]
    pd.testing.assert_frame_equal(split_csv, model_1_run.xrays.table[["path", "split", "label"]])
    for name in ("train", "val", "test"):
        assert split_csv[split_csv.split == name].path.tolist() == model_1_run.xrays[name].paths


@pytest.mark.parametrize("name", ["val", "test"])
def test_predictions_files_follow_the_contract(model_1_run, name):
    frame = pd.read_csv(model_1_run.folder / f"predictions_{name}.csv")
    assert list(frame.columns) == PREDICTION_COLUMNS == ["path", "label", "score"]
    rows = model_1_run.split_csv[model_1_run.split_csv.split == name]
    assert len(frame) == len(rows) == len(model_1_run.xrays[name])
    assert frame.path.tolist() == rows.path.tolist()
    assert frame.label.tolist() == rows.label.tolist()
    assert frame.score.between(0, 1).all()
    in_memory = getattr(model_1_run.result, name)
    np.testing.assert_allclose(frame.score, in_memory.scores, rtol=0, atol=1e-12)
    assert frame.score.nunique() > 1


def test_metrics_json_contents(model_1_run):
    m = model_1_run.metrics
    assert m["model_id"] == "model_1"
    assert m["output"] == "probability"
    assert m["base_weights"] == "none"
    assert m["epochs"] == 1
    assert isinstance(m["training_seconds"], float) and m["training_seconds"] > 0
    params = m["parameters"]
    assert params["image_size"] == 32 and params["color_mode"] == "rgb"
    assert params["epochs"] == 1 and params["batch_size"] == 16 and params["seed"] == 0
    assert params["optimizer"] == "rmsprop" and params["learning_rate"] == pytest.approx(1e-4)
    assert params["target_sensitivity"] == config.TARGET_SENSITIVITY
    assert params["use_class_weights"] is False
    assert params["data_dir"] == str(model_1_run.xrays.train.data_dir)
    threshold = m["threshold"]
    assert threshold["method"] == "sensitivity" and threshold["chosen_on"] == "validation"
    assert threshold["target_sensitivity"] == config.TARGET_SENSITIVITY
    assert 0.0 <= threshold["threshold"] <= 1.0
    test = m["test"]
    for name in RATES:
        value, low, high = test[name], test[f"{name}_ci_low"], test[f"{name}_ci_high"]
        if value is None:  # NaN is written as null (e.g. PPV with no positive call)
            continue
        assert 0.0 <= low <= value <= high <= 1.0, name
    assert test["tp"] + test["fp"] + test["tn"] + test["fn"] == test["n"] == len(model_1_run.xrays.test)
    assert m["n_images"] == {k: len(model_1_run.xrays[k]) for k in ("train", "val", "test")}
    assert m["thresholds"]["case_study"] == 0.5
    assert set(m["versions"]) >= {"python", "tensorflow", "keras", "numpy"}


def test_calibration_and_subtype_sensitivity_recompute_from_the_prediction_files(model_1_run):
    from helpers import calibration

    m = model_1_run.metrics
    val = pd.read_csv(model_1_run.folder / "predictions_val.csv")
    test = pd.read_csv(model_1_run.folder / "predictions_test.csv")
    block = m["calibration"]
    t = calibration.fit_temperature(val.label, val.score)  # fitted on validation only
    assert block["temperature"] == pytest.approx(t)
    assert block["test_before"]["brier"] == pytest.approx(calibration.brier_score(test.label, test.score))
    scaled = calibration.apply_temperature(test.score, t)
    assert block["test_after"]["ece"] == pytest.approx(calibration.expected_calibration_error(test.label, scaled))
    assert block["applied"] == (block["val_log_loss_after"] < 0.99 * block["val_log_loss_before"])
    kinds = {row["kind"]: row for row in m["sensitivity_by_kind"]}
    threshold = m["threshold"]["threshold"]
    assert sum(k["images"] for k in kinds.values()) == int((test.label == 1).sum())
    for kind in kinds:  # the fixture's test set holds viral pneumonia only
        rows = test[(test.label == 1) & test.path.str.contains(f"_{kind}_")]
        assert kinds[kind]["images"] == len(rows) > 0
        assert kinds[kind]["detected"] == int((rows.score >= threshold).sum())
    assert m["skipped_images"] == []


def test_threshold_is_chosen_on_validation_scores(model_1_run):
    val = pd.read_csv(model_1_run.folder / "predictions_val.csv")
    threshold = model_1_run.metrics["threshold"]["threshold"]
    assert threshold == metrics.threshold_for_sensitivity(val.label, val.score, target=config.TARGET_SENSITIVITY)
    assert (val.score[val.label == 1] >= threshold).mean() >= config.TARGET_SENSITIVITY
    assert model_1_run.metrics["thresholds"]["youden"] == metrics.youden_threshold(val.label, val.score)


def _same(a, b):
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b))
    return a == pytest.approx(b, abs=1e-12)


def test_test_metrics_recompute_from_the_predictions_file(model_1_run):
    test = pd.read_csv(model_1_run.folder / "predictions_test.csv")
    m = model_1_run.metrics
    for key, threshold in (
        ("test", m["threshold"]["threshold"]),
        ("test_at_youden", m["thresholds"]["youden"]),
        ("test_at_0.5", 0.5),
    ):
        expected = metrics.summary(test.label, test.score, threshold=threshold)
        assert set(m[key]) == set(expected)
        for name, value in expected.items():
            assert _same(m[key][name], value), (key, name)


def test_history_csv(model_1_run):
    history = pd.read_csv(model_1_run.folder / "history.csv")
    assert history.epoch.tolist() == [1]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history.columns)
    assert np.isfinite(history.drop(columns="epoch").to_numpy()).all()


def test_saved_model_loads_and_gives_the_same_test_scores(model_1_run):
    loaded = keras.saving.load_model(model_1_run.folder / "model.keras")
    assert models.output_kind(loaded) == "probability"
    again = evaluate.predict_split(loaded, model_1_run.xrays.test)
    saved = pd.read_csv(model_1_run.folder / "predictions_test.csv")
    assert again.paths == saved.path.tolist()
    np.testing.assert_allclose(again.scores, saved.score, rtol=0, atol=1e-6)


def test_a_second_run_replaces_the_folder_atomically(model_1_run, xray_folder, tmp_path):
    """evaluate_and_save on an existing folder swaps in the new one, leaving no backup."""
    results = tmp_path / "results"
    results.mkdir()
    (results / "model_1").mkdir()
    (results / "model_1" / "stale.txt").write_text("from an older run")
    train.evaluate_and_save(model_1_run.run, model_1_run.xrays, results_dir=results, save_model=False)
    assert {p.name for p in (results / "model_1").iterdir()} == RESULT_FILES - {"model.keras"}
    assert [p.name for p in results.iterdir()] == ["model_1"]


# ---------------------------------------------------------------------------------------
# model_5 (MobileNetV2, logits) with base_weights=None
# ---------------------------------------------------------------------------------------


def test_model_5_trains_one_epoch_and_scores_probabilities(model_5_fit):
    run = model_5_fit.run
    assert run.built.base_weights == "none" and run.built.output == "logit"
    assert run.history.epoch.tolist() == [1]
    preds = evaluate.predict_split(run.model, model_5_fit.xrays.test)
    assert preds.paths == model_5_fit.xrays.test.paths
    assert ((preds.scores >= 0) & (preds.scores <= 1)).all()
    logits = run.model.predict(model_5_fit.xrays.test.images, verbose=0)[:, 0]
    np.testing.assert_allclose(preds.scores, evaluate.sigmoid(logits), atol=1e-7)


def test_model_5_with_a_random_frozen_base_gives_constant_scores_and_says_so(model_5_fit):
    # By design (the case study freezes the base): a randomly initialised MobileNetV2 in
    # inference mode passes no signal (features ~1e-12), so every image gets one score.
    # The results must say so rather than invent a threshold (checked in the next test).
    logits = model_5_fit.run.model.predict(model_5_fit.xrays.val.images, verbose=0)[:, 0]
    assert np.ptp(logits) < 1e-4


def test_model_5_run_without_base_weights_writes_results(model_5_fit):
    run, xrays = model_5_fit.run, model_5_fit.xrays
    result = train.evaluate_and_save(run, xrays, results_dir=model_5_fit.results_dir)
    m = json.loads((model_5_fit.folder / "metrics.json").read_text())
    assert m["model_id"] == "model_5"
    assert m["base_weights"] == "none"
    assert m["output"] == "logit"
    assert m["threshold"]["chosen_on"] == "validation"
    if np.unique(result.val.scores).size < 2:  # random frozen base: no ranking, said so
        assert m["threshold"]["method"].startswith("none")
        assert any("same score" in w for w in m["warnings"])
    else:
        assert m["threshold"]["method"] == "sensitivity"
    assert {p.name for p in model_5_fit.folder.iterdir()} == RESULT_FILES
    for name in ("val", "test"):
        frame = pd.read_csv(model_5_fit.folder / f"predictions_{name}.csv")
        assert list(frame.columns) == PREDICTION_COLUMNS
        assert frame.path.tolist() == xrays[name].paths
        assert frame.score.between(0, 1).all()
        np.testing.assert_allclose(frame.score, getattr(result, name).scores, atol=1e-12)
    assert m["test"]["tp"] + m["test"]["fp"] + m["test"]["tn"] + m["test"]["fn"] == m["test"]["n"]


# ---------------------------------------------------------------------------------------
# What metrics.json says about the split
# ---------------------------------------------------------------------------------------


def test_metrics_json_records_the_split_actually_used(xray_folder, tmp_path):
    xrays = data.load_chest_xrays(xray_folder.root, image_size=32, val_fraction=0.25, seed=5)
    built = train.build("model_1", xrays, seed=0)
    untrained = train.TrainingRun(
        built=built, history=pd.DataFrame({"epoch": []}), epochs=0, batch_size=16, seed=0, training_seconds=0.0
    )
    result = train.evaluate_and_save(untrained, xrays, results_dir=tmp_path, save_model=False)
    params = result.metrics["parameters"]
    assert params["val_fraction"] == 0.25
    assert 5 in (params.get("split_seed"), params.get("data_seed"))


# ---------------------------------------------------------------------------------------
# Model 5 with its frozen base computed once
# ---------------------------------------------------------------------------------------


def _fake_pretrained_base(monkeypatch):
    """A small conv base standing in for ImageNet MobileNetV2 (offline), one that passes signal."""
    import keras

    def fake(input_shape, include_top, weights):
        inputs = keras.Input(shape=input_shape)
        x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
        return keras.Model(inputs, x, name="fake_mobilenet_base")

    monkeypatch.setattr(keras.applications, "MobileNetV2", fake)


def test_cached_frozen_features_train_the_same_model_5(xrays32, monkeypatch):
    _fake_pretrained_base(monkeypatch)
    scores = {}
    for cache in (False, True):
        built = train.build("model_5", xrays32, seed=11, base_weights=None)
        assert built.frozen_feature_layer == "fake_mobilenet_base"
        run = train.fit(built, xrays32, epochs=3, batch_size=8, seed=11, cache_frozen_features=cache, verbose=0)
        scores[cache] = evaluate.predict_split(run.model, xrays32.test).scores
        assert list(run.history.columns) == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]
    assert np.ptp(scores[False]) > 1e-3  # the fake base passes signal: the check means something
    np.testing.assert_allclose(scores[True], scores[False], atol=1e-5)


def test_model_4_is_never_cached(xrays32, monkeypatch):
    # Model 4 augments before its base: the base's output changes every epoch.
    _fake_pretrained_base(monkeypatch)
    assert train.build("model_4", xrays32, seed=0, base_weights=None).frozen_feature_layer is None
    assert train.build("model_1", xrays32, seed=0).frozen_feature_layer is None


def test_cosine_schedule_decays_from_the_initial_rate_by_epoch():
    callback = train.cosine_schedule(2e-3, 4)
    rates = [callback.schedule(epoch, None) for epoch in range(4)]
    assert rates[0] == pytest.approx(2e-3)
    assert rates[2] == pytest.approx(1e-3)
    assert all(a > b for a, b in zip(rates, rates[1:])) and rates[-1] > 0


def test_model_6_trains_with_class_weights_and_its_schedule_the_case_study_without(xray_folder):
    from helpers import data

    gray = data.load_chest_xrays(xray_folder.root, image_size=32, color_mode="grayscale", seed=0)
    run = train.fit(train.build("model_6", gray, seed=0), gray, epochs=2, batch_size=8, seed=0, verbose=0)
    assert run.class_weight == data.class_weights(gray.train.labels)
    assert run.history["learning_rate"].iloc[0] == pytest.approx(2e-3)
    assert run.history["learning_rate"].iloc[1] == pytest.approx(1e-3)
    rgb = data.load_chest_xrays(xray_folder.root, image_size=32, seed=0)
    run1 = train.fit(train.build("model_1", rgb, seed=0), rgb, epochs=1, batch_size=8, seed=0, verbose=0)
    assert run1.class_weight is None


def test_model_4_validates_on_cached_base_features_with_the_same_numbers(xrays32):
    """Augmentation keeps model 4's base in the training loop; its per-epoch validation runs
    the head on features computed once, and must log what the full model would."""
    histories = []
    for cache in (True, False):
        built = train.build("model_4", xrays32, seed=5, base_weights=None)
        assert built.frozen_base_layer is not None and built.frozen_feature_layer is None
        run = train.fit(built, xrays32, epochs=2, batch_size=8, seed=5, verbose=0,
                        cache_frozen_features=cache)
        histories.append(run.history)
    cached, full = histories
    assert set(cached.columns) == set(full.columns)
    for column in ("loss", "accuracy"):
        np.testing.assert_allclose(cached[column], full[column], rtol=1e-6)
    for column in ("val_loss", "val_accuracy"):
        np.testing.assert_allclose(cached[column], full[column], rtol=1e-4, atol=1e-6)
