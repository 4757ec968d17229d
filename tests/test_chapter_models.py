"""The chapters' own Keras models, as their notebooks define, build and compile them.

Each test runs the notebook cells themselves (tests/chapter_models.py): the ``model`` cell
defining ``make_model``, the cell building and compiling it and, for the training recipe,
the cell calling ``train.fit``. What is checked is what the book shows: the case study's
five architectures and their parameter counts, their optimisers and losses, what they
output, and model_6's options and training recipe.
"""

from __future__ import annotations

import inspect
import json
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("keras")

import keras
from chapter_models import BOOK, chapter_model, compile_cell, make_model_function, model_cell
from keras import layers

from helpers import ablation, data, evaluate, imagenet, train
from helpers.layers import PerImageStandardization

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

CASE_STUDY = ("model_1", "model_2", "model_3", "model_4", "model_5")
SETTINGS = {  # chapter: (optimizer class, learning rate, output, from_logits)
    "model_1": ("RMSprop", 1e-4, "probability", False),
    "model_2": ("RMSprop", 1e-5, "probability", False),
    "model_3": ("Adam", 1e-5, "probability", False),
    "model_4": ("RMSprop", 1e-4, "logit", True),
    "model_5": ("RMSprop", 1e-4, "logit", True),
    "model_6": ("AdamW", 2e-3, "logit", True),
}
#: The case study's parameter counts at 128 px (total, trainable), as it printed them.
PARAMETERS_AT_128 = {
    "model_1": (1_054_865, 1_054_865),
    "model_2": (1_055_377, 1_055_377 - 256),
    "model_3": (1_055_377, 1_055_377 - 256),
    "model_4": (2_259_265, 1_281),
    "model_5": (2_259_265, 1_281),
}


# ---------------------------------------------------------------------------------------
# Running a chapter's cells
# ---------------------------------------------------------------------------------------


def _code_sources(chapter: str) -> list[str]:
    notebook = json.loads((BOOK / f"{chapter}.ipynb").read_text(encoding="utf-8"))
    return [
        "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        for c in notebook["cells"]
        if c["cell_type"] == "code"
    ]


def cell_calling(chapter: str, call: str) -> str:
    """The one code cell of ``chapter`` containing ``call``, without its print lines."""
    cells = [s for s in _code_sources(chapter) if call in s]
    assert len(cells) == 1, (
        f"{chapter}.ipynb must have exactly one cell with {call!r}, has {len(cells)}"
    )
    return "\n".join(line for line in cells[0].splitlines() if not line.startswith("print("))


def run_model_6_chapter(
    xrays,
    *,
    choice=ablation.VARIANTS[0],
    epochs: int = 1,
    batch_size: int = 8,
    seed: int = 0,
    fit: bool = False,
    train_module=train,
) -> dict:
    """model_6's model cell and compile cell (and its fit cell if ``fit``) on ``xrays``,
    with the ablation's ``choice``; returns the cells' namespace. ``train_module`` is what
    the cells call ``train`` (helpers.train by default)."""
    namespace = {
        "keras": keras,
        "layers": layers,
        "train": train_module,
        "data": data,
        "PerImageStandardization": PerImageStandardization,
        "xrays": xrays,
        "choice": choice,
        "params": SimpleNamespace(
            strategy="default", seed=seed, epochs=epochs, batch_size=batch_size
        ),
    }
    exec(compile(model_cell("model_6"), "model_6.ipynb[model]", "exec"), namespace)
    exec(compile(compile_cell("model_6"), "model_6.ipynb[compile]", "exec"), namespace)
    if fit:
        exec(
            compile(cell_calling("model_6", "train.fit("), "model_6.ipynb[fit]", "exec"), namespace
        )
    return namespace


@pytest.fixture(scope="module")
def gray32(xray_folder):
    return data.load_chest_xrays(xray_folder.root, image_size=32, color_mode="grayscale", seed=0)


@pytest.fixture(scope="module")
def models32(gray32):
    """Every chapter's compiled model at 32 px (MobileNetV2 bases random; model_6 on the
    grayscale images its recipe loads)."""
    built = {c: chapter_model(c, image_size=32, base_weights="random") for c in CASE_STUDY}
    built["model_6"] = run_model_6_chapter(gray32)["model"]
    return built


def layer_types(model) -> list[str]:
    return [type(layer).__name__ for layer in model.layers]


def of_type(model, name: str) -> list:
    return [layer for layer in model.layers if type(layer).__name__ == name]


# ---------------------------------------------------------------------------------------
# The cells themselves
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("chapter", CASE_STUDY)
def test_each_case_study_chapter_defines_make_model_and_builds_it_on_rgb_images(chapter):
    make_model = make_model_function(chapter)
    expected = (
        ["input_shape", "base_weights"] if chapter in ("model_4", "model_5") else ["input_shape"]
    )
    assert list(inspect.signature(make_model).parameters) == expected
    # The compile cell builds on 3 channels, and the chapter loads RGB images for it.
    code = "".join(compile_cell(chapter).split())  # as ruff may wrap it
    assert "make_model((params.image_size,params.image_size,3)" in code
    assert 'color_mode="rgb"' in cell_calling(chapter, "data.load_chest_xrays(")


def test_model_6_defines_its_builder_with_the_ablations_options():
    signature = inspect.signature(make_model_function("model_6"))
    assert list(signature.parameters) == [
        "input_shape",
        "width",
        "augment",
        "standardize",
        "dropout",
    ]
    defaults = {k: p.default for k, p in signature.parameters.items() if k != "input_shape"}
    assert defaults == {
        "width": 32,
        "augment": "geometric+intensity",
        "standardize": True,
        "dropout": 0.3,
    }
    # The recipe (the ablation's first row) asks for the builder's defaults.
    assert ablation.VARIANTS[0].network_options() == {
        k: defaults[k] for k in ("width", "augment", "standardize")
    }


def test_every_model_is_named_after_its_chapter(models32):
    # The test set is scored once per model *name*: the names must differ between chapters.
    assert {chapter: model.name for chapter, model in models32.items()} == {c: c for c in SETTINGS}


# ---------------------------------------------------------------------------------------
# The case study's parameter counts at 128 px
# ---------------------------------------------------------------------------------------


def _counts(model) -> tuple[int, int, int]:
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    frozen = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    return model.count_params(), trainable, frozen


@pytest.mark.parametrize("chapter", CASE_STUDY)
def test_parameter_counts_at_128_px_are_the_case_studys(chapter):
    model = chapter_model(
        chapter, image_size=128, base_weights="random"
    )  # weights do not change counts
    total, trainable, frozen = _counts(model)
    assert (total, trainable) == PARAMETERS_AT_128[chapter]
    assert frozen == total - trainable
    if chapter in ("model_2", "model_3"):
        # The 256 non-trainable parameters: BatchNormalization's moving mean and variance.
        (bn,) = of_type(model, "BatchNormalization")
        assert sum(int(np.prod(w.shape)) for w in bn.non_trainable_weights) == frozen == 256


# ---------------------------------------------------------------------------------------
# Architectures
# ---------------------------------------------------------------------------------------


def _check_small_cnn(model, *, dropout, batch_norm):
    expected = ["Rescaling"] + ["Conv2D", "MaxPooling2D"] * 3
    expected += ["Dropout"] if dropout is not None else []
    expected += ["Flatten", "Dense"]
    expected += ["BatchNormalization"] if batch_norm else []
    expected += ["Dense"]
    assert [t for t in layer_types(model) if t != "InputLayer"] == expected
    (rescaling,) = of_type(model, "Rescaling")
    assert rescaling.scale == pytest.approx(1 / 255) and rescaling.offset == 0
    convs = of_type(model, "Conv2D")
    assert [c.filters for c in convs] == [8, 16, 32]
    assert all(c.kernel_size == (3, 3) and c.padding == "same" for c in convs)
    assert all(c.activation is keras.activations.relu for c in convs)
    assert all(p.pool_size == (2, 2) for p in of_type(model, "MaxPooling2D"))
    hidden, last = of_type(model, "Dense")
    assert hidden.units == 128 and hidden.activation is keras.activations.relu
    assert last.units == 1 and last.activation is keras.activations.sigmoid
    if dropout is not None:
        assert of_type(model, "Dropout")[0].rate == pytest.approx(dropout)
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 1)


def test_model_1_layers(models32):
    _check_small_cnn(models32["model_1"], dropout=None, batch_norm=False)


def test_model_2_adds_dropout_and_batch_norm(models32):
    _check_small_cnn(models32["model_2"], dropout=0.2, batch_norm=True)


def test_model_3_lighter_dropout(models32):
    _check_small_cnn(models32["model_3"], dropout=0.1, batch_norm=True)


@pytest.mark.parametrize("chapter", ["model_4", "model_5"])
def test_mobilenet_models_layers(models32, chapter):
    model = models32[chapter]
    bases = [
        layer
        for layer in model.layers
        if isinstance(layer, keras.Model) and layer.name.startswith("mobilenetv2")
    ]
    assert len(bases) == 1
    base = bases[0]
    assert base.trainable is False
    assert base.trainable_weights == []
    assert base.output.shape[-1] == 1280
    types = layer_types(model)
    assert types[types.index(type(base).__name__) + 1 :] == [
        "GlobalAveragePooling2D",
        "Dropout",
        "Dense",
    ]
    assert of_type(model, "Dropout")[0].rate == pytest.approx(0.2)
    last = model.layers[-1]
    assert last.units == 1 and last.activation is keras.activations.linear
    # Only the classifier head trains: its kernel and bias.
    assert [tuple(w.shape) for w in model.trainable_weights] == [(1280, 1), (1,)]
    # MobileNetV2 expects [-1, 1]: the preprocessing maps 0 -> -1 and 255 -> 1.
    (pre,) = of_type(model, "Rescaling")
    assert pre.scale * 0 + pre.offset == pytest.approx(
        -1
    ) and pre.scale * 255 + pre.offset == pytest.approx(1)
    augmentation = [layer for layer in model.layers if layer.name == "data_augmentation"]
    if chapter == "model_4":
        (augment,) = augmentation
        assert layer_types(augment) == ["RandomFlip", "RandomRotation"]
        assert augment.layers[0].mode == "horizontal"
        assert model.layers.index(augment) < model.layers.index(base)
    else:
        assert augmentation == [] and not [t for t in types if t.startswith("Random")]


def test_mobilenet_needs_at_least_32_pixels():
    for chapter in ("model_4", "model_5"):
        with pytest.raises(ValueError, match="at least 32x32"):
            make_model_function(chapter)((16, 16, 3), "random")


# Keras 3.15 warns about an empty internal container of MobileNetV2 when loading its weights
# file; every weight is loaded (checked below).
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Skipping nested container:UserWarning")
def test_mobilenet_models_refuse_one_channel_input_with_pretrained_weights(tmp_path):
    """Pretrained base weights have 3 input channels: a 1-channel model can not take them.

    A weights file saved from a 3-channel MobileNetV2 stands in for the ImageNet file (the
    same loading path: ``imagenet.base_weights_argument`` accepts any Keras ``.h5`` file).
    """
    weights = tmp_path / "base.weights.h5"
    saved = keras.applications.MobileNetV2(input_shape=(32, 32, 3), include_top=False, weights=None)
    saved.save_weights(weights)
    assert imagenet.base_weights_argument(str(weights)) == str(weights)
    for chapter in ("model_4", "model_5"):
        make_model = make_model_function(chapter)
        model = make_model((32, 32, 3), str(weights))
        assert model.input_shape == (None, 32, 32, 3)
        (base,) = [layer for layer in model.layers if layer.name.startswith("mobilenetv2")]
        assert all(np.array_equal(a, b) for a, b in zip(base.get_weights(), saved.get_weights()))
        with pytest.raises(ValueError, match=r"(?s)\(3, 3, 1, 32\).*\(3, 3, 3, 32\)"):
            make_model((32, 32, 1), str(weights))


def test_the_small_cnns_take_the_channels_they_are_given():
    for chapter in ("model_1", "model_2", "model_3"):
        assert make_model_function(chapter)((32, 32, 1)).input_shape == (None, 32, 32, 1)


def test_model_6_is_a_grayscale_residual_cnn(models32, gray32):
    model = models32["model_6"]
    assert gray32.train.images.shape[-1] == 1
    assert model.input_shape == (None, 32, 32, 1)  # follows the data the recipe loads
    assert ablation.VARIANTS[0].color_mode == "grayscale"
    assert evaluate.output_kind(model) == "logit"
    assert len(of_type(model, "Add")) == 4  # four residual blocks
    assert of_type(model, "PerImageStandardization")
    stem = of_type(model, "Conv2D")[0]
    assert (stem.filters, stem.kernel_size, stem.strides) == (32, (5, 5), (2, 2))
    assert {t for t in layer_types(model) if t.startswith("Random")} == {
        "RandomTranslation",
        "RandomZoom",
        "RandomRotation",
        "RandomContrast",
        "RandomBrightness",
    }
    assert of_type(model, "Dropout")[0].rate == pytest.approx(0.3)


@pytest.mark.parametrize(
    "options, randoms, standardized, widths",
    [
        ({"augment": "none"}, set(), True, [32, 64, 128, 256]),
        (
            {"augment": "geometric"},
            {"RandomTranslation", "RandomZoom", "RandomRotation"},
            True,
            [32, 64, 128, 256],
        ),
        (
            {"standardize": False},
            {
                "RandomTranslation",
                "RandomZoom",
                "RandomRotation",
                "RandomContrast",
                "RandomBrightness",
            },
            False,
            [32, 64, 128, 256],
        ),
        ({"width": 16, "augment": "none"}, set(), True, [16, 32, 64, 128]),
    ],
    ids=["no augmentation", "geometric", "pixels / 255", "half width"],
)
def test_model_6_builder_options(options, randoms, standardized, widths):
    model = make_model_function("model_6")((32, 32, 1), **options)
    assert {t for t in layer_types(model) if t.startswith("Random")} == randoms
    assert bool(of_type(model, "PerImageStandardization")) is standardized
    adds = of_type(model, "Add")
    assert [add.output.shape[-1] for add in adds] == widths
    assert of_type(model, "Conv2D")[0].filters == widths[0]
    assert evaluate.output_kind(model) == "logit"


# ---------------------------------------------------------------------------------------
# Optimisers, losses and outputs
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("chapter", list(SETTINGS))
def test_optimizer_learning_rate_loss_and_output(models32, chapter):
    optimizer, rate, output, from_logits = SETTINGS[chapter]
    model = models32[chapter]
    assert type(model.optimizer).__name__ == optimizer
    assert float(model.optimizer.learning_rate) == pytest.approx(rate, rel=1e-6)
    assert isinstance(model.loss, keras.losses.BinaryCrossentropy)
    assert model.loss.get_config()["from_logits"] is from_logits
    assert evaluate.output_kind(model) == output


def test_output_kinds_are_probabilities_for_models_1_to_3_and_logits_for_4_to_6(models32):
    kinds = {chapter: evaluate.output_kind(model) for chapter, model in models32.items()}
    assert kinds == {
        "model_1": "probability",
        "model_2": "probability",
        "model_3": "probability",
        "model_4": "logit",
        "model_5": "logit",
        "model_6": "logit",
    }


def test_model_6_uses_adamw_with_its_weight_decay(models32):
    namespace = run_model_6_chapter(
        SimpleNamespace(train=SimpleNamespace(images=np.zeros((1, 32, 32, 1))))
    )
    assert namespace["LEARNING_RATE"] == 2e-3 and namespace["WEIGHT_DECAY"] == 1e-4
    assert models32["model_6"].optimizer.weight_decay == pytest.approx(namespace["WEIGHT_DECAY"])


def test_logit_models_measure_accuracy_at_logit_zero(models32):
    """A logit of 0.3 is a probability of 0.57: training accuracy must cut logits at 0."""
    for chapter, (_, _, output, _) in SETTINGS.items():
        user_metrics = models32[chapter]._compile_metrics._user_metrics  # Keras 3 internals
        (accuracy,) = [m for m in user_metrics if isinstance(m, keras.metrics.BinaryAccuracy)]
        assert accuracy.name == "accuracy"
        assert accuracy.threshold == (0.0 if output == "logit" else 0.5), chapter


def test_models_run_on_a_batch(models32):
    rng = np.random.default_rng(0)
    for chapter, model in models32.items():
        channels = model.input_shape[-1]
        images = rng.integers(0, 256, size=(2, 32, 32, channels)).astype("float32")
        out = np.asarray(model(images, training=False))
        assert out.shape == (2, 1) and np.isfinite(out).all(), chapter
        if SETTINGS[chapter][2] == "probability":
            assert ((out >= 0) & (out <= 1)).all()


# ---------------------------------------------------------------------------------------
# Training recipes: model_6's own, the case study's
# ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_model_6_trains_with_class_weights_and_its_cosine_schedule(gray32):
    namespace = run_model_6_chapter(gray32, epochs=2, batch_size=8, fit=True)
    run = namespace["run"]
    assert run.class_weight == data.class_weights(gray32.train.labels)
    assert run.history["learning_rate"].iloc[0] == pytest.approx(2e-3)
    assert run.history["learning_rate"].iloc[1] == pytest.approx(1e-3)  # half way down the cosine
    # Without class weights: what the fit cell passes to train.fit is enough to show it
    # (fit records class_weight as given, checked above), so nothing is trained again.
    passed = {}

    def fit_noting_its_arguments(model, xrays, **kwargs):
        passed.update(kwargs)
        return SimpleNamespace(class_weight=kwargs["class_weight"])

    noting = SimpleNamespace(
        distribution_strategy=train.distribution_strategy,
        set_seed=train.set_seed,
        fit=fit_noting_its_arguments,
    )
    unweighted = run_model_6_chapter(
        gray32,
        choice=ablation.variant_named("no class weights"),
        epochs=1,
        fit=True,
        train_module=noting,
    )["run"]
    assert passed["class_weight"] is None and unweighted.class_weight is None
    assert passed["epochs"] == 1 and len(passed["callbacks"]) == 1  # the cosine schedule still


def test_the_case_study_chapters_train_unweighted_at_a_constant_rate():
    for chapter in CASE_STUDY:
        cell = cell_calling(chapter, "train.fit(")
        assert "class_weight=None" in cell and "callbacks=[]" in cell, chapter
