"""The book's chapters, from one place: ``_toc.yml`` and each notebook's metadata ``book``.

``_toc.yml`` lists the chapters in reading order (the runner executes them in that order).
What kind of chapter a notebook is, it says once, in its own metadata ``book``:

- ``"model_chapter": true``: a model chapter. Its name (the file name, ``model_1``) is its
  model id: it writes ``results/<name>/`` and the comparison reads it.
- ``"case_study": true``: also one of the case study's five models.
- ``"uses_results_of"``: the chapters whose results it reads, a list of names (each a
  notebook listed before it) or ``"model chapters"``: every model chapter listed before it
  (the comparison).
- ``"uses_replicates": true``: it also reads those chapters' replicates.

Everything that lists or counts models reads them here (:func:`model_ids`,
:func:`case_study_model_ids`): the runner's dependencies, the comparison, the colours, the
tests. A declared dependency that names no notebook listed before the chapter that declares
it stops the reading with :class:`ChapterError`, so no list can go stale silently.

By default the repository's ``_toc.yml`` and ``book/`` are read; the runner sets
:data:`SOURCE_ENV` and :data:`TOC_ENV` for the notebooks it executes, so that a book built
from another folder (``--source-dir``, ``--toc``) reads its own chapters.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers import config

__all__ = [
    "ALL_MODEL_CHAPTERS",
    "SOURCE_ENV",
    "TOC_ENV",
    "Chapter",
    "ChapterError",
    "case_study_model_ids",
    "default_source_dir",
    "default_toc_path",
    "find_chapters",
    "model_ids",
    "read_toc",
]

#: The value of ``book.uses_results_of`` that means every model chapter listed before.
ALL_MODEL_CHAPTERS = "model chapters"
#: Environment variables naming the book's source folder and table of contents (set by the
#: runner for the kernels it starts; unset, the repository's are read).
SOURCE_ENV = "CHEST_XRAY_BOOK_SOURCE_DIR"
TOC_ENV = "CHEST_XRAY_BOOK_TOC"
_KNOWN_KEYS = frozenset({"model_chapter", "case_study", "uses_results_of", "uses_replicates"})


class ChapterError(ValueError):
    """The table of contents or a chapter's metadata ``book`` is wrong; the message names
    the file and what was expected."""


@dataclass(frozen=True)
class Chapter:
    """One entry of the table of contents, with what its metadata ``book`` declares.

    Attributes
    ----------
    name : str
        The docname, relative to the source folder and without suffix (``"model_1"``).
    path : Path
        The source file (``.ipynb`` or ``.md``).
    model_chapter, case_study : bool
        Whether it is a model chapter, and one of the case study's models.
    uses_results_of : tuple of str
        The chapters whose results it reads, resolved (``"model chapters"`` expanded).
    uses_replicates : bool
        Whether it also reads their replicates.
    """

    name: str
    path: Path
    model_chapter: bool = False
    case_study: bool = False
    uses_results_of: tuple[str, ...] = ()
    uses_replicates: bool = False

    @property
    def is_notebook(self) -> bool:
        """Whether the chapter is a notebook (and so is executed)."""
        return self.path.suffix == ".ipynb"


def default_source_dir() -> Path:
    """The book's source folder: :data:`SOURCE_ENV` if set, else the repository's ``book/``."""
    return Path(os.environ.get(SOURCE_ENV) or config.REPO_ROOT / "book")


def default_toc_path() -> Path:
    """The table of contents: :data:`TOC_ENV` if set, else the repository's ``_toc.yml``."""
    return Path(os.environ.get(TOC_ENV) or config.REPO_ROOT / "_toc.yml")


def read_toc(toc_path: Path) -> list[str]:
    """Return the docnames of a jupyter-book table of contents, in reading order.

    Parameters
    ----------
    toc_path : Path
        A ``_toc.yml`` in the ``jb-book`` or ``jb-article`` format.

    Returns
    -------
    list of str
        Docnames relative to the source folder, root first.

    Raises
    ------
    ChapterError
        If the file cannot be read or holds a glob entry.
    """
    from sphinx_external_toc.api import FileItem, GlobItem
    from sphinx_external_toc.parsing import MalformedError, parse_toc_yaml

    try:
        site_map = parse_toc_yaml(toc_path)
    except (OSError, MalformedError) as exc:
        raise ChapterError(f"cannot read the table of contents {toc_path}: {exc}") from exc

    names: list[str] = []

    def walk(docname: str) -> None:
        names.append(docname)
        for subtree in site_map[docname].subtrees:
            for item in subtree.items:
                if isinstance(item, GlobItem):
                    # A glob would let a stray notebook into the book unnoticed.
                    raise ChapterError(f"{toc_path}: glob entries are not supported: {item}")
                if isinstance(item, FileItem):
                    walk(str(item))

    walk(site_map.root.docname)
    return names


def _book_metadata(path: Path) -> dict[str, Any]:
    """A notebook's metadata ``book``, checked for unknown keys; empty for a page."""
    if path.suffix != ".ipynb":
        return {}
    try:
        notebook = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ChapterError(f"cannot read the notebook {path}: {exc}") from exc
    declared = notebook.get("metadata", {}).get("book", {})
    if not isinstance(declared, dict) or set(declared) - _KNOWN_KEYS:
        unknown = sorted(set(declared) - _KNOWN_KEYS) if isinstance(declared, dict) else declared
        raise ChapterError(
            f"{path}: metadata 'book' holds {unknown!r}; expected a mapping of "
            f"{', '.join(sorted(_KNOWN_KEYS))}"
        )
    return declared


def _resolved_uses(path: Path, declared: Any, before: list[Chapter]) -> tuple[str, ...]:
    """``book.uses_results_of`` as chapter names, checked against the chapters before."""
    if declared == ALL_MODEL_CHAPTERS:
        return tuple(c.name for c in before if c.model_chapter)
    if not isinstance(declared, list) or not all(isinstance(n, str) for n in declared):
        raise ChapterError(
            f"{path}: metadata book.uses_results_of is {declared!r}; expected a list of "
            f"chapter names or {ALL_MODEL_CHAPTERS!r}"
        )
    notebooks_before = [c.name for c in before if c.is_notebook]
    unknown = [n for n in declared if n not in notebooks_before]
    if unknown:
        raise ChapterError(
            f"{path}: metadata book.uses_results_of names {', '.join(unknown)}, which "
            "_toc.yml does not list as a notebook before it (notebooks before it: "
            f"{', '.join(notebooks_before) or 'none'}); a chapter reads only results "
            "written before it runs"
        )
    return tuple(declared)


def find_chapters(source_dir: Path | None = None, toc_path: Path | None = None) -> list[Chapter]:
    """The book's chapters: the toc's entries mapped to source files, with their metadata.

    Parameters
    ----------
    source_dir : Path, optional
        The book's source folder; toc entries are relative to it
        (:func:`default_source_dir` if not given).
    toc_path : Path, optional
        The table of contents (:func:`default_toc_path` if not given).

    Returns
    -------
    list of Chapter
        One per toc entry, in order.

    Raises
    ------
    ChapterError
        If an entry has no ``.ipynb`` or ``.md`` file, or a notebook's metadata ``book``
        is malformed or declares a dependency on a chapter that is not a notebook listed
        before it.
    """
    source_dir = Path(source_dir) if source_dir is not None else default_source_dir()
    toc_path = Path(toc_path) if toc_path is not None else default_toc_path()
    chapters: list[Chapter] = []
    for name in read_toc(toc_path):
        for suffix in (".ipynb", ".md"):
            path = source_dir / f"{name}{suffix}"
            if path.is_file():
                break
        else:
            raise ChapterError(
                f"{toc_path} lists '{name}' but neither {name}.ipynb nor {name}.md "
                f"exists in {source_dir}"
            )
        declared = _book_metadata(path)
        model_chapter = bool(declared.get("model_chapter", False))
        case_study = bool(declared.get("case_study", False))
        if case_study and not model_chapter:
            raise ChapterError(
                f"{path}: metadata book.case_study is true but book.model_chapter is not"
            )
        chapters.append(
            Chapter(
                name,
                path,
                model_chapter=model_chapter,
                case_study=case_study,
                uses_results_of=_resolved_uses(path, declared.get("uses_results_of", []), chapters),
                uses_replicates=bool(declared.get("uses_replicates", False)),
            )
        )
    return chapters


def model_ids(source_dir: Path | None = None, toc_path: Path | None = None) -> tuple[str, ...]:
    """The book's model chapters (each one's name is its model id), in the toc's order.

    Parameters
    ----------
    source_dir, toc_path : Path, optional
        As for :func:`find_chapters`.

    Returns
    -------
    tuple of str
    """
    return tuple(c.name for c in find_chapters(source_dir, toc_path) if c.model_chapter)


def case_study_model_ids(
    source_dir: Path | None = None, toc_path: Path | None = None
) -> tuple[str, ...]:
    """The model chapters that retell the case study's models (metadata
    ``book.case_study``), in the toc's order.

    Parameters
    ----------
    source_dir, toc_path : Path, optional
        As for :func:`find_chapters`.

    Returns
    -------
    tuple of str
    """
    return tuple(c.name for c in find_chapters(source_dir, toc_path) if c.case_study)
