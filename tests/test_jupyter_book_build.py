"""The real book built the card's other way, ``jupyter-book build book`` from the root of a
copy of the repository without ``results/``, at CI size (issue 32); ``make book-test`` runs it
on the notebooks nbval executed, and without them it skips.

Executing every chapter a second time would not fit ``make test``'s budget, so the test
shares the nbval run's work where that proves nothing about the order, and executes for
real where the order matters:

- jupyter-book's own cache (``_build/.jupyter_cache`` of the copy, jupyter-cache) is primed
  with nbval's executed copies (``BOOK_SAVE_EXECUTED``) of the chapters that read no other
  chapter's results (``data``, ``evaluation``) and of every model chapter, model_8 too,
  which is built from model_6's and model_7's saved models (executing it again would cost
  about 100 s of ``make test``'s ten minutes, and the comparison, which reads every model
  chapter's results, shows the same order). jupyter-cache matches a notebook by its code
  cells and kernelspec, which nbval ran unchanged, so jupyter-book re-uses those outputs
  instead of executing the chapters again (as it would on a second build of its own);
- the other chapters that read other chapters' results (metadata ``book.uses_results_of``:
  ``original_evaluation``, ``comparison``), which stopped the build in issue 32, are not
  primed: jupyter-book executes them itself, with the CI's ``BOOK_*`` variables, and they
  read the results the model chapters wrote under nbval (``BOOK_RESULTS_DIR``, copied so
  that this build writes nothing there);
- the test checks that Sphinx read the documents in ``_toc.yml``'s order (its "reading
  sources" lines), that exactly the readers were executed and every other notebook came from
  the cache, that each toc entry has its page, that the build was warning-free (``-W -n``),
  and that nothing wrote a ``results/`` into the copy (its ``helpers`` is the copy's, first on
  ``PYTHONPATH``, so that the default results folder is the copy's).

That the order alone lets a build with an empty cache execute every chapter is tested on the
fixture book, whose reader is named before its producer
(``test_book.py::test_jupyter_book_build_book_executes_the_chapters_in_toc_order``); the
whole real book built that way on a fresh clone is measured in the README.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import config
from helpers.book.execute import strip_ansi
from helpers.book.toc import find_chapters, read_toc, uses_results_of

REPO = Path(__file__).resolve().parent.parent
#: Where nbval saved the executed notebooks and where their chapters wrote their results.
EXECUTED_DIR = os.environ.get("BOOK_SAVE_EXECUTED")
RESULTS_DIR = os.environ.get("BOOK_RESULTS_DIR")

pytestmark = [
    pytest.mark.built_book,
    pytest.mark.notebook,
    pytest.mark.skipif(
        not (EXECUTED_DIR and RESULTS_DIR),
        reason="set BOOK_SAVE_EXECUTED and BOOK_RESULTS_DIR to a CI nbval run's executed "
        "notebooks and results (make book-test does)",
    ),
]

_READING = re.compile(r"^reading sources\.\.\. \[\s*\d+%\] (\S+)\s*$", re.MULTILINE)
_NOTEBOOK = re.compile(r"/book/(\S+)\.ipynb: (Executing notebook|Using cached notebook)")


def copy_without_results(destination: Path) -> Path:
    """The files a build reads, copied (``data/`` linked): no ``results/``, no ``_build/``."""
    destination.mkdir()
    for name in ("book", "helpers"):
        shutil.copytree(
            REPO / name,
            destination / name,
            symlinks=True,  # book/_toc.yml and book/_helpers stay links inside the copy
            ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"),
        )
    for name in ("_config.yml", "_toc.yml"):
        shutil.copyfile(REPO / name, destination / name)
    (destination / "data").symlink_to(REPO / "data")
    return destination


def executes_again(chapter) -> bool:
    """Whether jupyter-book executes ``chapter`` in this test: a notebook that reads other
    chapters' results and is not itself a model chapter (see the module's docstring)."""
    return chapter.is_notebook and bool(uses_results_of(chapter)) and not chapter.model_chapter


def prime_jupyter_cache(copy: Path, executed_dir: Path) -> set[str]:
    """Store nbval's executed copies of every notebook that :func:`executes_again` leaves
    out in the copy's jupyter-cache, as jupyter-book would after executing them; return
    their names.
    """
    from jupyter_cache import get_cache

    cache = get_cache(copy / "_build" / ".jupyter_cache")
    primed = set()
    for chapter in find_chapters(copy / "book", copy / "_toc.yml"):
        if not chapter.is_notebook or executes_again(chapter):
            continue
        executed = executed_dir / chapter.path.name
        assert executed.is_file(), f"nbval left no executed copy of {chapter.name}: {executed}"
        cache.cache_notebook_file(
            str(executed), uri=str(chapter.path), check_validity=False, overwrite=True
        )
        primed.add(chapter.name)
    return primed


def test_jupyter_book_build_book_reads_in_toc_order_and_renders_every_chapter(tmp_path):
    copy = copy_without_results(tmp_path / "repo")
    primed = prime_jupyter_cache(copy, Path(EXECUTED_DIR))
    chapters = find_chapters(copy / "book", copy / "_toc.yml")
    readers = {c.name for c in chapters if executes_again(c)}
    # The chapters that read others' results to report on them (the comparison, the
    # original evaluation) execute for real; the rest come from cache.
    assert {"original_evaluation", "comparison"} <= readers, readers

    results = shutil.copytree(RESULTS_DIR, tmp_path / "results-of-nbval")
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("BOOK_SAVE_EXECUTED", "BOOK_HTML_DIR")},
        "BOOK_RESULTS_DIR": str(results),
        "PYTHONPATH": str(copy),
        # The images nbval's run decoded (tests/conftest.py points the tests' own elsewhere).
        "CHEST_XRAY_CACHE_DIR": str(config.DEFAULT_CACHE_DIR),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    result = subprocess.run(
        [str(jupyter_book), "build", "book", "-W", "-n", "--keep-going"],
        capture_output=True,
        text=True,
        cwd=copy,
        env=env,
        check=False,
    )
    log = strip_ansi(result.stdout + result.stderr)
    assert result.returncode == 0, log[-5000:]

    toc_order = read_toc(copy / "_toc.yml")
    assert _READING.findall(log) == toc_order  # not alphabetical: comparison after model_7
    ways = dict(_NOTEBOOK.findall(log))
    assert {name for name, way in ways.items() if way == "Executing notebook"} == readers
    assert {name for name, way in ways.items() if way == "Using cached notebook"} == primed
    html = copy / "_build" / "html"
    missing = [name for name in toc_order if not (html / f"{name}.html").is_file()]
    assert not missing, f"no page for {missing} in {html}"
    assert "model_7" in (html / "comparison.html").read_text()
    assert not (copy / "results").exists()
