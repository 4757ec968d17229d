"""model_8's ensemble (helpers.ensemble): shared split, the choice rule, one Keras model.

Small generated data and tiny stand-in members: a grayscale residual-style network with batch
normalisation (as model_6), an RGB network around a nested base (as model_7) and the frozen
multi-block MobileNetV2 member at 32 px with random weights (nothing is downloaded).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("keras")

import keras
from keras import layers

from helpers import ensemble, explain
from helpers.adapt import adapt_batchnorm, adapted_layer_names
from helpers.ensemble import EnsembleError, Member

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def gray_member(size=16, name="gray_net"):
    """A model_6-like member: grayscale, rescaling, a convolution with batch norm, a logit."""
    inputs = keras.Input((size, size, 1))
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.RandomTranslation(0.05, 0.05)(x)  # training only: left out of the ensemble
    x = layers.Conv2D(4, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(1)(x)
    model = keras.Model(inputs, outputs, name=name)
    return Member(name, model, size, "grayscale")


def rgb_member(size=24, name="rgb_net"):
    """A model_7-like member: RGB, a nested base called in inference mode, a nested head."""
    base_in = keras.Input((size, size, 3))
    base = keras.Model(base_in, layers.Conv2D(3, 3, padding="same")(base_in), name=f"{name}_base")
    head = keras.Sequential([layers.GlobalAveragePooling2D(), layers.Dense(1)], name=f"{name}_head")
    inputs = keras.Input((size, size, 3))
    x = layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    outputs = head(base(x, training=False))
    return Member(name, keras.Model(inputs, outputs, name=name), size, "rgb")


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(120, 32, 32, 3), dtype=np.uint8)
    x[..., 1] = x[..., 0]  # X-rays are gray: the three channels agree
    x[..., 2] = x[..., 0]
    labels = (x.reshape(120, -1).mean(axis=1) > np.median(x.reshape(120, -1).mean(axis=1))).astype(
        int
    )
    return x, labels


@pytest.fixture(scope="module")
def frozen(images):
    keras.utils.set_random_seed(0)
    member = ensemble.frozen_member(32, base_weights="random")
    x, y = images
    persons = [f"p{i // 2}" for i in range(len(y))]
    fit = ensemble.fit_frozen_member(member, x, y, persons)
    return member, fit


def test_frozen_member_head_is_the_logistic_regression(images, frozen):
    member, fit = frozen
    x, _ = images
    assert fit["C"] in ensemble.LOGISTIC_CS
    assert fit["n_features"] == 24 + 32 + 64 + 96 + 576 + 160 + 1280
    features = ensemble.frozen_extractor(member).predict(x, verbose=0).astype(np.float64)
    bn = member.model.get_layer("frozen_feature_standardisation")
    mean, var = (np.asarray(w, dtype=np.float64) for w in bn.get_weights())
    np.testing.assert_allclose(mean, features.mean(axis=0), rtol=1e-4, atol=1e-5)
    kernel, bias = member.model.get_layer("frozen_linear_head").get_weights()
    expected = ((features - mean) / np.sqrt(var + ensemble.FEATURE_EPSILON)) @ kernel + bias
    got = member.model.predict(x, verbose=0)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)


def test_member_logits_match_each_member_on_its_own_input(images):
    x, _ = images
    keras.utils.set_random_seed(1)
    gray, rgb = gray_member(), rgb_member(size=32)
    logits = ensemble.member_logits([gray, rgb], x)
    assert list(logits.columns) == ["gray_net", "rgb_net"]
    # The ensemble's own resizing and luma conversion give what the member sees alone.
    import tensorflow as tf

    small = tf.image.resize(x.astype("float32"), (16, 16), antialias=True).numpy()
    luma = small @ np.asarray(ensemble.LUMA, dtype="float32")[:, None]
    np.testing.assert_allclose(
        logits["gray_net"], gray.model.predict(luma, verbose=0).ravel(), rtol=1e-4, atol=1e-4
    )


@pytest.fixture(scope="module")
def built(images, frozen):
    """Members, their validation logits and statistics, and the ensemble built from them:
    once for the tests that only read them (each build traces MobileNetV2 again)."""
    x, y = images
    keras.utils.set_random_seed(2)
    members = [gray_member(), rgb_member(), frozen[0]]
    val_logits = ensemble.member_logits(members, x)
    stats = ensemble.standardise(val_logits)
    model = ensemble.build_ensemble(members, stats, val_logits, y)
    return members, val_logits, stats, model


def test_ensemble_is_the_mean_of_standardised_logits(images, built):
    x, y = images
    _, val_logits, stats, model = built
    assert model.input_shape == (None, 32, 32, 3)
    probability = model.predict(x, verbose=0).ravel().astype(np.float64)
    mean = ensemble.ensemble_logit(val_logits, stats, val_logits.columns)
    kernel, bias = model.get_layer("probability").get_weights()
    expected = 1 / (1 + np.exp(-(mean * kernel[0, 0] + bias[0])))
    np.testing.assert_allclose(probability, expected, rtol=1e-4, atol=1e-5)
    assert kernel[0, 0] > 0  # monotone: the output ranks as the averaged score does
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y, probability) == pytest.approx(roc_auc_score(y, mean), abs=1e-6)


def test_saved_ensemble_loads_in_safe_mode_and_adapts(images, built, tmp_path):
    x, _ = images
    _, _, _, model = built
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    adapted = adapt_batchnorm(loaded, x, min_images=50)
    names = adapted_layer_names(adapted)
    # The gray member's batch norm and the frozen member's feature standardisation are adapted;
    # the nested pretrained bases are not.
    assert "frozen_feature_standardisation" in names
    assert any(n.startswith("batch_normalization") for n in names)
    assert not any("/" in n for n in names)
    shifted = (x.astype("float32") * 0.5 + 40).astype(np.uint8)
    again = adapt_batchnorm(loaded, shifted, min_images=50)
    layer = again.get_layer("frozen_feature_standardisation")
    before = loaded.get_layer("frozen_feature_standardisation").get_weights()[0]
    assert not np.allclose(layer.get_weights()[0], before)


def test_grad_cam_of_an_ensemble_sums_its_members(images, built):
    x, _ = images
    _, _, _, model = built
    names = explain.feature_layer_names(model)
    assert sorted(names) == sorted(
        f"{explain.MEMBER_FEATURES_PREFIX}{n}"
        for n in ("gray_net", "rgb_net", "frozen_mobilenetv2")
    )
    maps = explain.grad_cam(model, x[:4])
    assert maps.shape == (4, 32, 32)
    assert np.all((maps >= 0) & (maps <= 1))


def test_scoring_reads_back_each_members_part_and_agrees_with_the_model(images, built):
    from helpers import features
    from helpers.evaluate import model_outputs

    x, _ = images
    members, _, _, model = built
    calls = {layer.name: len(layer._inbound_nodes) for layer in model.layers}
    extractors, _ = features.split_for_reuse(model)
    # One part per member: the frozen member at its features (which adaptation reads), not
    # again at its logit; the others at their logits.
    assert sorted(extractors) == sorted(
        [features.FROZEN_PREFIX_END, "gray_net_logit", "rgb_net_logit"]
    )
    shifted = (x.astype("float32") * 0.8 + 20).astype(np.uint8)  # images no step has scored
    before = features.computed_image_count()
    first = model_outputs(model, shifted, reuse_cached_parts=True)
    assert features.computed_image_count() - before == 3 * len(x)  # each part once
    again = model_outputs(model, shifted, reuse_cached_parts=True)
    assert features.computed_image_count() - before == 3 * len(x)  # read back
    np.testing.assert_array_equal(again, first)
    np.testing.assert_allclose(first, model_outputs(model, shifted), atol=1e-5)
    # Computed together in one pass, each part is what its extractor alone computes.
    size = features.feature_batch_size(shifted.shape)
    for extractor in extractors.values():
        np.testing.assert_array_equal(
            features.cached_outputs(extractor, shifted),
            extractor.predict(shifted, batch_size=size, verbose=0),
        )
    # The model's own layers keep their one call (adaptation and Grad-CAM read it).
    assert {layer.name: len(layer._inbound_nodes) for layer in model.layers} == calls
    # member_logits wrote the parts the ensemble reads: scoring its images computes nothing.
    before = features.computed_image_count()
    ensemble.member_logits(members, shifted)
    assert features.computed_image_count() == before


def test_adapting_with_cached_parts_equals_adapting_without(images, built):
    from helpers import features
    from helpers.evaluate import model_outputs

    x, _ = images
    _, _, _, model = built
    shifted = (x.astype("float32") * 0.6 + 50).astype(np.uint8)
    plain = adapt_batchnorm(model, shifted, min_images=50)
    before = features.computed_image_count()
    reused = adapt_batchnorm(model, shifted, min_images=50, reuse_cached_parts=True)
    assert features.computed_image_count() - before == len(x)  # the frozen prefix, once
    layer = features.FROZEN_PREFIX_END
    for a, b in zip(plain.get_layer(layer).get_weights(), reused.get_layer(layer).get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(
        reused.get_layer(layer).get_weights()[0], model.get_layer(layer).get_weights()[0]
    )
    # Scoring the adapted copy reads the frozen prefix back; the gray member, whose batch
    # norm adaptation changed, is computed again.
    before = features.computed_image_count()
    scores = model_outputs(reused, shifted, reuse_cached_parts=True)
    assert features.computed_image_count() - before == 2 * len(x)
    np.testing.assert_allclose(scores, model_outputs(plain, shifted), atol=1e-5)


def test_a_model_without_parts_to_reuse_is_scored_as_it_is(images):
    from helpers import features

    x, _ = images
    model = gray_member(size=32).model
    assert features.split_for_reuse(model) is None
    luma = x[..., :1]
    before = features.computed_image_count()
    np.testing.assert_array_equal(
        features.predict_reusing(model, luma, batch_size=16),
        model.predict(luma, batch_size=16, verbose=0),
    )
    assert features.computed_image_count() == before


def test_choice_keeps_every_member_when_validation_cannot_tell(images):
    x, y = images
    rng = np.random.default_rng(3)
    signal = y * 2.0 - 1.0
    logits = pd.DataFrame({n: signal + rng.normal(0, 1.0, len(y)) for n in ("a", "b", "c")})
    stats = ensemble.standardise(logits)
    persons = [f"p{i}" for i in range(len(y))]
    table = ensemble.choice_table(logits, stats, y, persons)
    assert list(table.index) == [
        ensemble.RECIPE,
        "without a",
        "without b",
        "without c",
        "a alone",
        "b alone",
        "c alone",
    ]
    assert table.loc[ensemble.RECIPE, ensemble.DIFFERENCE] == 0
    decision, members = ensemble.choose_members(table)
    assert decision.choice == ensemble.RECIPE and members == ["a", "b", "c"]


def test_choice_drops_a_member_that_only_adds_noise():
    rng = np.random.default_rng(4)
    y = np.repeat([0, 1], 300)
    signal = y * 3.0 - 1.5
    logits = pd.DataFrame(
        {
            "good": signal + rng.normal(0, 0.6, len(y)),
            "also good": signal + rng.normal(0, 0.6, len(y)),
            "noise": rng.normal(0, 1, len(y)),
        }
    )
    stats = ensemble.standardise(logits)
    table = ensemble.choice_table(logits, stats, y, [f"p{i}" for i in range(len(y))])
    decision, members = ensemble.choose_members(table)
    assert decision.adopted
    assert "noise" not in members


def test_members_must_share_the_split(xrays32, tmp_path):
    folder = tmp_path / "model_x"
    folder.mkdir()
    with pytest.raises(EnsembleError, match="metrics.json does not exist"):
        ensemble.check_shared_split(folder, xrays32)
    params = {"split_seed": xrays32.seed, "val_fraction": xrays32.val_fraction}
    (folder / "metrics.json").write_text(json.dumps({"parameters": params}))
    pd.DataFrame({"path": xrays32.val.paths, "label": 0, "score": 0.5}).to_csv(
        folder / "predictions_val.csv", index=False
    )
    ensemble.check_shared_split(folder, xrays32)  # the same split: accepted
    (folder / "metrics.json").write_text(
        json.dumps({"parameters": {**params, "split_seed": xrays32.seed + 1}})
    )
    with pytest.raises(EnsembleError, match="split_seed"):
        ensemble.check_shared_split(folder, xrays32)
    (folder / "metrics.json").write_text(json.dumps({"parameters": params}))
    pd.DataFrame({"path": xrays32.val.paths[1:], "label": 0, "score": 0.5}).to_csv(
        folder / "predictions_val.csv", index=False
    )
    with pytest.raises(EnsembleError, match=r"predictions_val.csv.*1 only in the chapter's"):
        ensemble.check_shared_split(folder, xrays32)


def test_images_must_be_at_the_largest_members_size(images):
    with pytest.raises(EnsembleError, match=r"\(n, 24, 24, 3\)"):
        ensemble.member_logits([gray_member(), rgb_member()], images[0])


def test_a_constant_member_is_refused():
    with pytest.raises(EnsembleError, match="same logit"):
        ensemble.standardise(pd.DataFrame({"flat": np.zeros(10)}))


def test_validation_errors_count_shared_and_own_errors():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    logits = pd.DataFrame(
        {
            "a": [-2.0, -1.0, 1.5, -1.5, 2.0, 1.0, 1.2, 2.5],  # one false alarm (image 2)
            "b": [-2.0, 1.4, -1.0, -1.5, 2.0, 1.0, 1.2, 2.5],  # another one (image 1)
        }
    )
    stats = {"a": (0.0, 1.0), "b": (0.0, 1.0)}
    table = ensemble.validation_errors(logits, stats, y, ["a", "b"], target_sensitivity=1.0)
    assert table.loc["a", "errors"] == 1 and table.loc["b", "errors"] == 1
    assert table.loc["a", "made by every member"] == 0
    assert table.loc["a", "made by no other member"] == 1
    # Averaged, each false alarm is outvoted: the ensemble makes neither.
    assert table.loc["ensemble (a + b)", "errors"] == 0


def test_prevalence_shift_scores_a_subset_with_the_share_asked_for(images):
    x, y = images
    keras.utils.set_random_seed(5)
    member = gray_member(size=32)
    inputs = keras.Input((32, 32, 3))
    probe = keras.Model(inputs, ensemble._branch(member, inputs, 32))
    model = keras.models.clone_model(probe)  # each layer called once, as build_ensemble's
    model.set_weights(probe.get_weights())
    table = ensemble.prevalence_shift(model, x, y, share=0.25, thresholds=(0.0, 0.0), seed=0)
    assert list(table.index) == ["as trained", "adapted to this folder"]
    assert table["PNEUMONIA share"].iloc[0] == pytest.approx(0.25, abs=0.02)
    assert (table["images"] == (y == 0).sum() + round((y == 0).sum() / 3)).all()
    # The scores already computed (the chapter's validation step) give the same first row.
    from helpers.evaluate import model_outputs

    given = ensemble.prevalence_shift(
        model,
        x,
        y,
        share=0.25,
        thresholds=(0.0, 0.0),
        seed=0,
        scores=model_outputs(model, x),
    )
    pd.testing.assert_frame_equal(given, table)
    with pytest.raises(ensemble.EnsembleError, match="one score per image"):
        ensemble.prevalence_shift(
            model, x, y, share=0.25, thresholds=(0.0, 0.0), seed=0, scores=np.zeros(3)
        )
