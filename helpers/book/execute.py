"""Execution: copy the book's source and run notebooks in the copy with papermill.

Source notebooks are only read. A failing notebook becomes a :class:`NotebookFailed`
whose message names the notebook, the failing cell (numbered as in the source) and the
error, and points at the executed copy that holds the full traceback.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import NotebookFailed
from .toc import Chapter

#: The venv's own kernelspec, so the notebooks run with the packages the runner sees.
KERNEL_NAME = "chest-xray-book"  # registered in the venv by make setup

#: Seconds a kernel may take to start. papermill's 60 were once not enough during `make
#: test`, with both cores busy with two TensorFlow workers and the unit tests: a tiny
#: fixture notebook failed with "Kernel didn't respond in 60 seconds".
KERNEL_START_TIMEOUT = 300

#: Where, inside ``<output>/_build/``, the executed copy of the source goes.
EXECUTED_SUBDIR = "executed"

# Folders and files never copied from the source (jupyter-book excludes the same ones).
_IGNORED = shutil.ignore_patterns("_build", ".ipynb_checkpoints", "Thumbs.db", ".DS_Store")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    """Text without terminal colour codes.

    Parameters
    ----------
    text : str
        A log or an error message.

    Returns
    -------
    str
    """
    return _ANSI.sub("", text)


def prepare_executed_dir(
    source_dir: Path, executed_dir: Path, keep: set[str], chapters: Sequence[Chapter]
) -> None:
    """Copy the source to the executed folder, keeping the executed copies named in ``keep``.

    Parameters
    ----------
    source_dir, executed_dir : Path
        The book's source folder, and the folder that receives its copy (recreated).
    keep : set of str
        Chapters whose executed copy (from an earlier build), where there is one, replaces
        the source copy: the re-used ones, and those left out of this build (a copy that
        later counts as up to date must be the executed one, not the source).
    chapters : sequence of Chapter
        The book's chapters.
    """
    kept: dict[str, bytes] = {}
    for chapter in chapters:
        executed = executed_dir / chapter.path.relative_to(source_dir)
        if chapter.name in keep and executed.is_file():
            kept[chapter.name] = executed.read_bytes()
    if executed_dir.exists():
        shutil.rmtree(executed_dir)
    # symlinks=False: a linked _toc.yml or data file becomes a plain copy in the build.
    shutil.copytree(source_dir, executed_dir, ignore=_IGNORED, symlinks=False)
    for chapter in chapters:
        if chapter.name in kept:
            (executed_dir / chapter.path.relative_to(source_dir)).write_bytes(kept[chapter.name])


def failure_message(name: str, source: Path, executed: Path, exc: BaseException) -> str:
    """Describe a failed notebook: which cell (numbered as in the source), what raised.

    Parameters
    ----------
    name : str
        The chapter's name.
    source, executed : Path
        The source notebook and the executed copy papermill wrote.
    exc : BaseException
        What papermill raised.

    Returns
    -------
    str
    """
    import nbformat
    from papermill.exceptions import PapermillExecutionError

    cells = []
    try:
        cells = nbformat.read(str(executed), as_version=4).cells
    except Exception:  # the notebook may not have been written at all
        pass
    # papermill adds red "an exception was raised" cells after the failure; the cell index
    # of its error counts the cells as they were while executing.
    cells = [c for c in cells if "papermill-error-cell-tag" not in c.metadata.get("tags", [])]
    injected = [
        i for i, c in enumerate(cells) if "injected-parameters" in c.metadata.get("tags", [])
    ]

    index = getattr(exc, "cell_index", None)
    if index is None:
        # Timeouts and dead kernels carry no cell index: papermill marks the cell it was
        # running in the output notebook.
        for i, cell in enumerate(cells):
            if cell.metadata.get("papermill", {}).get("status") in ("running", "failed"):
                index = i
                break
    cell_source = getattr(exc, "source", None)
    if not cell_source and index is not None and 0 <= index < len(cells):
        cell_source = cells[index].source
    cell_source = cell_source or ""
    if isinstance(exc, PapermillExecutionError):
        error = f"{exc.ename}: {strip_ansi(str(exc.evalue))}"
    else:
        error = f"{type(exc).__name__}: {strip_ansi(str(exc)).strip()}"

    lines = [f"notebook {name} ({source}) failed"]
    if index is not None:
        # Number the cell as the source notebook does: papermill inserted a cell.
        source_index = index - sum(1 for i in injected if i < index)
        total = len(cells) - len(injected) if cells else None
        of = f" of {total}" if total else ""
        count = getattr(exc, "exec_count", None)
        run = f", In [{count}]" if count else ""
        lines.append(f"  failing cell: cell {source_index + 1}{of} (index {source_index}{run})")
        snippet = cell_source.splitlines()
        for line in snippet[:6]:
            lines.append(f"    | {line}")
        if len(snippet) > 6:
            lines.append(f"    | ... ({len(snippet) - 6} more lines)")
    lines.append(f"  error: {error.splitlines()[0] if error else type(exc).__name__}")
    for extra in error.splitlines()[1:4]:
        lines.append(f"         {extra}")
    lines.append(f"  executed copy with the full traceback: {executed}")
    return "\n".join(lines)


def _quiet_kernel_manager(log_path: Path) -> type:
    """A kernel manager class whose kernel writes its own stderr to ``log_path``.

    The kernel process (not the notebook) logs start-up notices such as ipykernel's
    "Kernel is running over TCP without encryption" to the terminal, between the progress
    lines; the log file keeps them for a failure report instead.
    """
    from jupyter_client.manager import AsyncKernelManager

    class LoggedKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kwargs: Any) -> None:
            with open(log_path, "ab") as log:
                # Popen duplicates the descriptor, so closing ours afterwards is safe.
                kwargs.setdefault("stderr", log)
                await super().start_kernel(**kwargs)

    return LoggedKernelManager


def execute_notebook(
    chapter: Chapter,
    source_dir: Path,
    executed_dir: Path,
    parameters: Mapping[str, Any],
    kernel_name: str = KERNEL_NAME,
    *,
    output: Path | None = None,
    name: str | None = None,
) -> Path:
    """Execute one notebook with papermill into the executed folder.

    Parameters
    ----------
    chapter : Chapter
        The notebook (read only).
    source_dir, executed_dir : Path
        The source folder and its executed copy.
    parameters : mapping
        Values for (a subset of) the notebook's declared parameters.
    kernel_name : str
        The Jupyter kernel to run it with.
    output : Path, optional
        Where the executed notebook goes (its folder is made); by default its place in
        ``executed_dir`` (a replicate's goes elsewhere: :mod:`helpers.book.replicates`).
    name : str, optional
        What a failure report calls it (the chapter's name by default).

    Returns
    -------
    Path
        The executed notebook.

    Raises
    ------
    NotebookFailed
        With the notebook's name, the failing cell and the error.
    """
    import papermill

    output = executed_dir / chapter.path.relative_to(source_dir) if output is None else output
    output.parent.mkdir(parents=True, exist_ok=True)
    kernel_log = output.with_suffix(".kernel.log")
    try:
        papermill.execute_notebook(
            str(chapter.path),
            str(output),
            parameters=dict(parameters),
            kernel_name=kernel_name,
            start_timeout=KERNEL_START_TIMEOUT,
            # The source folder, not the copy: relative paths in a notebook's own code
            # then resolve as they do in Jupyter, nbval and `jupyter-book build book`.
            cwd=str(chapter.path.parent),
            progress_bar=False,
            log_output=False,
            kernel_manager_class=_quiet_kernel_manager(kernel_log),
        )
    except Exception as exc:  # every failure becomes a named report
        message = failure_message(name or chapter.name, chapter.path, output, exc)
        if kernel_log.is_file() and kernel_log.stat().st_size:
            message += f"\n  the kernel's own log: {kernel_log}"
        raise NotebookFailed(message) from exc
    fold_injected_parameters(output)
    return output


def fold_injected_parameters(notebook: Path) -> None:
    """Tag the cell papermill inserted (``injected-parameters``) ``hide-cell``, as the source's
    parameters cell is: the page folds the run's parameters away, one click opens them."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    changed = False
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "hide-cell" not in tags:
            cell.metadata["tags"] = [*tags, "hide-cell"]
            changed = True
    if changed:
        nbformat.write(nb, str(notebook))
