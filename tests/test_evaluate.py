"""Tests of helpers.evaluate: one ordered pass, scores row by row with paths, logits -> sigmoid."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy.special import expit

keras = pytest.importorskip("keras")
from keras import layers  # noqa: E402

from helpers import evaluate  # noqa: E402
from helpers.data import Split  # noqa: E402

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
        return np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


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


def test_sigmoid_is_stable_and_exact():
    logits = np.array([-1000.0, -40.0, -1.0, 0.0, 1.0, 40.0, 1000.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        out = evaluate.sigmoid(logits)
    np.testing.assert_allclose(out, expit(logits), rtol=1e-15, atol=0)
    assert out[0] == 0.0 and out[3] == 0.5 and out[-1] == 1.0
    assert out.dtype == np.float64


@pytest.mark.parametrize("activation", ["sigmoid", None])
def test_nan_scores_are_a_clear_error_naming_split_count_and_file(xrays8, activation):
    from helpers.metrics import MetricError

    model = brightness_model(SIZE, activation=activation, weights=(np.array([np.nan, 0.0, 0.0]), 0.0))
    split = xrays8.test
    with pytest.raises(MetricError) as info:
        evaluate.predict_split(model, split)
    message = str(info.value)
    assert f"for {len(split)} of {len(split)} test images" in message
    assert split.paths[0] in message and "diverged" in message


def test_a_diverged_model_writes_no_results(xrays8, tmp_path):
    import pandas as pd

    from helpers import models, train
    from helpers.metrics import MetricError

    model = brightness_model(SIZE, activation="sigmoid", weights=(np.array([np.nan, 0.0, 0.0]), 0.0))
    built = models.BuiltModel(model=model, spec=models.get_spec("model_1"), output="probability")
    run = train.TrainingRun(built=built, history=pd.DataFrame({"epoch": [1], "loss": [np.nan]}),
                            epochs=1, batch_size=8, seed=0, training_seconds=0.0)
    with pytest.raises(MetricError, match="non-finite scores"):
        train.evaluate_and_save(run, xrays8, results_dir=tmp_path / "results")
    assert not (tmp_path / "results" / "model_1").exists()
