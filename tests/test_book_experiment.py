"""An experiment leaves the book alone: a build whose parameters differ from the book's.

An exercise's command (``python -m helpers.book --only model_1 -p epochs 1 --results-dir
/tmp/x``) passes the chapters other values than their defaults. The runner builds such a
run under its results folder (``<results_dir>/_build/``: executed notebooks, pages, record
of runs) and says so; the book's ``_build/html`` and ``_build/runner-state.json``, and so
its ``--status``, stay as they were.
"""

from __future__ import annotations

import pytest
from fixture_book import file_hashes, make_fixture_book, make_notebook

from helpers.book import build, cli
from helpers.book.plan import differences_from_the_book, plan_build
from helpers.book.toc import find_chapters

pytestmark = pytest.mark.notebook


def chapter(name: str) -> object:
    """A chapter with a model chapter's path parameters (None: the book's folders)."""
    return make_notebook(
        ("markdown", f"# {name.title()} chapter", []),
        ("code", "epochs = 3\nresults_dir = None\ndata_dir = None", ["parameters"]),
        ("code", "print(f\"{epochs} epochs into {results_dir or 'results'}\")", []),
    )


@pytest.fixture
def layout(tmp_path) -> dict:
    return make_fixture_book(
        tmp_path / "repo", {"alpha": chapter("alpha"), "beta": chapter("beta")}
    )


def _cli(layout: dict, capsys, *args: str) -> str:
    """``python -m helpers.book`` on the fixture book, in this process; its output."""
    assert (
        cli.main(
            [
                "--source-dir",
                str(layout["source_dir"]),
                "--config",
                str(layout["config_path"]),
                "--toc",
                str(layout["toc_path"]),
                *args,
            ]
        )
        == 0
    ), capsys.readouterr()
    return capsys.readouterr().out


def test_the_book_s_own_values_are_no_experiment(layout, tmp_path):
    chapters = find_chapters(layout["source_dir"], layout["toc_path"])
    assert differences_from_the_book(plan_build(chapters, None, {})) == {}
    # The defaults given on the command line, a None path as its book folder.
    same = {"epochs": 3, "results_dir": "results", "data_dir": "data/chest_xray"}
    assert differences_from_the_book(plan_build(chapters, None, same)) == {}
    other = {"epochs": 1, "results_dir": str(tmp_path / "x")}
    assert differences_from_the_book(plan_build(chapters, ["alpha"], other)) == other


def test_an_exercise_s_command_leaves_the_book_s_pages_and_status_alone(
    layout, tmp_path, capsys, monkeypatch
):
    book = tmp_path / "repo"
    monkeypatch.setattr(build, "OUTPUT_DIR", book)  # the repository root of this book
    _cli(layout, capsys)
    pages = file_hashes(book / "_build" / "html")
    state = (book / "_build" / "runner-state.json").read_bytes()
    status = _cli(layout, capsys, "--status")
    assert "alpha" in status and "stale" not in status, status

    # The shape of every exercise's command, from the repository root.
    results = tmp_path / "x"
    said = _cli(
        layout, capsys, "--only", "alpha", "-p", "epochs", "1", "--results-dir", str(results)
    )
    assert f"go to {results}/" in said and "the book's _build/ is left as it is" in said, said
    assert str(results / "_build" / "html" / "index.html") in said, said
    experiment_page = (results / "_build" / "html" / "alpha.html").read_text()
    assert "1 epochs into" in experiment_page
    assert "beta.html" not in {p.name for p in (results / "_build" / "html").iterdir()}

    assert file_hashes(book / "_build" / "html") == pages
    assert (book / "_build" / "runner-state.json").read_bytes() == state
    assert _cli(layout, capsys, "--status") == status
    # The experiment's own status is its folder's, named the way it was built.
    mine = _cli(layout, capsys, "--status", "-p", "epochs", "1", "--results-dir", str(results))
    assert f"go to {results}/" in mine
    assert any(line.startswith("alpha") and "up to date" in line for line in mine.splitlines())


def test_an_experiment_without_a_results_folder_gets_one_apart_from_the_book_s(layout):
    experiment = build.find_experiment(
        layout["source_dir"], layout["toc_path"], ["alpha"], {"epochs": 1}
    )
    assert experiment.output_dir == build.EXPERIMENT_RESULTS_DIR
    assert experiment.params == {"epochs": 1, "results_dir": str(build.EXPERIMENT_RESULTS_DIR)}
    assert experiment.differences == {"epochs": 1}
    assert "epochs=1 differ from the book's parameters" in experiment.describe()
