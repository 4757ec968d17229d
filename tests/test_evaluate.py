"""Tests of helpers.evaluate: one ordered pass, scores row by row with paths, logits -> sigmoid,
and the chapter's four steps in their enforced order."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy.special import expit

pytest.importorskip("keras")

import keras
from keras import layers

from helpers import evaluate
from helpers.data import Split
from helpers.metrics import MetricError

# Per-channel mean brightness -> logit. TensorFlow averages the pixels in float32, whose
# rounding grows with the number of pixels (about 1e-6 of the mean at 32 x 32); the exact
# comparisons therefore use 8 x 8 images and small weights, to stay well inside 1e-6.
PROB_WEIGHTS = (np.array([1.2, -0.5, 0.3]), -0.4)
LOGIT_WEIGHTS = (np.array([3.0, -0.5, 0.5]), -1.5)


def brightness_model(size: int, *, activation: str | None, weights=PROB_WEIGHTS):
    """score = activation(w . mean_rgb(image / 255) + b), with fixed weights."""
    inputs = keras.Input(shape=(size, size, 3))
    x = layers.Rescaling(1.0 / 255)(inputs)
    x = layers.GlobalAveragePooling2D()(x)
    dense = layers.Dense(1, activation=activation)
    model = keras.Model(inputs, dense(x))
    w, b = weights
    dense.set_weights([w.reshape(3, 1).astype("float32"), np.array([b], dtype="float32")])
    return model


SIZE = 8


@pytest.fixture(scope="module")
def xrays8(xray_folder):
    from helpers import data

    return data.load_chest_xrays(xray_folder.root, image_size=SIZE, seed=0)


def decode_by_hand(path, size: int) -> np.ndarray:
    """What the loader should give for an RGB JPEG, written with Pillow directly: libjpeg's
    reduced-scale decoding (never below twice the target), then a bilinear resize."""
    with Image.open(path) as img:
        img.draft(img.mode, (2 * size, 2 * size))
        return np.asarray(
            img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8
        )


def logit_by_hand(image: np.ndarray, weights=PROB_WEIGHTS) -> float:
    w, b = weights
    mean_rgb = (image.astype(np.float64) / 255).mean(axis=(0, 1))
    return float(mean_rgb @ w + b)


@pytest.mark.parametrize("name", ["val", "test", "train"])
def test_probability_scores_match_hand_computation_row_by_row(xrays8, name):
    split = xrays8[name]
    model = brightness_model(SIZE, activation="sigmoid")
    preds = evaluate.predict_split(model, split, batch_size=5)  # several batches, last partial
    assert preds.split == name
    assert preds.paths == split.paths
    assert np.array_equal(preds.labels, split.labels)
    assert preds.scores.dtype == np.float64 and preds.scores.shape == (len(split),)
    for i, path in enumerate(preds.paths):
        image = decode_by_hand(split.data_dir / path, SIZE)
        assert np.array_equal(split.images[i], image), path
        expected = expit(logit_by_hand(image))
        assert preds.scores[i] == pytest.approx(expected, abs=1e-6), path
        assert preds.labels[i] == int("/PNEUMONIA/" in path)
    # The images differ enough that any reordering would show.
    assert len(np.unique(np.round(preds.scores, 5))) == len(split)


def test_logit_model_scores_are_sigmoid_of_logits(xrays8):
    split = xrays8.test
    model = brightness_model(SIZE, activation=None, weights=LOGIT_WEIGHTS)
    raw = model.predict(split.images, verbose=0)[:, 0]
    assert raw.min() < -0.5 and raw.max() > 0.5  # real logits of both signs, not probabilities
    preds = evaluate.predict_split(model, split, batch_size=4)
    assert ((preds.scores >= 0) & (preds.scores <= 1)).all()
    for i, path in enumerate(preds.paths):
        logit = logit_by_hand(decode_by_hand(split.data_dir / path, SIZE), weights=LOGIT_WEIGHTS)
        assert preds.scores[i] == pytest.approx(expit(logit), abs=1e-6), path
    assert not np.allclose(preds.scores, raw)


def test_predict_split_is_the_same_whatever_the_batch_size(xrays32):
    model = brightness_model(32, activation="sigmoid")
    one = evaluate.predict_split(model, xrays32.val, batch_size=1).scores
    many = evaluate.predict_split(model, xrays32.val, batch_size=128).scores
    np.testing.assert_allclose(one, many, atol=1e-7)


def test_predict_split_follows_the_split_order_not_a_sorted_one(xrays32):
    split = xrays32.test
    order = np.random.default_rng(0).permutation(len(split))
    shuffled = Split(
        name="test",
        paths=[split.paths[i] for i in order],
        labels=split.labels[order],
        images=split.images[order],
        data_dir=split.data_dir,
    )
    model = brightness_model(32, activation="sigmoid")
    base = evaluate.predict_split(model, split).to_frame().set_index("path")
    moved = evaluate.predict_split(model, shuffled).to_frame().set_index("path")
    assert moved.index.tolist() == shuffled.paths
    np.testing.assert_allclose(moved.loc[base.index, "score"], base["score"], atol=1e-7)
    assert (moved.loc[base.index, "label"] == base["label"]).all()


def test_predict_split_refuses_models_of_unknown_output(xrays32):
    inputs = keras.Input(shape=(32, 32, 3))
    x = layers.GlobalAveragePooling2D()(inputs)
    relu = keras.Model(inputs, layers.Dense(1, activation="relu")(x))
    with pytest.raises(ValueError, match="probabilities or logits"):
        evaluate.predict_split(relu, xrays32.val)
    two = keras.Model(inputs, layers.Dense(2, activation="sigmoid")(x))
    with pytest.raises(ValueError, match="one value per image"):
        evaluate.predict_split(two, xrays32.val)


def test_predictions_frame_and_length_check():
    preds = evaluate.Predictions("val", ["a", "b"], np.array([0, 1]), np.array([0.25, 0.75]))
    frame = preds.to_frame()
    assert list(frame.columns) == ["path", "label", "score"]
    assert frame.to_dict("list") == {"path": ["a", "b"], "label": [0, 1], "score": [0.25, 0.75]}
    with pytest.raises(ValueError, match="differ in length"):
        evaluate.Predictions("val", ["a"], np.array([0, 1]), np.array([0.25, 0.75]))


@pytest.mark.parametrize("activation", ["sigmoid", None])
def test_nan_scores_are_a_clear_error_naming_split_count_and_file(xrays8, activation):
    from helpers.metrics import MetricError

    model = brightness_model(
        SIZE, activation=activation, weights=(np.array([np.nan, 0.0, 0.0]), 0.0)
    )
    split = xrays8.test
    with pytest.raises(MetricError) as info:
        evaluate.predict_split(model, split)
    message = str(info.value)
    assert f"for {len(split)} of {len(split)} test images" in message
    assert split.paths[0] in message and "diverged" in message


def test_a_diverged_model_writes_no_results(xrays8, tmp_path):
    import pandas as pd
    from chapter_models import evaluate_like_a_chapter

    from helpers import train

    model = brightness_model(
        SIZE, activation="sigmoid", weights=(np.array([np.nan, 0.0, 0.0]), 0.0)
    )
    run = train.TrainingRun(
        model=model,
        history=pd.DataFrame({"epoch": [1], "loss": [np.nan]}),
        epochs=1,
        batch_size=8,
        seed=0,
        training_seconds=0.0,
    )
    with pytest.raises(MetricError, match="non-finite scores"):
        evaluate_like_a_chapter("model_1", model, run, xrays8, tmp_path / "results")
    assert not (tmp_path / "results" / "model_1").exists()


# ---------------------------------------------------------------------------------------
# output_kind
# ---------------------------------------------------------------------------------------


def _tiny(last_layer):
    inputs = keras.Input(shape=(4,))
    return keras.Model(inputs, last_layer(inputs))


def test_output_kind_reads_the_last_layer():
    assert evaluate.output_kind(_tiny(layers.Dense(1, activation="sigmoid"))) == "probability"
    assert evaluate.output_kind(_tiny(layers.Dense(1))) == "logit"
    assert evaluate.output_kind(_tiny(layers.Dense(1, activation="linear"))) == "logit"


@pytest.mark.parametrize(
    "last",
    [
        lambda: layers.Dense(1, activation="relu"),
        lambda: layers.Dense(2, activation="softmax"),
        lambda: layers.Dense(1, activation="tanh"),
        lambda: layers.Dropout(0.5),
    ],
    ids=["relu", "softmax", "tanh", "no-activation"],
)
def test_output_kind_refuses_other_last_layers(last):
    model = _tiny(last())
    with pytest.raises(ValueError, match="probabilities or logits") as info:
        evaluate.output_kind(model)
    assert model.layers[-1].name in str(info.value)


# ---------------------------------------------------------------------------------------
# The four steps and their order
# ---------------------------------------------------------------------------------------


def fresh_test_split(xrays):
    """``xrays`` with a new test split object (same images): to the once-only rule, a
    freshly loaded data set. The caller keeps it alive while it is used."""
    from dataclasses import replace

    return replace(xrays, test=replace(xrays.test))


def test_threshold_on_validation_refuses_test_predictions(xrays8):
    model = brightness_model(SIZE, activation="sigmoid")
    test = evaluate.predict_split(model, xrays8.test)
    with pytest.raises(ValueError, match="must be chosen on the validation images, got 'test'"):
        evaluate.threshold_on_validation(test, target_sensitivity=0.95)
    train = evaluate.predict_split(model, xrays8.train)
    with pytest.raises(ValueError, match="got 'train'"):
        evaluate.threshold_on_validation(train, target_sensitivity=0.95)


def test_threshold_on_validation_reaches_the_target_and_names_its_origin(xrays8):
    from helpers import metrics

    val = evaluate.score_validation(brightness_model(SIZE, activation="sigmoid"), xrays8)
    assert val.split == "val" and val.paths == xrays8.val.paths
    chosen = evaluate.threshold_on_validation(val, target_sensitivity=0.9)
    assert chosen["chosen_on"] == "validation" and chosen["target_sensitivity"] == 0.9
    assert chosen["threshold"] == metrics.threshold_for_sensitivity(
        val.labels, val.scores, target=0.9
    )
    assert chosen["youden"] == metrics.youden_threshold(val.labels, val.scores)
    assert chosen["warnings"] == []


def test_a_model_that_ranks_nothing_gets_0_5_and_a_warning(xrays8):
    constant = brightness_model(SIZE, activation="sigmoid", weights=(np.zeros(3), 0.7))
    val = evaluate.score_validation(constant, xrays8)
    chosen = evaluate.threshold_on_validation(val, target_sensitivity=0.95)
    assert chosen["threshold"] == 0.5 and chosen["method"].startswith("none")
    assert chosen["youden"] is None
    assert len(chosen["warnings"]) == 1 and "same score" in chosen["warnings"][0]


@pytest.mark.parametrize(
    "threshold",
    [
        0.5,
        {"threshold": 0.5},
        {"threshold": 0.5, "chosen_on": "test"},
        {"threshold": 0.5, "chosen_on": "validation"},
        None,
    ],  # a hand-made dict too
    ids=["a number", "no origin", "chosen on test", "hand-made", "none"],
)
def test_score_test_once_refuses_a_threshold_not_chosen_on_validation(xrays8, threshold):
    xrays = fresh_test_split(xrays8)
    model = brightness_model(SIZE, activation="sigmoid")
    with pytest.raises(ValueError, match="needs the threshold returned by threshold_on_validation"):
        evaluate.score_test_once(model, xrays, threshold=threshold)
    # A refused call does not count as the model's one scoring.
    val = evaluate.score_validation(model, xrays)
    chosen = evaluate.threshold_on_validation(val, target_sensitivity=0.95)
    assert evaluate.score_test_once(model, xrays, threshold=chosen).split == "test"


def test_score_test_once_refuses_a_second_scoring_of_the_same_model(xrays8):
    xrays = fresh_test_split(xrays8)
    model = brightness_model(SIZE, activation="sigmoid")
    chosen = evaluate.threshold_on_validation(
        evaluate.score_validation(model, xrays), target_sensitivity=0.95
    )
    test = evaluate.score_test_once(model, xrays, threshold=chosen, batch_size=3)
    assert test.split == "test" and test.paths == xrays.test.paths
    np.testing.assert_allclose(
        test.scores, evaluate.predict_split(model, xrays.test).scores, atol=1e-7
    )
    with pytest.raises(ValueError, match=f"already scored for '{model.name}'"):
        evaluate.score_test_once(model, xrays, threshold=chosen)
    # Another model with the same weights but another name is another model ...
    other = brightness_model(SIZE, activation="sigmoid")
    assert other.name != model.name
    evaluate.score_test_once(other, xrays, threshold=chosen)
    # ... and the same model on a data set loaded again (a chapter run from the top) is scored.
    again = fresh_test_split(xrays)
    evaluate.score_test_once(model, again, threshold=chosen)


def test_a_freed_test_split_does_not_block_a_later_one(xrays8):
    model = brightness_model(SIZE, activation="sigmoid")
    chosen = evaluate.threshold_on_validation(
        evaluate.score_validation(model, xrays8), target_sensitivity=0.95
    )
    freed_ids: set[int] = set()
    for _ in range(100):  # each a data set loaded again, then let go
        again = fresh_test_split(xrays8)
        reused = id(again.test) in freed_ids  # the id of a split freed before: the case at stake
        evaluate.score_test_once(model, again, threshold=chosen)
        freed_ids.add(id(again.test))
        # No reference cycle: freed here by reference counting, so no gc.collect() (which
        # costs up to a second per call once many models are alive) is needed.
        del again
        if reused:
            break
    assert reused, "no freed split's id was reused in 100 loads: the check above tested nothing"


def test_summarise_refuses_swapped_splits_and_foreign_thresholds(xrays8):
    model = brightness_model(SIZE, activation="sigmoid")
    val = evaluate.score_validation(model, xrays8)
    test = evaluate.predict_split(model, xrays8.test)
    chosen = evaluate.threshold_on_validation(val, target_sensitivity=0.95)
    with pytest.raises(ValueError, match="needs validation and test predictions"):
        evaluate.summarise("m", test, val, chosen)
    with pytest.raises(ValueError, match="threshold returned by threshold_on_validation"):
        evaluate.summarise("m", val, test, {"threshold": 0.5})


def test_summarise_measures_the_test_set_at_the_validation_threshold(xrays8):
    from helpers import metrics

    model = brightness_model(SIZE, activation="sigmoid")
    xrays = fresh_test_split(xrays8)
    val = evaluate.score_validation(model, xrays)
    chosen = evaluate.threshold_on_validation(val, target_sensitivity=0.95)
    test = evaluate.score_test_once(model, xrays, threshold=chosen)
    result = evaluate.summarise("model_x", val, test, chosen)
    assert result.model_id == "model_x" and result.chosen == chosen["threshold"]
    m = result.metrics
    expected = metrics.summary(test.labels, test.scores, threshold=chosen["threshold"])
    for name in ("auc", "sensitivity", "specificity", "tp", "fp", "tn", "fn", "n"):
        assert m["test"][name] == pytest.approx(expected[name]), name
    assert m["test_at_0.5"]["threshold"] == 0.5
    assert m["val"]["n"] == len(xrays.val) and m["n_images"] == {
        "val": len(xrays.val),
        "test": len(xrays.test),
    }
    assert m["threshold"]["chosen_on"] == "validation" and "warnings" not in m["threshold"]


def _scored(labels, scores, threshold: dict) -> evaluate.Evaluation:
    """An evaluation whose test predictions are the given labels and scores."""
    paths = [
        f"test/{'PNEUMONIA' if y else 'NORMAL'}/IM-{i:04d}-0001.jpeg" for i, y in enumerate(labels)
    ]
    test = evaluate.Predictions("test", paths, np.asarray(labels), np.asarray(scores, float))
    return evaluate.Evaluation("m", val=test, test=test, threshold=threshold)


def test_ranking_ceiling_is_the_rule_applied_to_the_test_labels_by_hand():
    # Positives 0.9, 0.8, 0.7, 0.3; negatives 0.6, 0.5, 0.2, 0.1. Sensitivity 0.75 is first
    # reached at 0.7, where every negative is below: specificity 1.0. At the validation
    # threshold 0.25 (sensitivity 1.0) the same scores give specificity 0.5.
    labels = [1, 1, 1, 1, 0, 0, 0, 0]
    scores = [0.9, 0.8, 0.7, 0.3, 0.6, 0.5, 0.2, 0.1]
    evaluation = _scored(labels, scores, {"threshold": 0.25, "target_sensitivity": 0.75})
    assert evaluate.ranking_ceiling(evaluation) == {
        "target_sensitivity": 0.75,
        "threshold": 0.7,
        "sensitivity": 0.75,
        "specificity": 1.0,
    }
    # At target 1.0 the lowest positive, 0.3, sets it: two negatives above, two below.
    full = _scored(labels, scores, {"threshold": 0.25, "target_sensitivity": 1.0})
    assert evaluate.ranking_ceiling(full)["specificity"] == 0.5


def test_ranking_ceiling_needs_a_target_sensitivity():
    evaluation = _scored([1, 0], [0.9, 0.1], {"threshold": 0.4, "method": "youden"})
    with pytest.raises(ValueError, match="m: .*target sensitivity.*'youden'"):
        evaluate.ranking_ceiling(evaluation)
