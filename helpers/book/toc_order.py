"""Sphinx extension: read the book's documents in the table of contents' order.

Sphinx reads the documents it has to read in alphabetical order, and myst-nb executes a
notebook while reading it. With ``jupyter-book build book`` (execution through the cache,
``_config.yml``), ``comparison.ipynb`` would then run before any model chapter had written
its results, and stop at its first cell (:func:`helpers.results.require_chapters`). On
``env-before-read-docs`` this extension sorts the list Sphinx is about to read into the
order of ``_toc.yml`` (:func:`helpers.book.toc.in_toc_order`, the one toc reader), so that
every chapter runs after the chapters whose results it reads, as it does under the runner
and under ``pytest --nbval-lax book/``. ``_config.yml`` loads it for every build; with
execution off (the runner's render) the order changes nothing but the log.

Reading in parallel (``sphinx-build -j N``) would run notebooks side by side in any order,
so the extension declares itself unsafe for it: Sphinx then reads one document at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .toc import in_toc_order


def toc_path(app: Any) -> Path:
    """The table of contents jupyter-book gave Sphinx (``external_toc_path``), resolved from
    the source folder as sphinx-external-toc resolves it.

    Parameters
    ----------
    app : Sphinx
        The application.

    Returns
    -------
    Path
    """
    return Path(app.srcdir) / str(app.config.external_toc_path)


def sort_into_toc_order(app: Any, env: Any, docnames: list[str]) -> None:
    """``env-before-read-docs`` handler: reorder ``docnames`` in place into the toc's order.

    Parameters
    ----------
    app, env : Sphinx application and environment
        As Sphinx passes them.
    docnames : list of str
        The documents Sphinx is about to read (added or changed), alphabetical; documents
        outside the toc keep that order after the toc's.
    """
    docnames[:] = in_toc_order(docnames, toc_path(app))


def setup(app: Any) -> dict[str, Any]:
    """Connect the handler (Sphinx's extension entry point).

    Parameters
    ----------
    app : Sphinx
        The application; ``sphinx_external_toc`` (loaded by jupyter-book) provides the
        ``external_toc_path`` setting read here.

    Returns
    -------
    dict
        Extension metadata: not safe for parallel reading (the order is the point), safe
        for parallel writing.
    """
    app.setup_extension("sphinx_external_toc")
    app.connect("env-before-read-docs", sort_into_toc_order)
    return {"parallel_read_safe": False, "parallel_write_safe": True}
