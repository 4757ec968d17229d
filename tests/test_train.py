"""Tests of helpers.train: seeding, parameter checks, one-epoch runs of the chapters' own
models, the results folder they leave, and the frozen MobileNetV2 base computed once."""

from __future__ import annotations

import json
import math
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

pytest.importorskip("keras")

import keras
from chapter_models import chapter_model, evaluate_like_a_chapter, fake_pretrained_base

from helpers import data, evaluate, metrics, results, train
from helpers.results import PREDICTION_COLUMNS

# Keras' TensorFlow backend trips a NumPy 2 deprecation inside fit/predict; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

RESULT_FILES = {
    "predictions_val.csv",
    "predictions_test.csv",
    "metrics.json",
    "history.csv",
    "model.keras",
    "MODEL_CARD.md",
}
RATES = ("auc", "sensitivity", "specificity", "ppv", "npv", "f1", "accuracy")


def one_epoch_run(model_id, folder_root, results_dir):
    """``model_id``'s chapter at 32 px for one epoch: its model, ``train.fit`` and its
    four evaluation steps, then its results folder."""
    xrays = data.load_chest_xrays(folder_root, image_size=32, results_dir=results_dir, seed=42)
    model = chapter_model(model_id, image_size=32, seed=0)
    run = train.fit(model, xrays, epochs=1, batch_size=16, seed=0, verbose=0)
    evaluation, folder = evaluate_like_a_chapter(model_id, model, run, xrays, results_dir)
    return SimpleNamespace(
        xrays=xrays,
        run=run,
        evaluation=evaluation,
        returned_folder=folder,
        results_dir=results_dir,
        folder=results_dir / model_id,
        metrics=json.loads((results_dir / model_id / "metrics.json").read_text()),
        split_csv=pd.read_csv(results_dir / "split.csv"),
    )


@pytest.fixture(scope="module")
def model_1_run(xray_folder, tmp_path_factory):
    return one_epoch_run("model_1", xray_folder.root, tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def model_5_fit(xray_folder, tmp_path_factory):
    """model_5 with a randomly initialised base, trained one epoch (not yet evaluated)."""
    results_dir = tmp_path_factory.mktemp("results5")
    xrays = data.load_chest_xrays(xray_folder.root, image_size=32, results_dir=results_dir, seed=42)
    model = chapter_model("model_5", image_size=32, seed=0, base_weights="random")
    run = train.fit(model, xrays, epochs=1, batch_size=16, seed=0, verbose=0)
    return SimpleNamespace(
        xrays=xrays, run=run, results_dir=results_dir, folder=results_dir / "model_5"
    )


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


def test_same_seed_gives_same_initial_weights():
    first = chapter_model("model_1", image_size=32, seed=3).get_weights()
    second = chapter_model("model_1", image_size=32, seed=3).get_weights()
    other = chapter_model("model_1", image_size=32, seed=4).get_weights()
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


def test_fit_prints_one_line_per_epoch_with_the_validation_numbers(xrays32, capsys):
    # A book page shows the log as it is printed: one line per epoch, not Keras' two.
    model = chapter_model("model_1", image_size=32, seed=0)
    capsys.readouterr()
    train.fit(model, xrays32, epochs=2, batch_size=16, seed=0)  # verbose=2, the default
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"], lines
    for line in lines:
        assert re.fullmatch(
            r"epoch \d/2, \d+\.\d s: loss \d\.\d{4} \(val \d\.\d{4}\), "
            r"accuracy \d\.\d{4} \(val \d\.\d{4}\)",
            line,
        ), line


def test_fit_refuses_bad_parameters_before_training(xrays32):
    model = chapter_model("model_1", image_size=32, seed=0)
    before = model.get_weights()
    for kwargs in ({"epochs": -1}, {"batch_size": 0}, {"seed": -3}):
        with pytest.raises(ValueError):
            train.fit(
                model, xrays32, **{"epochs": 1, "batch_size": 16, "seed": 0, "verbose": 0, **kwargs}
            )
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


@pytest.mark.slow
def test_same_seed_gives_same_trained_weights(xrays32):
    weights = data.class_weights(xrays32.train.labels)
    runs = []
    for _ in range(2):
        model = chapter_model("model_1", image_size=32, seed=1)
        runs.append(
            train.fit(
                model, xrays32, epochs=1, batch_size=16, seed=1, verbose=0, class_weight=weights
            )
        )
    a, b = (r.model.get_weights() for r in runs)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    pd.testing.assert_frame_equal(runs[0].history, runs[1].history)
    assert runs[0].class_weight == data.class_weights(xrays32.train.labels)
    assert runs[0].model is not runs[1].model


def test_training_run_records_its_settings(xrays32):
    model = chapter_model("model_1", image_size=32, seed=0)
    run = train.fit(model, xrays32, epochs=2, batch_size=16, seed=7, verbose=0)
    assert run.model is model  # the chapter's model object, trained in place
    assert (run.epochs, run.batch_size, run.seed, run.class_weight) == (2, 16, 7, None)
    assert run.history.epoch.tolist() == [1, 2] and run.training_seconds > 0


# ---------------------------------------------------------------------------------------
# A one-epoch model_1 run and its results folder
# ---------------------------------------------------------------------------------------


def test_results_folder_holds_exactly_the_contract_files(model_1_run):
    assert {p.name for p in model_1_run.folder.iterdir()} == RESULT_FILES
    # Nothing else beside it: no staging or backup folders, no temporary files.
    assert {p.name for p in model_1_run.results_dir.iterdir()} == {"split.csv", "model_1"}
    assert model_1_run.returned_folder == model_1_run.folder


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
    in_memory = getattr(model_1_run.evaluation, name)
    np.testing.assert_allclose(frame.score, in_memory.scores, rtol=0, atol=1e-12)
    assert frame.score.nunique() > 1


def test_metrics_json_contents(model_1_run):
    m = model_1_run.metrics
    assert m["model_id"] == "model_1"
    assert m["title"] == "model_1 (test)"
    assert m["output"] == "probability"
    assert m["base_weights"] == "none"
    assert m["epochs"] == 1
    assert isinstance(m["training_seconds"], float) and m["training_seconds"] > 0
    params = m["parameters"]
    assert params["image_size"] == 32 and params["color_mode"] == "rgb"
    assert params["epochs"] == 1 and params["batch_size"] == 16 and params["seed"] == 0
    # The optimiser as the chapter's compile cell made it (read back from the model).
    assert params["optimizer"] == "RMSprop" and params["learning_rate"] == pytest.approx(1e-4)
    assert params["weight_decay"] is None
    assert params["use_class_weights"] is False
    assert params["data_dir"] == str(model_1_run.xrays.train.data_dir)
    assert params["results_dir"] == str(model_1_run.results_dir)  # the chapter's own parameters
    threshold = m["threshold"]
    assert threshold["method"] == "sensitivity" and threshold["chosen_on"] == "validation"
    assert threshold["target_sensitivity"] == 0.95
    assert 0.0 <= threshold["threshold"] <= 1.0
    test = m["test"]
    assert "person" in test["interval_method"]  # intervals resample persons, not images
    for name in RATES:
        value, low, high = test[name], test[f"{name}_ci_low"], test[f"{name}_ci_high"]
        if value is None:  # NaN is written as null (e.g. PPV with no positive call)
            continue
        assert 0.0 <= low <= value <= high <= 1.0, name
    image_level = m["test_image_level"]
    assert (
        image_level["f1_ci_low"] is None and image_level["f1_ci_high"] is None
    )  # none valid for F1
    assert (
        test["tp"] + test["fp"] + test["tn"] + test["fn"]
        == test["n"]
        == len(model_1_run.xrays.test)
    )
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
    assert block["test_before"]["brier"] == pytest.approx(
        calibration.brier_score(test.label, test.score)
    )
    scaled = calibration.apply_temperature(test.score, t)
    assert block["test_after"]["ece"] == pytest.approx(
        calibration.expected_calibration_error(test.label, scaled)
    )
    assert block["val_log_loss_before"] == pytest.approx(calibration.log_loss(val.label, val.score))
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
    assert threshold == metrics.threshold_for_sensitivity(val.label, val.score, target=0.95)
    assert (val.score[val.label == 1] >= threshold).mean() >= 0.95
    assert model_1_run.metrics["thresholds"]["youden"] == metrics.youden_threshold(
        val.label, val.score
    )


def _same(a, b):
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b))
    if isinstance(b, str):
        return a == b
    return a == pytest.approx(b, abs=1e-12)


def _predictions_from_file(path, split):
    frame = pd.read_csv(path)
    return evaluate.Predictions(
        split, frame.path.tolist(), frame.label.to_numpy(), frame.score.to_numpy()
    )


def test_test_metrics_recompute_from_the_predictions_file(model_1_run):
    """Every test block of metrics.json follows from predictions_test.csv alone: the point
    values and counts are metrics.summary's, the intervals those of the same evaluation
    code run on the file's rows."""
    test = _predictions_from_file(model_1_run.folder / "predictions_test.csv", "test")
    m = model_1_run.metrics
    for key, threshold in (
        ("test", m["threshold"]["threshold"]),
        ("test_at_youden", m["thresholds"]["youden"]),
        ("test_at_0.5", 0.5),
    ):
        points = metrics.summary(test.labels, test.scores, threshold=threshold)
        for name, value in points.items():
            if not name.endswith(("_ci_low", "_ci_high")):
                assert _same(m[key][name], value), (key, name)
        again = evaluate.metrics_at(test, threshold)
        assert set(m[key]) == set(again)
        for name, value in again.items():
            assert _same(m[key][name], value), (key, name)
    image_level = metrics.summary(test.labels, test.scores, threshold=m["threshold"]["threshold"])
    for name, value in image_level.items():
        assert _same(m["test_image_level"][name], value), name


def test_history_csv(model_1_run):
    history = pd.read_csv(model_1_run.folder / "history.csv")
    assert history.epoch.tolist() == [1]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history.columns)
    assert np.isfinite(history.drop(columns="epoch").to_numpy()).all()


def test_saved_model_loads_and_gives_the_same_test_scores(model_1_run):
    loaded = keras.saving.load_model(model_1_run.folder / "model.keras")
    assert evaluate.output_kind(loaded) == "probability"
    again = evaluate.predict_split(loaded, model_1_run.xrays.test)
    saved = pd.read_csv(model_1_run.folder / "predictions_test.csv")
    assert again.paths == saved.path.tolist()
    np.testing.assert_allclose(again.scores, saved.score, rtol=0, atol=1e-6)


def test_a_second_save_replaces_the_folder_atomically(model_1_run, tmp_path):
    """save_results on an existing folder swaps in the new one, leaving no backup."""
    results_dir = tmp_path / "results"
    results_dir.mkdir()
    (results_dir / "model_1").mkdir()
    (results_dir / "model_1" / "stale.txt").write_text("from an older run")
    folder = results.save_results(
        model_1_run.evaluation,
        model=model_1_run.run.model,
        run=model_1_run.run,
        xrays=model_1_run.xrays,
        parameters={"results_dir": str(results_dir)},
        title="again",
        save_model=False,
    )
    assert folder == results_dir / "model_1"
    assert {p.name for p in folder.iterdir()} == RESULT_FILES - {"model.keras"}
    assert [p.name for p in results_dir.iterdir()] == ["model_1"]


# ---------------------------------------------------------------------------------------
# model_5 (MobileNetV2, logits) with a randomly initialised base
# ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_model_5_trains_one_epoch_and_scores_probabilities(model_5_fit):
    run = model_5_fit.run
    assert evaluate.output_kind(run.model) == "logit"
    assert run.history.epoch.tolist() == [1]
    preds = evaluate.predict_split(run.model, model_5_fit.xrays.test)
    assert preds.paths == model_5_fit.xrays.test.paths
    assert ((preds.scores >= 0) & (preds.scores <= 1)).all()
    logits = run.model.predict(model_5_fit.xrays.test.images, verbose=0)[:, 0]
    np.testing.assert_allclose(preds.scores, expit(logits.astype(np.float64)), atol=1e-7)


@pytest.mark.slow
def test_model_5_with_a_random_frozen_base_gives_constant_scores(model_5_fit):
    # By design (the case study freezes the base): a randomly initialised MobileNetV2 in
    # inference mode passes no signal (features ~1e-12), so every image gets one score.
    # The results must say so rather than invent a threshold (checked in the next test).
    logits = model_5_fit.run.model.predict(model_5_fit.xrays.val.images, verbose=0)[:, 0]
    assert np.ptp(logits) < 1e-4


@pytest.mark.slow
def test_model_5_run_with_a_random_base_writes_results_that_say_so(model_5_fit):
    run, xrays = model_5_fit.run, model_5_fit.xrays
    # The chapter's four steps, and its save with the base weights it used.
    val = evaluate.score_validation(run.model, xrays, batch_size=16)
    threshold = evaluate.threshold_on_validation(val, target_sensitivity=0.95)
    test = evaluate.score_test_once(run.model, xrays, threshold=threshold, batch_size=16)
    evaluation = evaluate.summarise("model_5", val, test, threshold)
    results.save_results(
        evaluation,
        model=run.model,
        run=run,
        xrays=xrays,
        parameters={"results_dir": str(model_5_fit.results_dir)},
        title="model_5 (test)",
        base_weights="random",
    )
    m = json.loads((model_5_fit.folder / "metrics.json").read_text())
    assert m["model_id"] == "model_5"
    assert m["base_weights"] == "random"
    assert m["output"] == "logit"
    assert m["threshold"]["chosen_on"] == "validation"
    if np.unique(val.scores).size < 2:  # random frozen base: no ranking, said so
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
        np.testing.assert_allclose(frame.score, getattr(evaluation, name).scores, atol=1e-12)
    assert m["test"]["tp"] + m["test"]["fp"] + m["test"]["tn"] + m["test"]["fn"] == m["test"]["n"]


# ---------------------------------------------------------------------------------------
# What metrics.json says about the split
# ---------------------------------------------------------------------------------------


def test_metrics_json_records_the_split_actually_used(xray_folder, tmp_path):
    xrays = data.load_chest_xrays(xray_folder.root, image_size=32, val_fraction=0.25, seed=5)
    model = chapter_model("model_1", image_size=32, seed=0)
    untrained = train.TrainingRun(
        model=model,
        history=pd.DataFrame({"epoch": []}),
        epochs=0,
        batch_size=16,
        seed=0,
        training_seconds=0.0,
    )
    _, folder = evaluate_like_a_chapter("model_1", model, untrained, xrays, tmp_path)
    params = json.loads((folder / "metrics.json").read_text())["parameters"]
    assert params["val_fraction"] == 0.25
    assert params["split_seed"] == 5


@pytest.mark.parametrize("with_val", [True, False], ids=["with val", "without val"])
def test_metrics_json_says_whether_the_official_val_images_were_used(
    make_xrays, tmp_path, with_val
):
    import shutil

    folder = make_xrays()
    if not with_val:
        shutil.rmtree(folder.root / "val")  # as many repackagings of the data set do
    xrays = data.load_chest_xrays(folder.root, image_size=32, seed=0)
    model = chapter_model("model_1", image_size=32, seed=0)
    untrained = train.TrainingRun(
        model=model,
        history=pd.DataFrame({"epoch": []}),
        epochs=0,
        batch_size=16,
        seed=0,
        training_seconds=0.0,
    )
    _, written = evaluate_like_a_chapter("model_1", model, untrained, xrays, tmp_path / "results")
    m = json.loads((written / "metrics.json").read_text())
    official = len(folder.images_of("val")) if with_val else 0
    assert m["official_val_images"] == official == xrays.official_val_images
    assert m["official_val"] == xrays.official_val_note
    if with_val:
        assert f"The {official} images of the official val/ folder joined" in m["official_val"]
    else:
        assert "no official validation images" in m["official_val"]
    # The validation predictions are still a whole validation side, both classes present.
    val = pd.read_csv(written / "predictions_val.csv")
    assert val.path.tolist() == xrays.val.paths and set(val.label) == {0, 1}
    assert m["n_images"]["val"] == len(xrays.val)


# ---------------------------------------------------------------------------------------
# The frozen MobileNetV2 base: found, split off, computed once
# ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_frozen_base_of_models_4_and_5_and_none_for_the_others():
    model_4 = chapter_model("model_4", image_size=32, base_weights="random")
    model_5 = chapter_model("model_5", image_size=32, base_weights="random")
    base_4, fixed_4 = train.frozen_base(model_4)
    base_5, fixed_5 = train.frozen_base(model_5)
    assert base_4.startswith("mobilenetv2") and base_5.startswith("mobilenetv2")
    assert model_4.get_layer(base_4).trainable is False
    # Model 4 augments before its base, so the base's inputs change every epoch.
    assert fixed_4 is False
    assert fixed_5 is True
    assert train.frozen_base(chapter_model("model_1", image_size=32)) == (None, False)


def test_split_at_layer_shares_the_head_layers_and_refuses_a_trainable_layer(monkeypatch):
    fake_pretrained_base(monkeypatch)
    model = chapter_model("model_5", image_size=32, seed=2, base_weights="random")
    extractor, head = train.split_at_layer(model, "fake_mobilenet_base")
    assert [layer.name for layer in head.layers[1:]] == [layer.name for layer in model.layers[-3:]]
    assert all(a is b for a, b in zip(head.layers[1:], model.layers[-3:]))  # the same objects
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(
        head.predict(extractor.predict(images, verbose=0), verbose=0),
        model.predict(images, verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="trainable"):
        train.split_at_layer(model, model.layers[-1].name)


@pytest.mark.slow
def test_cached_frozen_features_train_the_same_model_5_on_a_base_that_passes_signal(
    xrays32, monkeypatch
):
    fake_pretrained_base(monkeypatch)
    scores = {}
    for cache in (False, True):
        model = chapter_model("model_5", image_size=32, seed=11, base_weights="random")
        assert train.frozen_base(model) == ("fake_mobilenet_base", True)
        run = train.fit(
            model, xrays32, epochs=3, batch_size=8, seed=11, cache_frozen_features=cache, verbose=0
        )
        scores[cache] = evaluate.predict_split(run.model, xrays32.test).scores
        assert list(run.history.columns) == [
            "epoch",
            "accuracy",
            "loss",
            "val_accuracy",
            "val_loss",
        ]
    assert np.ptp(scores[False]) > 1e-3  # the fake base passes signal: the check means something
    np.testing.assert_allclose(scores[True], scores[False], atol=1e-5)


@pytest.mark.slow
def test_cached_frozen_features_give_model_5_the_same_test_scores_as_the_base_in_the_loop(xrays32):
    """The chapter's model_5 with its real (randomly initialised) MobileNetV2. Such a base
    passes almost no signal, so this checks the plumbing on the real architecture; the
    test above checks the equality on a base whose outputs differ between images."""
    scores = {}
    for cache in (False, True):
        model = chapter_model("model_5", image_size=32, seed=4, base_weights="random")
        run = train.fit(
            model, xrays32, epochs=2, batch_size=8, seed=4, cache_frozen_features=cache, verbose=0
        )
        scores[cache] = evaluate.predict_split(run.model, xrays32.test).scores
    np.testing.assert_allclose(scores[True], scores[False], rtol=0, atol=1e-5)


@pytest.mark.slow
def test_model_4_validates_on_cached_base_features_with_the_same_numbers(xrays32):
    """Augmentation keeps model 4's base in the training loop; its per-epoch validation runs
    the head on features computed once, and must log what the full model would."""
    histories = []
    for cache in (True, False):
        model = chapter_model("model_4", image_size=32, seed=5, base_weights="random")
        run = train.fit(
            model, xrays32, epochs=2, batch_size=8, seed=5, verbose=0, cache_frozen_features=cache
        )
        histories.append(run.history)
    cached, full = histories
    assert set(cached.columns) == set(full.columns)
    for column in ("loss", "accuracy"):
        np.testing.assert_allclose(cached[column], full[column], rtol=1e-6)
    for column in ("val_loss", "val_accuracy"):
        np.testing.assert_allclose(cached[column], full[column], rtol=1e-4, atol=1e-6)


def test_cosine_schedule_decays_from_the_initial_rate_by_epoch():
    callback = train.cosine_schedule(2e-3, 4)
    rates = [callback.schedule(epoch, None) for epoch in range(4)]
    assert rates[0] == pytest.approx(2e-3)
    assert rates[2] == pytest.approx(1e-3)
    assert all(a > b for a, b in zip(rates, rates[1:])) and rates[-1] > 0


def test_distribution_strategy_by_name():
    import tensorflow as tf

    assert train.distribution_strategy("default") is tf.distribute.get_strategy()
    assert train.distribution_strategy(None) is tf.distribute.get_strategy()
    with pytest.raises(ValueError, match="devices applies to the 'mirrored' strategy only"):
        train.distribution_strategy("multi_worker", devices=["/cpu:0"])
    with pytest.raises(ValueError, match="strategy must be one of"):
        train.distribution_strategy("tpu")
