"""The book runner (``python -m helpers.book``): execute every chapter once, then render the book.

1. :mod:`~helpers.book.toc` reads the table of contents (``_toc.yml``) to find the chapters;
2. :mod:`~helpers.book.plan` checks every parameter against the ``parameters`` cells of the
   selected notebooks, with the rules of :mod:`helpers.parameters`, *before* any notebook
   runs;
3. :mod:`~helpers.book.staleness` decides which notebooks must run again (fingerprints of
   their inputs, ``_build/runner-state.json``; the ``helpers`` modules each one runs come
   from :mod:`~helpers.book.imports`, a static import graph);
   :mod:`~helpers.book.replicates` adds, with ``--replicates K``, the replicated chapters'
   runs with other seeds (:mod:`helpers.replicates`), decided and re-used the same way;
4. :mod:`~helpers.book.execute` copies ``book/`` to ``_build/executed/`` and runs those
   notebooks there with papermill (the source notebooks are only read);
5. :mod:`~helpers.book.render` renders ``_build/executed/`` with jupyter-book, execution
   switched off, into a temporary folder that replaces ``_build/html/`` only on success;
6. :mod:`~helpers.book.build` ties the steps together, :mod:`~helpers.book.cli` is the
   command line.

``jupyter-book build book`` (run from the repository root) is the other way to build: it
uses the same ``_config.yml`` and executes the notebooks itself, with their defaults (or
``BOOK_*`` variables), in the toc's order (:mod:`~helpers.book.toc_order`, a Sphinx
extension), keeping them in its own cache (``_build/.jupyter_cache``), not the runner's.

:mod:`~helpers.book.exercise_runs` (``python -m helpers.book.exercise_runs``) is apart from
the build: it runs the whole-chapter runs that some exercise solutions compare, which a build
cannot afford, records them in ``book/exercise_runs.json`` and writes those solutions' tables.
"""

from .build import OUTPUT_DIR, book_status, build_book, list_chapters
from .cli import main
from .errors import BookError, NotebookFailed, ParameterError, RenderFailed
from .toc import CONFIG_PATH, SOURCE_DIR, TOC_PATH, Chapter, find_chapters

__all__ = [
    "BookError",
    "CONFIG_PATH",
    "Chapter",
    "NotebookFailed",
    "OUTPUT_DIR",
    "ParameterError",
    "RenderFailed",
    "SOURCE_DIR",
    "TOC_PATH",
    "book_status",
    "build_book",
    "find_chapters",
    "list_chapters",
    "main",
]
