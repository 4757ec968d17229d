"""The chapters' own Keras models, taken from the notebooks, for the tests.

A model chapter defines its network in a code cell tagged ``model`` (a function
``make_model``) and builds and compiles it in the next code cell that calls
``model.compile``. The tests execute those two cells, as written in ``book/<chapter>.ipynb``,
so that what is tested is what the book shows; nothing here copies a model.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parent.parent
BOOK = REPO / "book"


def _code_cells(chapter: str) -> list[dict]:
    notebook = json.loads((BOOK / f"{chapter}.ipynb").read_text(encoding="utf-8"))
    return [c for c in notebook["cells"] if c["cell_type"] == "code"]


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


@cache
def model_cell(chapter: str) -> str:
    """The source of ``chapter``'s cell tagged ``model``."""
    cells = [c for c in _code_cells(chapter) if "model" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise AssertionError(
            f"{chapter}.ipynb must have exactly one code cell tagged 'model', has {len(cells)}"
        )
    return _source(cells[0])


@cache
def compile_cell(chapter: str) -> str:
    """The source of ``chapter``'s cell that builds and compiles the model, without
    ``model.summary()`` and prints."""
    cells = [_source(c) for c in _code_cells(chapter) if "model.compile(" in _source(c)]
    if len(cells) != 1:
        raise AssertionError(
            f"{chapter}.ipynb must have exactly one cell calling model.compile, has {len(cells)}"
        )
    return "\n".join(
        line for line in cells[0].splitlines() if not line.startswith(("model.summary()", "print("))
    )


def _namespace() -> dict:
    import keras
    from keras import layers

    from helpers import imagenet, train
    from helpers.layers import PerImageStandardization

    return {
        "keras": keras,
        "layers": layers,
        "imagenet": imagenet,
        "train": train,
        "PerImageStandardization": PerImageStandardization,
    }


def make_model_function(chapter: str):
    """``chapter``'s ``make_model`` function, defined by executing its ``model`` cell."""
    namespace = _namespace()
    exec(compile(model_cell(chapter), f"{chapter}.ipynb[model]", "exec"), namespace)
    return namespace["make_model"]


def chapter_model(
    chapter: str,
    *,
    image_size: int,
    seed: int = 0,
    base_weights: str = "random",
    strategy: str = "default",
):
    """``chapter``'s model, built and compiled by its own cells (models 1-5), with the
    given image size and seed. MobileNetV2 bases are random unless ``base_weights`` says."""
    namespace = _namespace()
    exec(compile(model_cell(chapter), f"{chapter}.ipynb[model]", "exec"), namespace)
    namespace["params"] = SimpleNamespace(
        strategy=strategy, seed=seed, image_size=image_size, base_weights=base_weights
    )
    exec(compile(compile_cell(chapter), f"{chapter}.ipynb[compile]", "exec"), namespace)
    return namespace["model"]


def evaluate_like_a_chapter(model_id: str, model, run, xrays, results_dir, *, parameters=None):
    """The four evaluation steps of a model chapter, then its results folder, in the
    chapter's order. Returns ``(evaluation, folder)``."""
    from helpers import evaluate, results

    val = evaluate.score_validation(model, xrays, batch_size=run.batch_size)
    threshold = evaluate.threshold_on_validation(val, target_sensitivity=0.95)
    test = evaluate.score_test_once(model, xrays, threshold=threshold, batch_size=run.batch_size)
    evaluation = evaluate.summarise(model_id, val, test, threshold)
    folder = results.save_results(
        evaluation,
        model=model,
        run=run,
        xrays=xrays,
        parameters={"results_dir": str(results_dir), **(parameters or {})},
        title=f"{model_id} (test)",
    )
    return evaluation, folder


def fake_pretrained_base(monkeypatch):
    """A small conv base standing in for ImageNet MobileNetV2, one that passes signal (a
    randomly initialised MobileNetV2 passes none, so it can not show a difference)."""
    import keras

    def fake(input_shape, include_top, weights):
        assert weights is None  # base_weights="random"
        inputs = keras.Input(shape=input_shape)
        x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
        return keras.Model(inputs, x, name="fake_mobilenet_base")

    monkeypatch.setattr(keras.applications, "MobileNetV2", fake)
