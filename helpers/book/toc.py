"""The table of contents and its chapters: which pages the book has, in order, and what they link.

The chapters and what their metadata declares are read by :mod:`helpers.chapters` (the
package's one reader of ``_toc.yml``); here are the runner's views of them: the chapters a
notebook depends on, the reference targets a chapter defines, and a table of contents with
some chapters left out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from helpers import chapters, config
from helpers.chapters import Chapter

from .errors import BookError

#: The book's source folder: pages and notebooks.
SOURCE_DIR = config.REPO_ROOT / "book"
#: jupyter-book configuration; its ``execute`` section is overridden when rendering.
CONFIG_PATH = config.REPO_ROOT / "_config.yml"
#: Table of contents; entries are relative to :data:`SOURCE_DIR`.
TOC_PATH = config.REPO_ROOT / "_toc.yml"

# MyST targets: a `(label)=` line before a heading, or a directive's `:name:` / `:label:`.
_TARGET_LINE = re.compile(r"^\s*\((?P<label>[^()\s]+)\)=\s*$", re.MULTILINE)
_TARGET_OPTION = re.compile(r"^\s*:(?:name|label):\s*(?P<label>\S+)\s*$", re.MULTILINE)

_Item = TypeVar("_Item")


def read_toc(toc_path: Path) -> list[str]:
    """Return the docnames of a table of contents, in reading order
    (:func:`helpers.chapters.read_toc`, its error as a :class:`BookError`)."""
    try:
        return chapters.read_toc(toc_path)
    except chapters.ChapterError as exc:
        raise BookError(str(exc)) from exc


def in_toc_order(
    items: Iterable[_Item], toc_path: Path, docname: Callable[[_Item], str] = str
) -> list[_Item]:
    """Sort documents (or anything that names one) into the table of contents' reading order.

    Chapters read the results of the chapters before them (the comparison reads every
    model's), so whatever executes notebooks must follow this order, not the alphabetical
    one: Sphinx's reading (:mod:`helpers.book.toc_order`, hence ``jupyter-book build``) and
    ``pytest --nbval-lax book/`` (``book/conftest.py``).

    Parameters
    ----------
    items : iterable
        Docnames, or objects from which ``docname`` gives one.
    toc_path : Path
        The table of contents (read with :func:`read_toc`).
    docname : callable
        The docname of an item, relative to the source folder and without suffix; the item
        itself by default.

    Returns
    -------
    list
        The items in toc order; the sort is stable (items of one document keep their order)
        and items whose document is not in the toc come last, in the order given.
    """
    position = {name: i for i, name in enumerate(read_toc(toc_path))}
    return sorted(items, key=lambda item: position.get(docname(item), len(position)))


def find_chapters(source_dir: Path, toc_path: Path) -> list[Chapter]:
    """The book's chapters with their metadata (:func:`helpers.chapters.find_chapters`,
    its error as a :class:`BookError`: a missing file, a malformed metadata ``book``, a
    dependency on a chapter that is not a notebook listed before it).

    Parameters
    ----------
    source_dir : Path
        The book's source folder; toc entries are relative to it.
    toc_path : Path
        The table of contents.

    Returns
    -------
    list of Chapter
        One per toc entry, in order.
    """
    try:
        return chapters.find_chapters(source_dir, toc_path)
    except chapters.ChapterError as exc:
        raise BookError(str(exc)) from exc


def _notebook_json(chapter: Chapter) -> dict[str, Any]:
    return json.loads(chapter.path.read_text(encoding="utf-8"))


def uses_results_of(chapter: Chapter) -> list[str]:
    """The chapters whose results a notebook reads (its metadata ``book.uses_results_of``,
    resolved by :func:`find_chapters`).

    Parameters
    ----------
    chapter : Chapter
        Any chapter; a page (``.md``) reads none.

    Returns
    -------
    list of str
        Chapter names.
    """
    return list(chapter.uses_results_of)


def uses_replicates(chapter: Chapter) -> bool:
    """Whether a notebook also reads the replicates of the chapters it reads (its metadata
    ``book.uses_replicates``): the comparison does, so a replicate that runs again (or one
    more or fewer) makes it run again.

    Parameters
    ----------
    chapter : Chapter
        Any chapter; a page (``.md``) reads none.

    Returns
    -------
    bool
    """
    return chapter.uses_replicates


def markdown_text(chapter: Chapter) -> str:
    """The chapter's prose: a page's text, or a notebook's markdown cells joined.

    Parameters
    ----------
    chapter : Chapter
        A page or notebook.

    Returns
    -------
    str
    """
    if not chapter.is_notebook:
        return chapter.path.read_text(encoding="utf-8")
    cells = _notebook_json(chapter).get("cells", [])
    sources = []
    for cell in cells:
        if cell.get("cell_type") == "markdown":
            source = cell.get("source", "")
            sources.append("".join(source) if isinstance(source, list) else source)
    return "\n\n".join(sources)


def chapter_targets(chapter: Chapter) -> set[str]:
    """The reference labels a chapter defines (``(data-counts)=``, ``:name: fig-x``).

    Parameters
    ----------
    chapter : Chapter
        A page or notebook.

    Returns
    -------
    set of str
        Lower-cased, as Sphinx stores them.
    """
    text = markdown_text(chapter)
    found = {m["label"] for m in _TARGET_LINE.finditer(text)}
    found |= {m["label"] for m in _TARGET_OPTION.finditer(text)}
    return {label.lower() for label in found}


def toc_without(toc: Any, names: set[str]) -> Any:
    """The toc (as read by ``yaml.safe_load``) without the entries ``file: <name>``.

    Parameters
    ----------
    toc : Any
        The parsed ``_toc.yml``.
    names : set of str
        Chapter names to remove (matched with or without a suffix). An entry that has
        ``sections`` is kept, since removing it would remove its sections too.

    Returns
    -------
    Any
        A new structure; ``toc`` is not changed.
    """
    if isinstance(toc, list):
        kept = [toc_without(entry, names) for entry in toc]
        return [entry for entry in kept if entry is not None]
    if isinstance(toc, dict):
        file = toc.get("file")
        if (
            file is not None
            and Path(str(file)).with_suffix("").as_posix() in names
            and "sections" not in toc
        ):
            return None
        return {key: toc_without(value, names) for key, value in toc.items()}
    return toc
