"""Which chapters an edit to ``helpers`` makes stale: only those that run the edited module.

The import graph is read from the real package and the real chapters; the state file of a
complete build is written by hand from the runner's own decisions (executing the real
chapters takes most of an hour), and then one file of a copy of ``helpers/`` is edited.
"""

from __future__ import annotations

import ast
import io
import json
import re
import shutil
from pathlib import Path

import pytest
from fixture_book import REPO, make_notebook

from helpers.book import build, staleness
from helpers.book.imports import CodeGraph, changed_modules, imported_names, modules_run_by
from helpers.book.toc import find_chapters, uses_results_of

BOOK = REPO / "book"
TOC = REPO / "_toc.yml"


@pytest.fixture(scope="module")
def graph() -> CodeGraph:
    return CodeGraph.of(REPO / "helpers")


def _runs(graph: CodeGraph, name: str) -> set[str]:
    return {graph.label(m) for m in modules_run_by(BOOK / f"{name}.ipynb", graph)}


def test_the_chapters_reach_the_modules_they_import_and_never_the_runner(graph):
    model_6 = _runs(graph, "model_6")
    # model_6 imports ablation directly; helpers/__init__.py runs before any submodule.
    assert {"helpers/ablation.py", "helpers/__init__.py", "helpers/layers.py"} <= model_6
    # data.ipynb imports data, leaks, parameters, plots, report: not the ablation, and
    # no chapter runs the runner or the prediction command.
    assert "helpers/ablation.py" not in _runs(graph, "data")
    assert "helpers/data/__init__.py" in _runs(graph, "data")
    for chapter in find_chapters(BOOK, TOC):
        if chapter.is_notebook:
            files = _runs(graph, chapter.name)
            assert not any(f.startswith("helpers/book/") for f in files), chapter.name
            assert "helpers/predict.py" not in files, chapter.name


def test_imports_of_the_real_package_are_resolved_as_python_resolves_them(graph):
    # Relative imports, packages as their __init__.py, names that are not modules dropped.
    assert "helpers.book.plan" in graph.imports["helpers.book.staleness"]
    assert "helpers.data" in graph.imports["helpers.parameters"]  # inside a function
    assert "helpers.data.split" in graph.imports["helpers.data"]  # from .split import ...
    assert "helpers.config" in graph.imports["helpers.parameters"]  # from helpers import config
    assert not any(m.startswith("helpers.book") for m in graph.closure(["helpers.ablation"]))


def test_imported_names_of_absolute_relative_and_from_imports():
    import ast

    tree = ast.parse(
        "import a.b.c\nfrom d import e, f\nfrom . import g\nfrom ..h import i\n"
        "def later():\n    import j\n"
    )
    assert imported_names(tree, "pkg.sub.mod", False) == {
        "a.b.c",
        "d",
        "d.e",
        "d.f",
        "pkg.sub",
        "pkg.sub.g",
        "pkg.h",
        "pkg.h.i",
        "j",
    }
    assert imported_names(ast.parse("from . import g"), "pkg.sub", True) == {"pkg.sub", "pkg.sub.g"}


def test_a_notebook_with_magics_is_read_and_one_that_cannot_be_parsed_runs_everything(tmp_path):
    import nbformat

    from helpers.book.imports import notebook_imports

    magic = make_notebook(("code", "%matplotlib inline\n!ls\nfrom pkg import module", []))
    nbformat.write(magic, tmp_path / "magic.ipynb")
    assert notebook_imports(tmp_path / "magic.ipynb") == {"pkg", "pkg.module"}
    broken = make_notebook(("code", "def broken(:\n    pass", []))
    nbformat.write(broken, tmp_path / "broken.ipynb")
    assert notebook_imports(tmp_path / "broken.ipynb") is None


def test_changed_modules_names_edited_new_and_dropped_files():
    before = {"helpers/a.py": "1", "helpers/b.py": "2", "helpers/c.py": "3"}
    now = {"helpers/a.py": "1", "helpers/b.py": "9", "helpers/d.py": "4"}
    assert changed_modules(before, now) == (
        "helpers/b.py changed; now imports helpers/d.py; no longer imports helpers/c.py"
    )
    assert changed_modules(before, before) == ""


@pytest.fixture
def built_real_book(tmp_path) -> tuple[Path, Path]:
    """The real chapters as if a build had just completed them, with a copy of helpers/
    as their code. Returns ``(output_dir, code_dir)``."""
    code = tmp_path / "helpers"
    shutil.copytree(REPO / "helpers", code, ignore=shutil.ignore_patterns("__pycache__"))
    decisions = build.book_status(
        BOOK, tmp_path, TOC, out=io.StringIO(), code_dir=code, replicates=0
    )
    state = {}
    for name, decision in decisions.items():
        assert decision.reason == "never executed"
        executed = tmp_path / "_build" / "executed" / f"{name}.ipynb"
        executed.parent.mkdir(parents=True, exist_ok=True)
        executed.write_text("{}")
        state[name] = {
            "status": "complete",
            "finished": "2026-01-01 00:00:00",
            "seconds": 1.0,
            "inputs": decision.inputs,
            "code_files": decision.code_files,
            "outputs": {},
        }
    (tmp_path / "_build" / staleness.STATE_FILE).write_text(json.dumps(state))
    return tmp_path, code


def _status(output_dir: Path, code: Path) -> tuple[dict, str]:
    out = io.StringIO()
    # The chapters only (their replicates' staleness: tests/test_book_replicates.py).
    decisions = build.book_status(BOOK, output_dir, TOC, out=out, code_dir=code, replicates=0)
    return decisions, out.getvalue()


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def test_a_comment_in_the_runner_leaves_every_chapter_up_to_date(built_real_book):
    output_dir, code = built_real_book
    _append(code / "book" / "cli.py", "# a comment\n")
    _append(code / "predict.py", "# a comment\n")
    decisions, text = _status(output_dir, code)
    assert set(decisions) == {c.name for c in find_chapters(BOOK, TOC) if c.is_notebook}
    assert {d.action for d in decisions.values()} == {"reuse"}, text
    assert "stale" not in text


def test_a_docstring_or_comment_edit_in_a_module_the_chapters_run_leaves_them_up_to_date(
    built_real_book,
):
    output_dir, code = built_real_book
    module = code / "metrics.py"
    text = module.read_text()
    first_def = text.index('    """', text.index("\ndef "))
    edited = text[: first_def + 7] + "Reworded. " + text[first_def + 7 :]
    module.write_text(edited + "\n# a comment\n")
    decisions, status = _status(output_dir, code)
    assert {d.action for d in decisions.values()} == {"reuse"}, status
    assert "stale" not in status


def test_a_module_hash_ignores_documentation_and_not_code():
    from helpers.book.imports import code_hash

    def hashed(source: str) -> str:
        return code_hash(ast.parse(source))

    code = 'def f(x):\n    """Doc."""\n    return x + 1\n'
    assert hashed(code) == hashed('def f(x):\n    """Other doc."""\n\n    return x + 1  # why\n')
    assert hashed(code) == hashed("def f(x):\n    return x + 1\n")
    assert hashed(code) != hashed('def f(x):\n    """Doc."""\n    return x + 2\n')
    # A string that is not a docstring is code.
    assert hashed('X = "a"\n') != hashed('X = "b"\n')
    tree = ast.parse(code)
    before = ast.dump(tree)
    code_hash(tree)
    assert ast.dump(tree) == before  # the tree is left as it was


def _readers(decisions: dict, stale: set[str]) -> set[str]:
    chapters = {c.name: c for c in find_chapters(BOOK, TOC)}
    return {n for n in decisions if set(uses_results_of(chapters[n])) & stale} - stale


@pytest.mark.parametrize("module", ["ablation.py", "metrics.py"])
def test_an_edit_makes_exactly_the_chapters_that_run_the_module_and_their_readers_stale(
    built_real_book, module
):
    output_dir, code = built_real_book
    label = f"helpers/{module}"
    runs_it = {n for n, d in _status(output_dir, code)[0].items() if label in d.code_files}
    _append(code / module, "_AN_EDIT = 1\n")
    decisions, text = _status(output_dir, code)
    stale = {n for n, d in decisions.items() if d.action == "execute"}
    assert stale == runs_it | _readers(decisions, runs_it), text
    for name in runs_it:
        assert re.search(rf"^{name}\s+stale\s+\({re.escape(label)} changed[,)]", text, re.M), text
    for name in stale - runs_it:
        assert re.search(rf"^{name}\s+stale\s+\(.* runs again\)$", text, re.M), text
    if module == "ablation.py":
        # model_6 imports it; model_7 through helpers.finetune; data and model_1 never.
        assert {"model_6", "model_7"} <= runs_it and not {"data", "model_1"} & stale
        assert "comparison" in stale  # it reads model_6's and model_7's results
    else:
        assert {"model_1", "model_7", "comparison"} <= runs_it  # every model chapter scores
