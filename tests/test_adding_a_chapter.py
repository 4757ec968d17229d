"""Adding a model chapter is a notebook and one line in ``_toc.yml`` (README, "Adding a
chapter"): the chapter is made by :func:`add_model_chapter`, the README's steps as code.

On a copy of the real book (no notebook runs): the copy of model_1 is a model chapter that
the comparison, the colours and the runner's plan pick up, with labels of its own. On the
fixture book (tests/fixture_book.py, no TensorFlow): the runner plans the new chapter,
executes it, renders its page, and runs the comparison again, which then shows it.
"""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest
from fixture_book import REPO, make_fixture_book, make_notebook

from helpers import chapters, plots
from helpers.book import build, plan, toc


def add_model_chapter(source_dir: Path, toc_path: Path, template: str, name: str) -> Path:
    """Add the model chapter ``name`` to a book as a copy of its chapter ``template``.

    The README's steps: copy the notebook; set ``model_id`` (the one place the code names
    the chapter); give its MyST labels the new name (Sphinx labels are global to the book
    and written in markdown, which MyST does not compute); list it in ``_toc.yml`` after the
    last model chapter. A copy of a case-study model is no longer one (``book.case_study``
    dropped). Its glued keys stay as they are: they belong to its page.

    Returns
    -------
    Path
        The new notebook.
    """
    nb = json.loads((source_dir / f"{template}.ipynb").read_text(encoding="utf-8"))
    nb["metadata"]["book"].pop("case_study", None)
    old_label, new_label = template.replace("_", "-"), name.replace("_", "-")
    for cell in nb["cells"]:
        text = "".join(cell["source"])
        if cell["cell_type"] == "code":
            text = text.replace(f'model_id = "{template}"', f'model_id = "{name}"')
        else:
            text = re.sub(rf"\b{old_label}-", f"{new_label}-", text)
        cell["source"] = text.splitlines(keepends=True)
    path = source_dir / f"{name}.ipynb"
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    last_model = chapters.model_ids(source_dir, toc_path)[-1]
    lines = toc_path.read_text(encoding="utf-8").splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.strip() == f"- file: {last_model}")
    lines.insert(at + 1, lines[at].replace(last_model, name))  # the one line
    toc_path.write_text("".join(lines), encoding="utf-8")
    return path


def test_a_copy_of_model_1_is_a_model_chapter_of_the_book(tmp_path):
    source, toc_path = tmp_path / "book", tmp_path / "_toc.yml"
    shutil.copytree(REPO / "book", source, symlinks=True, ignore=shutil.ignore_patterns("_*"))
    shutil.copyfile(REPO / "_toc.yml", toc_path)
    before = chapters.model_ids(source, toc_path)
    add_model_chapter(source, toc_path, "model_1", "model_9")

    book = toc.find_chapters(source, toc_path)  # the runner's reading: every check passes
    assert chapters.model_ids(source, toc_path) == (*before, "model_9")
    assert "model_9" not in chapters.case_study_model_ids(source, toc_path)
    by_name = {c.name: c for c in book}
    assert by_name["comparison"].uses_results_of == (*before, "model_9")
    # Its labels are its own (a label defined twice fails the render).
    targets = toc.chapter_targets(by_name["model_9"])
    assert targets and all(t.startswith("model-9-") for t in targets), targets
    assert not targets & toc.chapter_targets(by_name["model_1"])
    # Its glued numbers are quoted by keys of its own page, which the copy left alone.
    assert "{glue:text}`model_" not in toc.markdown_text(by_name["model_9"])
    # The runner plans it with the parameters its parameters cell declares.
    planned = plan.plan_build(book, None, {"epochs": 1, "image_size": 32})
    assert "model_9" in [c.name for c in planned.selected]
    assert planned.parameters["model_9"] == planned.parameters["model_1"]
    # Its own colour, and no model chapter's colour moved.
    colours = plots.model_colours([*before, "model_9"], [*before, "model_9"])
    assert len(set(colours.values())) == len(before) + 1
    assert {m: colours[m] for m in before} == plots.model_colours(before, before)


# ---------------------------------------------------------------------------------------
# The fixture book: plan, execute, render, and the comparison
# ---------------------------------------------------------------------------------------


def fixture_model_chapter(name: str) -> nbformat.NotebookNode:
    """A model chapter shaped like the book's: parameters, ``model_id`` set once, results
    written to ``<results_dir>/<model_id>/``, a glued number under a label of its own."""
    nb = make_notebook(
        (
            "markdown",
            f"# Model {name}\n\n({name.replace('_', '-')}-numbers)=\n## What the numbers "
            "say\n\nIts AUC is {glue:text}`auc:.3f`.",
            [],
        ),
        ("code", 'results_dir = "results"\nepochs = 3', ["parameters"]),
        (
            "code",
            f"""
            import json
            from pathlib import Path
            from myst_nb import glue
            model_id = "{name}"  # this chapter's name in _toc.yml
            auc = 0.5 + ord(model_id[-1]) / 1000 + epochs / 10000
            folder = Path(results_dir) / model_id
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "metrics.json").write_text(json.dumps({{"auc": auc}}))
            glue("auc", auc, display=False)  # the page's own key (report.start_chapter)
            """,
            [],
        ),
    )
    nb.metadata["book"] = {"model_chapter": True}
    return nb


def fixture_comparison() -> nbformat.NotebookNode:
    nb = make_notebook(
        ("markdown", "# Comparison", []),
        ("code", 'results_dir = "results"', ["parameters"]),
        (
            "code",
            """
            import json
            from pathlib import Path
            import pandas as pd
            from helpers import chapters
            model_ids = chapters.model_ids()  # this book's model chapters
            pd.DataFrame({m: json.loads((Path(results_dir) / m / "metrics.json").read_text())
                          for m in model_ids}).T
            """,
            [],
        ),
    )
    nb.metadata["book"] = {"uses_results_of": "model chapters"}
    return nb


TOC = """\
format: jb-book
root: intro
chapters:
  - file: model_a
  - file: comparison
"""


def _lines(out: io.StringIO) -> dict[str, str]:
    return {line.split()[0]: line for line in out.getvalue().splitlines() if line.strip()}


@pytest.mark.notebook
def test_the_runner_executes_renders_and_compares_a_chapter_added_by_one_toc_line(
    tmp_path, monkeypatch
):
    notebooks = {"model_a": fixture_model_chapter("model_a"), "comparison": fixture_comparison()}
    layout = make_fixture_book(tmp_path, notebooks, TOC)
    results = tmp_path / "results"
    params = {"results_dir": str(results), "epochs": 1}  # the CI size of this book
    html = tmp_path / "_build" / "html"
    with monkeypatch.context() as patch:  # the book before the chapter: executed, not rendered
        patch.setattr(build, "render", lambda *args, **kwargs: html)
        build.build_book(**layout, output_dir=tmp_path, params=params, out=io.StringIO())

    toc_before = layout["toc_path"].read_text()
    add_model_chapter(layout["source_dir"], layout["toc_path"], "model_a", "model_b")
    added = [
        line
        for line in layout["toc_path"].read_text().splitlines()
        if line not in toc_before.splitlines()
    ]
    assert added == ["  - file: model_b"]

    out = io.StringIO()
    build.book_status(layout["source_dir"], tmp_path, layout["toc_path"], params=params, out=out)
    status = _lines(out)
    assert "stale" in status["model_b"] and "never" in status["model_b"], out.getvalue()
    assert "up to date" in status["model_a"], out.getvalue()
    assert "model_b" in status["comparison"], out.getvalue()

    out = io.StringIO()
    build.build_book(**layout, output_dir=tmp_path, params=params, out=out)
    lines = _lines(out)
    assert re.match(r"model_b\s+executed", lines["model_b"]), out.getvalue()
    assert re.match(r"model_a\s+re-used", lines["model_a"]), out.getvalue()
    assert re.match(r"comparison\s+executed", lines["comparison"]), out.getvalue()
    auc = json.loads((results / "model_b" / "metrics.json").read_text())["auc"]
    assert auc == pytest.approx(0.5 + ord("b") / 1000 + 1 / 10000)  # run at the size asked
    # Its page: its label, and its own number under the key model_a's page also glues.
    page = (html / "model_b.html").read_text()
    assert 'id="model-b-numbers"' in page and f"{auc:.3f}" in page and "0.597" not in page
    assert "0.597" in (html / "model_a.html").read_text()
    comparison = (html / "comparison.html").read_text()
    assert "model_a" in comparison and "model_b" in comparison
