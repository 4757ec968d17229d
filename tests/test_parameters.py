"""Tests of the book's parameters (:mod:`helpers.parameters`): one table, one set of rules.

A notebook calls :func:`helpers.parameters.check` right after its parameters cell; the
runner checks ``-p`` values with the same table (tests/test_book.py). Here: the table, the
checks a notebook makes (names, papermill's injected names, ``BOOK_*`` overrides, values),
paths relative to the repository, the checked object and its display, every real
notebook's parameters cell, and a real papermill run where ``-p`` beats ``BOOK_EPOCHS``.
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import nbformat
import pytest

from helpers import chapters, config, parameters
from helpers.parameters import ChapterParameters, ParameterError, check_values, display_path

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def no_book_overrides(monkeypatch):
    for name in list(os.environ):
        if name.startswith("BOOK_"):
            monkeypatch.delenv(name)


# ---------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------


def test_the_table_lists_every_parameter_a_chapter_may_declare():
    required = [
        "data_dir",
        "results_dir",
        "image_size",
        "epochs",
        "batch_size",
        "seed",
        "base_weights",
        "target_sensitivity",
        "on_bad_image",
        "strategy",
        "ablation_epochs",
        "ablation_image_size",
        "on_leak",
    ]
    assert [
        name for name in parameters.PARAMETERS if name in required
    ] == required  # chapters may add more
    for name, spec in parameters.PARAMETERS.items():
        assert spec.name == name and spec.help and spec.kind in ("int", "float", "str", "path")
        assert spec.env_name == "BOOK_" + name.upper()


@pytest.mark.parametrize(
    "name, value, problem",
    [
        ("epochs", 0, "a whole number of at least 1"),
        ("epochs", 2.5, "a whole number"),
        ("epochs", True, "a whole number"),
        ("seed", -1, "a whole number of at least 0"),
        ("ablation_epochs", 0, None),
        ("target_sensitivity", 1.5, "a number above 0 and at most 1"),
        ("target_sensitivity", 0, "a number above 0 and at most 1"),
        ("target_sensitivity", 1, None),
        ("on_bad_image", "ignore", "one of 'stop', 'skip'"),
        ("strategy", "tpu", "one of 'default', 'mirrored', 'multi_worker'"),
        ("on_leak", "stop", None),
        ("on_leak", "warning", "one of 'warn', 'stop', 'ignore'"),
        ("base_weights", "random", None),
        ("base_weights", "none", "'imagenet', 'random', or an existing Keras weights file (.h5)"),
        ("base_weights", None, "'imagenet', 'random', or an existing Keras weights file (.h5)"),
        ("data_dir", "/no/such/folder", "an existing folder in the Kaggle layout"),
        ("results_dir", __file__, "a folder path (it need not exist yet), not a file"),
        ("results_dir", "", "a folder path or None"),
    ],
)
def test_check_value_says_what_is_expected(name, value, problem):
    found = parameters.check_value(name, value)[1]
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found, found


def test_check_value_converts_only_where_nothing_is_lost():
    assert parameters.check_value("target_sensitivity", 1) == (1.0, None)
    assert parameters.check_value("strategy", 2024)[0] == "2024"  # -p parses 2024 as an int
    with pytest.raises(ParameterError, match="unknown parameter 'epochz'"):
        parameters.check_value("epochz", 1)


def test_base_weights_takes_an_existing_keras_weights_file(tmp_path):
    weights = tmp_path / "mobilenet.h5"
    weights.write_bytes(b"\x89HDF")
    assert parameters.check_value("base_weights", str(weights))[1] is None
    other = tmp_path / "mobilenet.txt"
    other.write_text("not weights")
    assert parameters.check_value("base_weights", str(other))[1] is not None
    checked = check_values({"base_weights": str(weights)}, environ={})
    assert checked.base_weights == str(weights)


# ---------------------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------------------


def test_display_path_is_relative_inside_the_repository_and_absolute_outside(tmp_path):
    assert display_path(config.DEFAULT_DATA_DIR) == "data/chest_xray"
    assert display_path(REPO / "results" / ".." / "results") == "results"
    assert display_path("results/ci") == "results/ci"  # relative means relative to the repo
    assert display_path(REPO) == "."
    assert display_path(tmp_path / "x") == str(tmp_path / "x")


def test_relative_paths_are_relative_to_the_repository_not_the_working_folder(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # papermill and nbval run kernels in other folders
    checked = check_values({"data_dir": "data/chest_xray", "results_dir": "results/ci"}, environ={})
    assert checked.data_dir == config.DEFAULT_DATA_DIR
    assert checked.results_dir == REPO / "results" / "ci"


def test_none_means_the_default_folders():
    checked = check_values({"data_dir": None, "results_dir": None}, environ={})
    assert checked.data_dir == config.DEFAULT_DATA_DIR
    assert checked.results_dir == config.DEFAULT_RESULTS_DIR


# ---------------------------------------------------------------------------------------
# What a notebook's check refuses, and the environment
# ---------------------------------------------------------------------------------------


def test_unknown_names_are_refused_with_the_allowed_list():
    with pytest.raises(
        ParameterError, match="unknown parameter epochz; allowed: data_dir, results_dir"
    ):
        check_values({"epochz": 3}, environ={})


def test_a_name_papermill_injected_that_the_notebook_does_not_pass_is_refused():
    with pytest.raises(
        ParameterError,
        match="papermill passed seed, which this notebook does not declare; it declares: epochs",
    ):
        check_values({"epochs": 3}, environ={}, injected={"seed"})


def test_unknown_book_variables_are_refused_but_the_known_other_ones_are_not():
    with pytest.raises(
        ParameterError,
        match="unknown environment variable BOOK_EPOCH; the overrides are BOOK_DATA_DIR",
    ):
        check_values({"epochs": 3}, environ={"BOOK_EPOCH": "1"})
    environ = {"BOOK_HTML_DIR": "/tmp/html", "BOOK_REQUIRE_BROWSER": "1"}
    assert check_values({"epochs": 3}, environ=environ).epochs == 3


def test_environment_overrides_the_cell_but_never_an_injected_value():
    environ = {"BOOK_EPOCHS": "1", "BOOK_ON_LEAK": "stop"}
    cell = check_values({"epochs": 10, "on_leak": "warn"}, environ=environ)
    assert (cell.epochs, cell.on_leak) == (1, "stop")
    injected = check_values({"epochs": 2, "on_leak": "warn"}, environ=environ, injected={"epochs"})
    assert (injected.epochs, injected.on_leak) == (2, "stop")


def test_bad_values_are_all_listed_in_the_runners_words():
    environ = {"BOOK_SEED": "seven"}
    with pytest.raises(ParameterError) as caught:
        check_values(
            {"epochs": 0, "seed": 1, "strategy": "tpu"}, environ=environ, injected={"strategy"}
        )
    message = str(caught.value)
    assert "epochs = 0 (parameters cell): expected a whole number of at least 1" in message
    assert "seed = 'seven' (environment variable BOOK_SEED): expected a whole number" in message
    assert (
        "strategy = 'tpu' (papermill -p strategy): expected one of 'default', 'mirrored'" in message
    )


def test_check_reads_the_real_environment(monkeypatch):
    monkeypatch.setenv("BOOK_IMAGE_SIZE", "64")
    assert parameters.check(image_size=128).image_size == 64  # outside IPython: nothing injected


# ---------------------------------------------------------------------------------------
# The checked parameters
# ---------------------------------------------------------------------------------------


def test_chapter_parameters_are_read_only_attributes_and_a_mapping():
    params = check_values({"data_dir": None, "epochs": 3, "seed": 0}, environ={})
    assert isinstance(params, ChapterParameters)
    assert params.epochs == 3 and params["seed"] == 0 and len(params) == 3
    assert isinstance(params.data_dir, Path)
    with pytest.raises(AttributeError, match="read-only"):
        params.epochs = 4
    with pytest.raises(
        AttributeError,
        match="declares no parameter 'strategy'; it declares: data_dir, epochs, seed",
    ):
        _ = params.strategy
    copy = params.as_dict()
    copy["epochs"] = 99
    assert params.epochs == 3
    assert dict(params) == {"data_dir": config.DEFAULT_DATA_DIR, "epochs": 3, "seed": 0}


def test_the_display_is_a_two_column_table_with_repository_relative_paths(tmp_path):
    params = check_values({"data_dir": None, "results_dir": str(tmp_path), "epochs": 3}, environ={})
    text = repr(params).splitlines()
    assert text[0].split() == ["parameter", "value"]
    assert text[1].split() == ["data_dir", "data/chest_xray"]
    assert text[2].split() == ["results_dir", str(tmp_path)]  # outside the repository
    assert text[3].split() == ["epochs", "3"]
    page = params._repr_html_()
    assert page.count("<tr>") == 4 and "<th>parameter</th><th>value</th>" in page
    assert "<code>data/chest_xray</code>" in page and str(REPO) not in page


# ---------------------------------------------------------------------------------------
# The book's notebooks
# ---------------------------------------------------------------------------------------


def _parameters_cell(notebook: Path) -> str:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, (
        f"{notebook.name}: expected one cell tagged 'parameters', found {len(tagged)}"
    )
    source = tagged[0]["source"]
    return "".join(source) if isinstance(source, list) else source


def _code(notebook: Path) -> str:
    """Every code cell of a notebook but its parameters cell, joined."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return "\n".join(
        "".join(c["source"])
        for c in cells
        if c["cell_type"] == "code" and "parameters" not in c.get("metadata", {}).get("tags", [])
    )


NOTEBOOKS = sorted((REPO / "book").glob("*.ipynb"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_notebook_declares_only_known_parameters_with_valid_defaults(notebook):
    tree = ast.parse(_parameters_cell(notebook))
    declared = {}
    for node in tree.body:
        assert isinstance(node, (ast.Assign, ast.AnnAssign)), (
            f"{notebook.name}: only assignments belong in the parameters cell"
        )
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        value = ast.literal_eval(node.value)  # literals: the runner and papermill read them
        for target in targets:
            declared[target.id] = value
    assert declared, f"{notebook.name} declares no parameter"
    unknown = sorted(set(declared) - set(parameters.PARAMETERS))
    assert not unknown, f"{notebook.name} declares unknown parameters {unknown}"
    for name, value in declared.items():
        assert parameters.check_value(name, value)[1] is None, (
            f"{notebook.name}: {name} = {value!r}"
        )


CHOOSING_A_THRESHOLD = [
    nb for nb in NOTEBOOKS if "threshold_on_validation(" in _code(nb) or "finetune." in _code(nb)
]


def test_the_chapters_that_choose_a_threshold_are_the_evaluation_and_model_chapters():
    assert sorted(nb.stem for nb in CHOOSING_A_THRESHOLD) == sorted(
        ["evaluation", *chapters.model_ids()]
    )


@pytest.mark.parametrize("notebook", CHOOSING_A_THRESHOLD, ids=lambda p: p.stem)
def test_the_target_sensitivity_is_a_parameter_and_no_code_cell_types_it(notebook):
    from helpers.book.plan import declared_default

    assert declared_default(notebook, "target_sensitivity") == 0.95  # its one default
    code = _code(notebook)
    assert "0.95" not in code and "target_sensitivity=params.target_sensitivity" in code
    calls = code.count("threshold_on_validation(") + code.count("adapted_to_each_folder(")
    assert code.count("target_sensitivity=params.target_sensitivity") >= calls


# ---------------------------------------------------------------------------------------
# In a real kernel, under papermill
# ---------------------------------------------------------------------------------------


def _epochs_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    cell = nbformat.v4.new_code_cell("epochs = 10")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [
        cell,
        nbformat.v4.new_code_cell(
            "from helpers import parameters\n"
            "params = parameters.check(epochs=epochs)\n"
            "print('EPOCHS', params.epochs)"
        ),
    ]
    nbformat.write(nb, str(path))
    return path


def _run_papermill(notebook: Path, output: Path, **values) -> str:
    import papermill

    papermill.execute_notebook(
        str(notebook),
        str(output),
        parameters=values,
        kernel_name="python3",
        progress_bar=False,
        cwd=str(notebook.parent),
    )
    executed = nbformat.read(str(output), as_version=4)
    return "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))


@pytest.mark.notebook
def test_papermill_p_beats_the_environment_which_beats_the_cell(tmp_path, monkeypatch):
    notebook = _epochs_notebook(tmp_path / "epochs.ipynb")
    monkeypatch.setenv("BOOK_EPOCHS", "1")  # the kernel inherits it
    assert "EPOCHS 2" in _run_papermill(notebook, tmp_path / "explicit.ipynb", epochs=2)
    assert "EPOCHS 1" in _run_papermill(notebook, tmp_path / "environment.ipynb")


@pytest.mark.notebook
def test_papermill_passing_an_undeclared_name_stops_the_notebook(tmp_path):
    from papermill.exceptions import PapermillExecutionError

    notebook = _epochs_notebook(tmp_path / "epochs.ipynb")
    with pytest.raises(
        PapermillExecutionError, match="papermill passed seed, which this notebook does not declare"
    ):
        _run_papermill(notebook, tmp_path / "out.ipynb", epochs=2, seed=3)
