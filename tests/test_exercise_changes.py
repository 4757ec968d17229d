"""The model chapters' exercises: each chapter ends with them, and every exercise that asks for
a code change is applied here, built, compiled and trained for one epoch at CI size.

An exercise that names a change carries it in its markdown cell's metadata, as
``{"exercise_change": {"cell": "model" | "compile", "old": ..., "new": ...}}``: ``"model"`` is
the code cell tagged ``model``, ``"compile"`` the cell calling ``model.compile(`` (see
tests/chapter_models.py). The test replaces ``old`` (found exactly once) by ``new`` in that
cell as the notebook has it now, builds the chapter's model from the changed cells on the
tiny generated images of tests/conftest.py, and checks what the exercise and its solution say
the change does (a parameter count, a layer, a learning rate). MobileNetV2 bases are replaced
by a small stand-in (``fake_pretrained_base``), so nothing is downloaded and each case takes
seconds.
"""

from __future__ import annotations

import json
import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
from chapter_models import BOOK, _namespace, _source, fake_pretrained_base

from helpers import chapters, data, train
from helpers.book import exercise_runs

# Keras' TensorFlow backend trips a NumPy 2 deprecation inside fit/predict; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

MODEL_CHAPTERS = list(chapters.model_ids())
EXERCISE = re.compile(r"^`{3,}\{exercise\}\s+(?P<title>.+)\n:label:\s+(?P<label>\S+)")
SOLUTION = re.compile(r"^`{3,}\{solution\}\s+(?P<label>\S+)\n:class:\s+dropdown\b")


def notebook(chapter: str) -> dict:
    return json.loads((BOOK / f"{chapter}.ipynb").read_text(encoding="utf-8"))


def exercise_cells(chapter: str) -> list[tuple[str, dict]]:
    """``(label, cell)`` of each exercise, in the notebook's order."""
    found = []
    for cell in notebook(chapter)["cells"]:
        match = EXERCISE.match(_source(cell)) if cell["cell_type"] == "markdown" else None
        if match:
            found.append((match["label"], cell))
    return found


def changes() -> list[tuple[str, str, dict, str]]:
    """``(chapter, label, change, exercise text)`` of every exercise that names a change."""
    return [
        (chapter, label, cell["metadata"]["exercise_change"], _source(cell))
        for chapter in MODEL_CHAPTERS
        for label, cell in exercise_cells(chapter)
        if "exercise_change" in cell["metadata"]
    ]


def changed(chapter: str, which: str, change: dict | None) -> str:
    """The chapter's ``which`` cell, with ``change`` applied where it names that cell (the
    same code that helpers.book.exercise_runs runs a changed chapter with)."""
    nb = notebook(chapter)
    if change is None or change["cell"] != which:
        return _source(exercise_runs.target_cell(nb, which, name=chapter))
    return exercise_runs.changed_source(nb, change, name=chapter)


def build(chapter: str, change: dict | None, *, image_size: int = 32):
    """The chapter's compiled model from its (changed) cells; ``namespace`` for model 7."""
    namespace = _namespace()
    exec(compile(changed(chapter, "model", change), f"{chapter}[model]", "exec"), namespace)
    if chapter in ("model_6", "model_7"):
        import keras

        if chapter == "model_6":
            model = namespace["make_model"]((image_size, image_size, 1))
        else:
            base, head = namespace["make_parts"]((image_size, image_size, 3), "random")
            model = namespace["make_model"]((image_size, image_size, 3), base, head)
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.BinaryCrossentropy(from_logits=True),
        )
        return model, namespace
    namespace["params"] = SimpleNamespace(
        strategy="default", seed=0, image_size=image_size, base_weights="random"
    )
    cell = "\n".join(
        line
        for line in changed(chapter, "compile", change).splitlines()
        if not line.startswith(("model.summary()", "print("))
    )
    exec(compile(cell, f"{chapter}[compile]", "exec"), namespace)
    return namespace["model"], namespace


def layer_types(model) -> list[str]:
    return [type(layer).__name__ for layer in model._flatten_layers(include_self=False)]


def learning_rate(model) -> float:
    return float(np.asarray(model.optimizer.learning_rate))


# What each change does, as its exercise and solution say: (changed, unchanged, namespace).
def _dense_16(new, old, _):
    dense = [layer.units for layer in new.layers if type(layer).__name__ == "Dense"]
    assert dense == [16, 1]
    # The solution's counts are model.summary()'s at the chapter's 128 px.
    assert build("model_1", CHANGES["model-1-ex-dense"], image_size=128)[0].count_params() == (
        137_137
    )
    assert build("model_1", None, image_size=128)[0].count_params() == 1_054_865


def _rate(expected, optimizer):
    def check(new, old, _):
        assert type(new.optimizer).__name__ == optimizer
        assert learning_rate(new) == pytest.approx(expected)
        assert learning_rate(old) != pytest.approx(expected)
        assert new.count_params() == old.count_params()

    return check


def _dropout_02(new, old, _):
    rates = [layer.rate for layer in new.layers if type(layer).__name__ == "Dropout"]
    assert rates == [pytest.approx(0.2)]
    assert new.count_params() == old.count_params()


def _max_pooling(new, old, _):
    assert "GlobalMaxPooling2D" in layer_types(new) and "GlobalMaxPooling2D" not in layer_types(old)
    assert "GlobalAveragePooling2D" not in layer_types(new)
    assert new.count_params() == old.count_params()


def _no_shortcut(new, old, _):
    assert layer_types(old).count("Add") == 4  # one per residual block
    assert "Add" not in layer_types(new)
    assert new.count_params() < old.count_params()  # the 1 x 1 shortcut convolutions are gone


def _hidden_head(new, old, namespace):
    _, head = namespace["make_parts"]((32, 32, 3), "random")
    head.build((None, 4, 4, 1280))  # MobileNetV2's last feature map at 128 px
    assert head.count_params() == 82_049
    assert [type(layer).__name__ for layer in head.layers].count("Dense") == 2


def _model_2_joins(new, old, _):
    assert [m.name for m in new] == ["model_2", "model_6", "model_7", "frozen_mobilenetv2"]
    assert [m.name for m in old] == ["model_6", "model_7", "frozen_mobilenetv2"]


def saved_members(results_dir, chapters, *, image_size=32):
    """Tiny saved logit models in ``results_dir/<chapter>/``, as model chapters leave them."""
    import keras

    for chapter in chapters:
        folder = results_dir / chapter
        folder.mkdir(parents=True)
        inputs = keras.Input((image_size, image_size, 3))
        x = keras.layers.Conv2D(2, 3)(inputs)
        outputs = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(x))
        keras.Model(inputs, outputs, name=chapter).save(folder / "model.keras")
        params = {"image_size": image_size, "color_mode": "rgb"}
        (folder / "metrics.json").write_text(
            json.dumps({"model_id": chapter, "parameters": params})
        )


def members_of(change, results_dir):
    """model_8's candidate members from its (changed) model cell."""
    from helpers import ensemble

    namespace = {**_namespace(), "ensemble": ensemble}
    exec(compile(changed("model_8", "model", change), "model_8[model]", "exec"), namespace)
    return namespace["candidate_members"](results_dir, 32, "random")


EXPECTED = {
    "model-1-ex-dense": _dense_16,
    "model-2-ex-rate": _rate(1e-4, "RMSprop"),
    "model-3-ex-dropout": _dropout_02,
    "model-3-ex-adam-rate": _rate(1e-3, "Adam"),
    "model-4-ex-rate": _rate(1e-3, "RMSprop"),
    "model-5-ex-maxpool": _max_pooling,
    "model-6-ex-plain": _no_shortcut,
    "model-7-ex-head": _hidden_head,
    "model-8-ex-members": _model_2_joins,
}
CHANGES = {label: change for _, label, change, _ in changes()}


@pytest.mark.parametrize("chapter", MODEL_CHAPTERS)
def test_each_model_chapter_ends_with_three_exercises_and_their_solutions(chapter):
    cells = notebook(chapter)["cells"]
    headings = [
        i
        for i, c in enumerate(cells)
        if c["cell_type"] == "markdown" and "\n## Exercises" in "\n" + _source(c)
    ]
    assert len(headings) == 1, f"{chapter}: one heading 'Exercises', found {len(headings)}"
    after = [_source(c) for c in cells[headings[0] + 1 :]]
    assert all(c["cell_type"] == "markdown" for c in cells[headings[0] :]), (
        f"{chapter}: the exercises are the chapter's end, no code after them"
    )
    labels = [m["label"] for m in map(EXERCISE.match, after) if m]
    solved = [m["label"] for m in map(SOLUTION.match, after) if m]
    assert len(labels) >= 3, f"{chapter}: {len(labels)} exercises"
    assert len(set(labels)) == len(labels)
    assert all(label.startswith(chapter.replace("_", "-") + "-ex-") for label in labels)
    assert solved == labels, f"{chapter}: each exercise needs its dropdown solution after it"
    for text in after:
        # A backtick-fenced code block inside an exercise or solution would close the
        # directive's fence: code inside is fenced with tildes (~~~python).
        inner = text.split("\n")[1:-1]
        assert not [line for line in inner if line.startswith("```")], (
            f"{chapter}: a backtick fence inside {text[:60]!r}; use ~~~"
        )
    assert any(c == chapter for c, *_ in changes()), f"{chapter}: no exercise changes the code"


def test_every_code_change_has_its_check_and_is_shown_in_its_exercise():
    assert set(CHANGES) == set(EXPECTED)
    for chapter, label, change, text in changes():
        assert set(change) == {"cell", "old", "new"}, label
        assert change["new"] in text, f"{label}: the exercise does not show the code it asks for"
        assert "python -m helpers.book --only " + chapter in text, (
            f"{label}: the exercise does not give the command that runs the chapter again"
        )


@pytest.mark.parametrize("chapter,label", [(c, label) for c, label, *_ in changes()])
def test_exercise_change_builds_trains_and_does_what_it_says(
    chapter, label, xrays32, xray_folder, monkeypatch, tmp_path
):
    train.set_seed(0)
    if chapter == "model_8":  # its change is the members, read from their results folders
        saved_members(tmp_path, ("model_2", "model_6", "model_7"))
        EXPECTED[label](members_of(CHANGES[label], tmp_path), members_of(None, tmp_path), None)
        return
    fake_pretrained_base(monkeypatch)
    new, namespace = build(chapter, CHANGES[label])
    old, _ = build(chapter, None)
    xrays = xrays32
    if chapter == "model_6":
        xrays = data.load_chest_xrays(
            xray_folder.root, image_size=32, color_mode="grayscale", seed=0
        )
    run = train.fit(new, xrays, epochs=1, batch_size=16, seed=0, verbose=0)
    assert len(run.history) == 1 and math.isfinite(run.history["loss"].iloc[0])
    EXPECTED[label](new, old, namespace)
