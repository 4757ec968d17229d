"""helpers.chapters: the one list of chapters (``_toc.yml``) and what each notebook declares
in its metadata ``book``; every list of models in the package, the book and the tests is
read from it, and a declared dependency that disagrees with it is refused."""

from __future__ import annotations

import ast
import json
import re

import nbformat
import pytest
from fixture_book import make_fixture_book, make_notebook

from helpers import chapters, config
from helpers.book import toc
from helpers.book.errors import BookError

BOOK = config.REPO_ROOT / "book"


def _notebook(book: dict | None = None) -> nbformat.NotebookNode:
    nb = make_notebook(("markdown", "# A chapter", []), ("code", "n = 1", ["parameters"]))
    if book is not None:
        nb.metadata["book"] = book
    return nb


def _layout(tmp_path, notebooks: dict) -> dict:
    entries = "".join(f"  - file: {name}\n" for name in notebooks)
    return make_fixture_book(
        tmp_path, notebooks, "format: jb-book\nroot: intro\nchapters:\n" + entries
    )


def _read(layout: dict) -> list[chapters.Chapter]:
    return chapters.find_chapters(layout["source_dir"], layout["toc_path"])


MODEL = {"model_chapter": True}


def test_model_chapters_are_the_notebooks_that_say_so_in_the_toc_s_order(tmp_path):
    layout = _layout(
        tmp_path,
        {
            "data": _notebook(),
            "model_b": _notebook({**MODEL, "case_study": True}),
            "model_a": _notebook(MODEL),
            "comparison": _notebook({"uses_results_of": "model chapters"}),
        },
    )
    args = (layout["source_dir"], layout["toc_path"])
    assert chapters.model_ids(*args) == ("model_b", "model_a")
    assert chapters.case_study_model_ids(*args) == ("model_b",)
    by_name = {c.name: c for c in _read(layout)}
    assert by_name["comparison"].uses_results_of == ("model_b", "model_a")
    assert by_name["intro"].uses_results_of == () and not by_name["intro"].model_chapter


def test_the_kernels_read_the_book_the_runner_names(tmp_path, monkeypatch):
    # The runner names its book in the environment; a notebook's chapters.model_ids() then
    # lists that book's model chapters, not the repository's.
    layout = _layout(tmp_path, {"model_x": _notebook(MODEL)})
    monkeypatch.setenv(chapters.SOURCE_ENV, str(layout["source_dir"]))
    monkeypatch.setenv(chapters.TOC_ENV, str(layout["toc_path"]))
    assert chapters.model_ids() == ("model_x",)
    monkeypatch.delenv(chapters.SOURCE_ENV)
    monkeypatch.delenv(chapters.TOC_ENV)
    assert "model_x" not in chapters.model_ids()


@pytest.mark.parametrize(
    ("notebooks", "message"),
    [
        (  # a chapter that is not in the toc (or no longer is)
            {"model_a": _notebook(MODEL), "comparison": _notebook({"uses_results_of": ["gone"]})},
            r"comparison\.ipynb: metadata book.uses_results_of names gone, which _toc.yml does "
            r"not list as a notebook before it \(notebooks before it: model_a\)",
        ),
        (  # listed after the chapter that reads it: its results would not be there yet
            {"comparison": _notebook({"uses_results_of": ["model_a"]}), "model_a": _notebook()},
            r"names model_a, which _toc.yml does not list as a notebook before it",
        ),
        (
            {"comparison": _notebook({"uses_results_of": "model_a"})},
            r"book.uses_results_of is 'model_a'; expected a list of chapter names or "
            r"'model chapters'",
        ),
        (
            {"model_a": _notebook({"model_chapters": True})},
            r"model_a\.ipynb: metadata 'book' holds \['model_chapters'\]; expected a mapping of "
            r"case_study, model_chapter, uses_replicates, uses_results_of",
        ),
        (
            {"model_a": _notebook({"case_study": True})},
            r"model_a\.ipynb: metadata book.case_study is true but book.model_chapter is not",
        ),
    ],
    ids=["unknown", "after", "not-a-list", "misspelt-key", "case-study-only"],
)
def test_a_declaration_that_disagrees_with_the_toc_is_refused(tmp_path, notebooks, message):
    layout = _layout(tmp_path, notebooks)
    with pytest.raises(chapters.ChapterError, match=message):
        _read(layout)
    # The runner stops with the same words before anything runs.
    with pytest.raises(BookError, match=message):
        toc.find_chapters(layout["source_dir"], layout["toc_path"])


def test_a_toc_entry_without_a_file_is_named(tmp_path):
    layout = _layout(tmp_path, {"model_a": _notebook(MODEL)})
    layout["toc_path"].write_text(
        layout["toc_path"].read_text() + "  - file: model_b\n", encoding="utf-8"
    )
    with pytest.raises(chapters.ChapterError, match="lists 'model_b' but neither model_b.ipynb"):
        _read(layout)


# ---------------------------------------------------------------------------------------
# The book itself
# ---------------------------------------------------------------------------------------


def _code_cells(name: str) -> list[dict]:
    nb = json.loads((BOOK / f"{name}.ipynb").read_text(encoding="utf-8"))
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _text(cell: dict) -> str:
    return "".join(cell["source"])


def test_the_book_s_model_chapters_are_declared_and_read_in_one_place():
    book = chapters.find_chapters()  # raises if a declared dependency disagrees with the toc
    models = [c.name for c in book if c.model_chapter]
    assert models == list(chapters.model_ids()) and len(models) >= 7
    # A model chapter is a notebook that holds its model in a cell tagged `model`, and only
    # those are (so the declaration and the chapter's content cannot drift apart).
    with_model_cell = [
        c.name
        for c in book
        if c.is_notebook
        and any("model" in cell["metadata"].get("tags", []) for cell in _code_cells(c.name))
    ]
    assert with_model_cell == models
    # The case study had five models; a copy of one of them is not one (README, "Adding a
    # chapter": its metadata drops book.case_study).
    assert len(chapters.case_study_model_ids()) == 5, chapters.case_study_model_ids()
    by_name = {c.name: c for c in book}
    assert by_name["comparison"].uses_results_of == tuple(models)
    assert by_name["comparison"].uses_replicates


@pytest.mark.parametrize("name", chapters.model_ids())
def test_a_model_chapter_sets_its_model_id_once_from_its_file_name(name):
    # Results folder, glue keys and the evaluation's name follow from this one assignment;
    # a copy of a chapter changes it here and nowhere else in its code.
    assignments = []
    for cell in _code_cells(name):
        for node in ast.walk(ast.parse(_text(cell))):
            if (
                isinstance(node, ast.Assign)
                and [getattr(t, "id", None) for t in node.targets] == ["model_id"]
                and isinstance(node.value, ast.Constant)
            ):
                assignments.append(node.value.value)
    assert assignments == [name], f"{name}.ipynb: model_id is set to {assignments}"
    code = "\n".join(
        _text(c) for c in _code_cells(name) if "model" not in c["metadata"].get("tags", [])
    )
    assert code.count(f'"{name}"') == 1, f"{name}.ipynb names itself besides model_id = ..."


@pytest.mark.parametrize("name", [c.name for c in chapters.find_chapters() if c.uses_results_of])
def test_a_chapter_s_code_reads_only_the_chapters_it_declares(name):
    # A model named in a reader's code but missing from its metadata would be read without
    # making the reader stale when that model runs again.
    declared = set(
        toc.uses_results_of(
            next(
                c for c in toc.find_chapters(BOOK, config.REPO_ROOT / "_toc.yml") if c.name == name
            )
        )
    )
    code = "\n".join(_text(c) for c in _code_cells(name))
    # A model chapter names itself once (model_id = ...): that is not a read.
    named = set(re.findall(r"""["'](model_\d+)["']""", code)) - {name}
    assert named <= declared, f"{name} reads {sorted(named - declared)} without declaring them"


NUMBER_WORDS = "zero one two three four five six seven eight nine ten eleven twelve".split()


def test_no_page_counts_the_book_s_models_by_hand():
    # "the seven models" goes stale with the next model chapter: a page either says "all the
    # models" or glues the count from the run.
    n = len(chapters.model_ids())
    counts = re.compile(rf"\b({NUMBER_WORDS[n]}|{n})\s+(?:\w+\s+)?models\b", re.IGNORECASE)
    found = [
        f"{chapter.name}: {match.group(0)!r}"
        for chapter in chapters.find_chapters()
        for match in counts.finditer(toc.markdown_text(chapter))
    ]
    readme = (config.REPO_ROOT / "README.md").read_text(encoding="utf-8")
    found += [f"README.md: {m.group(0)!r}" for m in counts.finditer(readme)]
    assert not found, found
