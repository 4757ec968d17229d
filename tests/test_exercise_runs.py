"""Recorded exercise runs (helpers.book.exercise_runs): the solutions' tables are the record's,
the recorded changes are the exercises' changes as the notebooks have them now, and the
program that records them runs a changed chapter, writes the record whole or not at all, and
says clearly what is wrong with a run list."""

from __future__ import annotations

import json
import textwrap

import pytest
from fixture_book import make_notebook

from helpers.book import exercise_runs as er

# ---------------------------------------------------------------------------------------
# The book as committed
# ---------------------------------------------------------------------------------------


def test_every_solution_table_is_the_one_the_record_gives():
    record = er.read_record()
    solutions = er.solution_runs()
    assert {s.path.stem for s in solutions} >= {"model_1", "model_2", "model_3", "model_5"}
    for solution in solutions:
        text = er._source(er.read_notebook(solution.path)["cells"][solution.index])
        table = text.split(er.TABLE_START)[1].split(er.TABLE_END)[0].strip()
        assert table == er.table_markdown(solution.runs, record, solution.columns), solution.where
        # at most six columns: the pages have no room for more (test_built_book)
        assert len(solution.columns) <= 5, solution.where


def test_every_recorded_run_is_a_planned_run_with_the_change_the_exercise_has_now():
    planned, record = er.planned_runs(), er.read_record()
    assert set(record) == set(planned)
    for key, run in planned.items():
        assert record[key]["chapter"] == run["chapter"], key
        assert record[key]["change"] == run.get("change"), key
        assert record[key]["set_parameters"] == run["parameters"], key
        # what the table shows came from a finished run of that chapter
        assert record[key]["parameters"]["seed"] == run["parameters"].get("seed", 42), key
        assert len(record[key]["training_loss"]) == record[key]["parameters"]["epochs"], key
        assert not {"data_dir", "results_dir"} & set(record[key]["parameters"]), key


def test_a_run_two_solutions_compare_is_run_once():
    keys = [er.run_key(spec) for s in er.solution_runs() for spec in s.runs]
    assert keys.count("model_1") == 2 and keys.count("model_2") == 2
    assert len(er.planned_runs()) == len(set(keys))


# ---------------------------------------------------------------------------------------
# The parts, by hand
# ---------------------------------------------------------------------------------------

MODEL_CELL = 'AUC = 0.9  # the "model"'
CHANGE = {"cell": "model", "old": "AUC = 0.9", "new": "AUC = 0.8"}


def chapter_notebook(change=CHANGE) -> dict:
    """A chapter without TensorFlow that writes what a model chapter's results hold."""
    write = textwrap.dedent(
        """
        import json, pathlib
        folder = pathlib.Path(results_dir) / "model_x"
        folder.mkdir(parents=True)
        test = {"auc": AUC, "auc_ci_low": AUC - 0.1, "auc_ci_high": AUC + 0.05,
                "sensitivity": 0.95, "specificity": 0.5, "specificity_ci_low": 0.4,
                "specificity_ci_high": 0.6, "fp": 117}
        folder.joinpath("metrics.json").write_text(json.dumps({
            "test": test, "val": {"auc": 0.99},
            "versions": {"tensorflow": "tf-x", "keras": "keras-x"},
            "parameters": {"seed": seed, "epochs": 2, "results_dir": results_dir}}))
        folder.joinpath("history.csv").write_text("epoch,loss,val_loss\\n1,0.7,0.6\\n2,0.3,0.2\\n")
        """
    )
    nb = make_notebook(
        ("code", "results_dir = None\nseed = 42", ["parameters"]),
        ("code", MODEL_CELL, ["model"]),
        ("code", write, []),
        ("markdown", "```{exercise} Lower it\n:label: model-x-ex\n\nChange it.\n```", []),
        (
            "markdown",
            "```{solution} model-x-ex\n:class: dropdown\n\n"
            f"{er.TABLE_START}\n{er.TABLE_END}\n```",
            [],
        ),
    )
    nb.cells[3].metadata["exercise_change"] = change
    nb.cells[4].metadata["exercise_runs"] = [
        {"row": "as it is", "chapter": "model_x"},
        {"row": "lowered", "chapter": "model_x", "change": "model-x-ex"},
        {"row": "another seed", "chapter": "model_x", "parameters": {"seed": 7}},
    ]
    nb.cells[4].metadata["exercise_run_columns"] = ["training_loss", "test_auc"]
    return json.loads(json.dumps(nb))


def write_book(tmp_path, notebook: dict):
    source = tmp_path / "book"
    source.mkdir()
    er.write_notebook(source / "model_x.ipynb", notebook)
    return source


def test_apply_change_changes_a_copy_and_only_the_named_cell():
    notebook = chapter_notebook()
    changed = er.apply_change(notebook, CHANGE, name="model_x")
    assert er._source(changed["cells"][1]) == 'AUC = 0.8  # the "model"'
    assert er._source(notebook["cells"][1]) == MODEL_CELL
    assert [er._source(c) for i, c in enumerate(changed["cells"]) if i != 1] == [
        er._source(c) for i, c in enumerate(notebook["cells"]) if i != 1
    ]


@pytest.mark.parametrize(
    "model_cell, change, message",
    [
        (
            MODEL_CELL,
            {"cell": "model", "old": "AUC = 0.7", "new": "x"},
            "'AUC = 0.7' occurs 0 times",
        ),
        ("A = 0.9\nB = 0.9", {"cell": "model", "old": "0.9", "new": "x"}, "'0.9' occurs 2 times"),
        (
            MODEL_CELL,
            {"cell": "data", "old": "AUC", "new": "x"},
            "an exercise names the cell 'data'",
        ),
        (MODEL_CELL, {"cell": "compile", "old": "AUC", "new": "x"}, "0 cells match 'compile'"),
    ],
)
def test_a_change_that_does_not_fit_its_chapter_is_a_clear_error(model_cell, change, message):
    notebook = chapter_notebook()
    notebook["cells"][1]["source"] = model_cell
    with pytest.raises(er.ExerciseRunError, match=f"^model_x: {message}"):
        er.apply_change(notebook, change, name="model_x")


def test_run_keys_name_the_chapter_the_change_and_the_parameters():
    assert er.run_key({"chapter": "model_1"}) == "model_1"
    assert er.run_key({"chapter": "model_1", "change": "model-1-ex-dense"}) == (
        "model_1 + model-1-ex-dense"
    )
    assert er.run_key({"chapter": "model_1", "parameters": {"seed": 1, "epochs": 3}}) == (
        "model_1 epochs=3 seed=1"
    )


@pytest.mark.parametrize(
    "runs, message",
    [
        ([{"chapter": "model_x"}], r"needs 'row' and 'chapter'.*\['chapter'\]"),
        ([{"row": "r", "chapter": "model_x", "seed": 1}], "needs 'row' and 'chapter'"),
        ([{"row": "r", "chapter": "model_9"}], "no chapter 'model_9'"),
        (
            [{"row": "r", "chapter": "model_x", "change": "model-x-other"}],
            "no exercise 'model-x-other'",
        ),
        ([], "non-empty list"),
        ("columns", "exercise_run_columns must name some of"),
    ],
)
def test_a_wrong_run_list_names_the_notebook_and_cell(tmp_path, runs, message):
    notebook = chapter_notebook()
    if runs == "columns":
        notebook["cells"][4]["metadata"]["exercise_run_columns"] = ["test_auc", "test_ppv"]
    else:
        notebook["cells"][4]["metadata"]["exercise_runs"] = runs
    source = write_book(tmp_path, notebook)
    with pytest.raises(er.ExerciseRunError, match=f"^model_x.ipynb, cell 4: .*{message}"):
        er.planned_runs(source)


def fake_run(auc: float, **extra) -> dict:
    return {
        "training_loss": [0.7, 0.31],
        "validation_loss": [0.6, 0.2],
        "val_auc": 0.99,
        "test": {
            "auc": auc,
            "auc_ci_low": auc - 0.1,
            "auc_ci_high": auc + 0.05,
            "sensitivity": 0.95,
            "specificity": 0.5,
            "specificity_ci_low": 0.4,
            "specificity_ci_high": 0.6,
        },
        "false_alarms": 1170,
        "seconds": 1.0,
        "recorded": "2026-12-07 16:00 UTC",
        "commit": "abcdef0123",
        "processor": "a CPU",
        "versions": {"tensorflow": "2.x", "keras": "3.x"},
        **extra,
    }


def test_table_markdown_by_hand():
    specs = [{"row": "as it is", "chapter": "m"}, {"row": "changed", "chapter": "m", "change": "e"}]
    record = {"m": fake_run(0.9), "m + e": fake_run(0.8, recorded="2026-12-08 09:00 UTC")}
    lines = er.table_markdown(specs, record, list(er.COLUMNS)[:-1]).splitlines()
    assert lines[0] == "| run | " + " | ".join(list(er.COLUMNS.values())[:-1]) + " |"
    assert lines[2] == (
        "| as it is | 0.700 to 0.310 | 0.600 to 0.200 | 0.990 | "
        '<span class="estimate"><span class="value">0.900</span><br>'
        '<span class="interval">(0.800&#8209;0.950)</span></span> | 0.950 | '
        '<span class="estimate"><span class="value">0.500</span><br>'
        '<span class="interval">(0.400&#8209;0.600)</span></span> | 1,170 |'
    )
    assert lines[3].startswith("| changed | ") and "0.800</span>" in lines[3]
    # each distinct date once, in the order of the rows
    assert lines[-1] == (
        "Recorded by `python -m helpers.book.exercise_runs` on 2026-12-07, 2026-12-08 "
        "(commit abcdef0; a CPU; TensorFlow 2.x, Keras 3.x)."
    )
    # only the columns named, in their order
    assert er.table_markdown(specs, record, ["false_alarms", "val_auc"]).splitlines()[:3] == [
        "| run | false alarms | validation AUC |",
        "|---|---|---|",
        "| as it is | 1,170 | 0.990 |",
    ]
    # the probe's column needs a probe in every run
    with pytest.raises(er.ExerciseRunError, match="probe_test_auc needs runs of a chapter"):
        er.table_markdown(specs, record, ["probe_test_auc"])
    probed = {k: {**v, "probe_test_auc": 0.944} for k, v in record.items()}
    assert er.table_markdown(specs, probed, ["probe_test_auc"]).splitlines()[2] == (
        "| as it is | 0.944 |"
    )


def test_a_table_without_its_runs_says_which_and_what_to_run():
    with pytest.raises(
        er.ExerciseRunError, match=r"'m \+ e'.*python -m helpers.book.exercise_runs"
    ):
        er.table_markdown(
            [{"row": "r", "chapter": "m", "change": "e"}], {"m": fake_run(0.9)}, ["test_auc"]
        )


def test_with_table_needs_its_two_markers():
    assert er.with_table(f"a\n{er.TABLE_START}\nold\n{er.TABLE_END}\nb", "new", where="w") == (
        f"a\n{er.TABLE_START}\nnew\n{er.TABLE_END}\nb"
    )
    with pytest.raises(er.ExerciseRunError, match="^nb, cell 3: needs one"):
        er.with_table(f"a\n{er.TABLE_START}\nold", "new", where="nb, cell 3")


# ---------------------------------------------------------------------------------------
# Recording: a real papermill run of a changed chapter
# ---------------------------------------------------------------------------------------


def test_record_runs_executes_each_run_and_writes_the_tables(tmp_path, capsys):
    source = write_book(tmp_path, chapter_notebook())
    before = (source / "model_x.ipynb").read_text()
    record_path = tmp_path / "record.json"
    record = er.record_runs(source_dir=source, record_path=record_path)
    assert set(record) == {"model_x", "model_x + model-x-ex", "model_x seed=7"}
    assert [record[k]["test"]["auc"] for k in sorted(record)] == [0.9, 0.8, 0.9]
    # the machine's folders are not recorded
    assert record["model_x seed=7"]["parameters"] == {"seed": 7, "epochs": 2}
    assert record["model_x + model-x-ex"]["change"] == CHANGE
    assert record["model_x"]["training_loss"] == [0.7, 0.3]
    assert json.loads(record_path.read_text())["runs"] == record
    assert sorted(p.name for p in tmp_path.iterdir()) == ["book", "record.json"]
    # the source notebook was only read; then its table is written from the record
    assert (source / "model_x.ipynb").read_text() == before
    assert er.write_tables(source, record_path) == [source / "model_x.ipynb"]
    solution = er._source(er.read_notebook(source / "model_x.ipynb")["cells"][4])
    assert "| lowered | 0.700 to 0.300 |" in solution and solution.endswith(f"{er.TABLE_END}\n```")
    assert er.write_tables(source, record_path) == []  # already written


def test_a_failed_run_leaves_the_record_as_it_was(tmp_path, monkeypatch):
    source = write_book(tmp_path, chapter_notebook())
    record_path = tmp_path / "record.json"
    record_path.write_text(json.dumps({"runs": {"model_x": fake_run(0.9)}}))
    before = record_path.read_text()
    calls = []

    def execute(key, run, workdir, source_dir):
        calls.append(key)
        if len(calls) == 2:
            raise RuntimeError(f"{key} failed")
        return fake_run(0.5)

    monkeypatch.setattr(er, "execute_run", execute)
    with pytest.raises(RuntimeError, match="failed"):
        er.record_runs(source_dir=source, record_path=record_path)
    assert record_path.read_text() == before and len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["book", "record.json"]


def test_the_command_line_refuses_an_unknown_run(capsys):
    assert er.main(["--only", "model_9"]) == 2
    assert "no solution names the runs ['model_9']" in capsys.readouterr().err
