"""Rendering: jupyter-book turns the executed copy into HTML; the old book is replaced only
on success.

The render goes to a temporary folder beside ``_build/html``; only when jupyter-book
finished without a warning is the old ``_build/html`` renamed away, the new one renamed in
and the old one deleted. A failed render leaves the last good book where it was. A
render of some chapters (the others left out) turns references into the left-out
chapters into plain text (:mod:`helpers.book.left_out_refs`); every other warning and
broken reference still fails the render.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path

import yaml

from helpers import config, files

from .errors import RenderFailed
from .execute import strip_ansi

#: Where, inside ``<output>/_build/``, the HTML goes.
HTML_SUBDIR = "html"
#: The Sphinx extension added to a render with chapters left out.
LEFT_OUT_EXTENSION = "helpers.book.left_out_refs"
# Prefixes of the temporary folders beside _build/html (removed if a build was killed).
_RENDER_PREFIX = ".render-"
_OLD_PREFIX = ".html-old-"


def write_render_config(
    config_path: Path,
    destination: Path,
    left_out_labels: Iterable[str] = (),
    left_out_docs: Iterable[str] = (),
) -> Path:
    """Write a copy of the jupyter-book config with notebook execution switched off.

    Parameters
    ----------
    config_path : Path
        The book's ``_config.yml``.
    destination : Path
        Where to write the copy.
    left_out_labels, left_out_docs : iterable of str
        Labels and docnames of chapters left out of this render. When any is given, the
        copy loads :mod:`helpers.book.left_out_refs`, which shows references to them as
        plain text; otherwise the configuration is the book's own.

    Returns
    -------
    Path
        ``destination``.
    """
    book_config = yaml.safe_load(config_path.read_text()) or {}
    execute = book_config.get("execute") or {}
    book_config["execute"] = execute
    # The notebooks were executed by papermill: jupyter-book must only render them.
    execute["execute_notebooks"] = "off"
    labels, docs = sorted(set(left_out_labels)), sorted(set(left_out_docs))
    if labels or docs:
        sphinx = book_config.get("sphinx") or {}
        book_config["sphinx"] = sphinx
        sphinx_config = sphinx.get("config") or {}
        sphinx["config"] = sphinx_config
        if "extensions" in sphinx_config:
            sphinx_config["extensions"] = [*sphinx_config["extensions"], LEFT_OUT_EXTENSION]
        else:
            sphinx["extra_extensions"] = [
                *(sphinx.get("extra_extensions") or []),
                LEFT_OUT_EXTENSION,
            ]
        sphinx_config["book_left_out_labels"] = labels
        sphinx_config["book_left_out_docs"] = docs
    destination.write_text(yaml.safe_dump(book_config, sort_keys=False, allow_unicode=True))
    return destination


def replace_folder(new: Path, destination: Path) -> None:
    """Put ``new`` in the place of ``destination`` (:func:`helpers.files.replace_folder`),
    the old one waiting under a name :func:`_remove_leftovers` knows.

    Raises
    ------
    OSError
        If the new folder cannot be renamed in; the old one is then put back.
    """
    old = destination.with_name(f"{_OLD_PREFIX}{uuid.uuid4().hex[:12]}")
    files.replace_folder(new, destination, old=old)


def _remove_leftovers(build_dir: Path) -> None:
    """Temporary folders of a build that was killed mid-render."""
    for path in build_dir.glob(".*"):
        if path.is_dir() and path.name.startswith((_RENDER_PREFIX, _OLD_PREFIX)):
            shutil.rmtree(path, ignore_errors=True)


def _jupyter_book(
    source: Path, path_output: Path, config_path: Path, toc_path: Path
) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-c",
        "from jupyter_book.cli.main import main; main()",
        "build",
        str(source),
        "--path-output",
        str(path_output),
        "--config",
        str(config_path),
        "--toc",
        str(toc_path),
        "--builder",
        "html",
        # Every warning and broken reference fails; --all: no page is left from before.
        "-W",
        "-n",
        "--keep-going",
        "--all",
    ]
    env = dict(os.environ)
    # Sphinx must import helpers.book.left_out_refs from this checkout, installed or not.
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(config.REPO_ROOT), env.get("PYTHONPATH")) if p
    )
    return subprocess.run(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, check=False
    )


def render(
    executed_dir: Path,
    output_dir: Path,
    config_path: Path,
    toc_path: Path,
    verbose: bool = False,
    left_out_labels: Iterable[str] = (),
    left_out_docs: Iterable[str] = (),
) -> Path:
    """Render the executed copy with jupyter-book into ``<output_dir>/_build/html``.

    Parameters
    ----------
    executed_dir : Path
        The executed copy of the source.
    output_dir : Path
        The folder that receives ``_build/html``.
    config_path, toc_path : Path
        The book's config and the table of contents to render.
    verbose : bool
        Print jupyter-book's whole output.
    left_out_labels, left_out_docs : iterable of str
        Labels and docnames of chapters left out of this render (see
        :func:`write_render_config`).

    Returns
    -------
    Path
        The HTML folder.

    Raises
    ------
    RenderFailed
        With jupyter-book's warnings and errors; the previous HTML is left in place.
    """
    build_dir = output_dir / "_build"
    build_dir.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(build_dir)
    render_config = write_render_config(
        config_path, executed_dir / "_config.yml", left_out_labels, left_out_docs
    )
    render_toc = executed_dir / "_toc.yml"
    if render_toc.resolve() != toc_path.resolve():
        shutil.copyfile(toc_path, render_toc)
    scratch = Path(tempfile.mkdtemp(prefix=_RENDER_PREFIX, dir=build_dir))
    try:
        result = _jupyter_book(executed_dir, scratch, render_config, render_toc)
        log = strip_ansi(result.stdout)
        if verbose:
            print(log)
        problems = [
            line for line in log.splitlines() if re.search(r"\b(WARNING|ERROR|CRITICAL)\b", line)
        ]
        if result.returncode != 0 or problems:
            detail = "\n".join(f"  {line}" for line in problems or log.splitlines()[-30:])
            raise RenderFailed(
                f"jupyter-book failed to render {executed_dir} (exit {result.returncode}); "
                f"warnings and broken references count as failures; the previous book in "
                f"{build_dir / HTML_SUBDIR} is unchanged:\n{detail}"
            )
        new_html = scratch / "_build" / HTML_SUBDIR
        if not (new_html / "index.html").is_file():
            raise RenderFailed(f"jupyter-book wrote no {new_html / 'index.html'}")
        html_dir = build_dir / HTML_SUBDIR
        replace_folder(new_html, html_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return html_dir
