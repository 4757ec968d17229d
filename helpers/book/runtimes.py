"""Run times: each chapter says how long it ran in the build that made its page.

The record travels with the executed notebook, in its metadata under :data:`RECORD_KEY`:
the runner writes it after papermill ran the chapter (:func:`record_run`), ``book/conftest.py``
writes the same for a notebook executed under ``pytest --nbval-lax``, and a re-used executed
copy keeps the record of the run that made it. Before rendering, :func:`annotate_run_time`
puts a note under each chapter's title, and :func:`write_run_times_page` fills the appendix
page :data:`PAGE_NAME` with every chapter's time. Nothing here is typed by hand: a page with
no record says so.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nbformat

from helpers.files import atomic_write_text

__all__ = [
    "PAGE_NAME",
    "RECORD_KEY",
    "annotate_run_time",
    "machine_description",
    "read_record",
    "record_run",
    "run_time_note",
    "write_run_times_page",
]

#: Key of the run record in an executed notebook's metadata.
RECORD_KEY = "book_run"
#: Tag of the markdown cell that :func:`annotate_run_time` inserts (and replaces).
NOTE_TAG = "run-time"
#: The appendix page (in the book's source folder) that lists every chapter's time.
PAGE_NAME = "run_times.md"
#: The line of :data:`PAGE_NAME` that the runner replaces with the table.
PAGE_MARKER = "<!-- run times: filled in by python -m helpers.book -->"
#: Parameters worth naming beside a time, since they decide most of it.
_SIZE_PARAMETERS = ("image_size", "epochs", "ablation_epochs", "search_epochs", "head_epochs")


def machine_description() -> str:
    """The machine in words: CPU cores, system and architecture.

    >>> machine_description()  # doctest: +SKIP
    '2 CPU cores, Linux x86_64'
    """
    cores = os.cpu_count() or 0
    return f"{cores} CPU core{'s' if cores != 1 else ''}, {platform.system()} {platform.machine()}"


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(str(path), as_version=4)


def _write(notebook: nbformat.NotebookNode, path: Path) -> None:
    atomic_write_text(path, nbformat.writes(notebook))


def record_run(
    notebook_path: Path,
    seconds: float,
    *,
    executed_by: str,
    parameters: Mapping[str, Any] | None = None,
    finished: str | None = None,
    cpu_seconds: float | None = None,
) -> dict[str, Any]:
    """Write a chapter's run record into its executed notebook's metadata.

    Parameters
    ----------
    notebook_path : Path
        The executed notebook (rewritten atomically).
    seconds : float
        Wall time of the chapter's execution, kernel start included.
    executed_by : str
        What executed it (``"python -m helpers.book"``, ``"pytest --nbval-lax"``).
    parameters : mapping, optional
        The parameters it ran with; those that decide most of the time are kept.
    finished : str, optional
        When it finished (local time, ``YYYY-MM-DD HH:MM``); now by default.
    cpu_seconds : float, optional
        The processor time (user and system) its kernel used, where measured: unlike the
        wall time it does not grow while a shared machine gives the kernel no processor.

    Returns
    -------
    dict
        The record written.

    Raises
    ------
    ValueError
        If ``seconds`` or ``cpu_seconds`` is negative or not finite.
    """
    for label, value in (("seconds", seconds), ("cpu_seconds", cpu_seconds)):
        if value is not None and not 0 <= float(value) < float("inf"):
            raise ValueError(f"{label} must be a finite number >= 0, got {value!r}")
    parameters = parameters or {}
    record = {
        "seconds": round(float(seconds), 1),
        **({} if cpu_seconds is None else {"cpu_seconds": round(float(cpu_seconds), 1)}),
        "finished": finished or time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine_description(),
        "executed_by": executed_by,
        "parameters": {n: parameters[n] for n in _SIZE_PARAMETERS if n in parameters},
    }
    notebook = _read(notebook_path)
    notebook.metadata[RECORD_KEY] = record
    _write(notebook, notebook_path)
    return record


def read_record(notebook_path: Path) -> dict[str, Any] | None:
    """The run record of an executed notebook, or None when it has none (or is unreadable)."""
    try:
        record = _read(notebook_path).metadata.get(RECORD_KEY)
    except (OSError, ValueError):
        return None
    return dict(record) if isinstance(record, Mapping) and "seconds" in record else None


def _duration(seconds: float) -> str:
    """``"57.1 s"``, ``"3.8 min (229.9 s)"``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min ({seconds:.1f} s)"


def _parameters_text(parameters: Mapping[str, Any]) -> str:
    return ", ".join(f"`{n}={v}`" for n, v in parameters.items())


def run_time_note(record: Mapping[str, Any], *, link_to_page: bool = True) -> str:
    """The markdown note a chapter shows under its title.

    Parameters
    ----------
    record : mapping
        A run record (:func:`record_run`).
    link_to_page : bool
        Refer to the appendix page (label ``run-times``); False for a book without it.

    Returns
    -------
    str
        A MyST admonition.
    """
    with_parameters = (
        f" with {_parameters_text(record['parameters'])}" if record.get("parameters") else ""
    )
    return (
        "```{admonition} Run time\n:class: note\n"
        f"In the build that made this page, this chapter ran in **{_duration(record['seconds'])}**"
        f"{with_parameters}, on {record['machine']} (`{record['executed_by']}`, "
        f"{record['finished']}); other machines differ, even of one kind."
        + (" {ref}`run-times` lists every chapter." if link_to_page else "")
        + "\n```"
    )


def annotate_run_time(notebook_path: Path, *, link_to_page: bool = True) -> bool:
    """Put the run-time note under the chapter's title (replacing an earlier one).

    Parameters
    ----------
    notebook_path : Path
        An executed notebook (rewritten atomically when it changes).
    link_to_page : bool
        Refer to the appendix page, as :func:`run_time_note`.

    Returns
    -------
    bool
        Whether the notebook had a record (and now has the note).
    """
    record = read_record(notebook_path)
    if record is None:
        return False
    notebook = _read(notebook_path)
    cells = [c for c in notebook.cells if NOTE_TAG not in c.get("metadata", {}).get("tags", [])]
    title = next(
        (
            i
            for i, c in enumerate(cells)
            if c.cell_type == "markdown"
            and any(line.startswith("# ") for line in c.source.splitlines())
        ),
        -1,
    )
    note = nbformat.v4.new_markdown_cell(
        run_time_note(record, link_to_page=link_to_page), metadata={"tags": [NOTE_TAG]}
    )
    if notebook.get("nbformat_minor", 0) < 5:
        note.pop("id", None)  # cell ids came with nbformat 4.5; keep an older file's version
    cells.insert(title + 1, note)
    notebook.cells = cells
    _write(notebook, notebook_path)
    return True


def write_run_times_page(
    page_path: Path,
    chapters: Sequence[tuple[str, Mapping[str, Any] | None]],
    case_study: Sequence[str] = (),
) -> str:
    """Fill the run-times appendix page with every chapter's time and their total.

    Parameters
    ----------
    page_path : Path
        The page in the executed folder (a copy of ``book/run_times.md``); the line
        :data:`PAGE_MARKER` is replaced by the table.
    chapters : sequence of (name, record or None)
        Every rendered notebook chapter in book order, with its run record (None when it
        has none); a replicate (``model_1/seed_43``, not a page) follows its chapter and is
        listed as ``model_1, seed 43``: its time counts in the total, since the build
        spent it.
    case_study : sequence of str
        The case study's chapters (metadata ``book.case_study``): when each has a record, a
        sentence under the table gives their time together and the whole book's as a
        multiple of it (the book's time budget, comparable across machines).

    Returns
    -------
    str
        The table written.

    Raises
    ------
    ValueError
        If the page lacks :data:`PAGE_MARKER` (it would silently show no table).
    """
    text = Path(page_path).read_text()
    if PAGE_MARKER not in text:
        raise ValueError(f"{page_path} lacks the line {PAGE_MARKER!r} that receives the table")
    machines = {r["machine"] for _, r in chapters if r is not None}
    one_machine = len(machines) == 1  # then said once, above the table
    columns = ["chapter", "run time", "parameters", *([] if one_machine else ["machine"])]
    columns += ["executed by", "finished"]
    rows = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    rows[1] = rows[1].replace("|---|---|", "|---|---:|", 1)  # times align right
    total = 0.0
    missing = []
    for name, record in chapters:
        chapter, _, seed = name.partition("/seed_")
        cells = [f"{{doc}}`{chapter}`" + (f", seed {seed} (replicate)" if seed else "")]
        if record is None:
            missing.append(name)
            cells += ["no record"] + [""] * (len(columns) - 2)
        else:
            total += record["seconds"]
            cells += [
                _duration(record["seconds"]),
                _parameters_text(record.get("parameters") or {}),
                *([] if one_machine else [record["machine"]]),
                f"`{record['executed_by']}`",
                record["finished"],
            ]
        rows.append("| " + " | ".join(cells) + " |")
    rows.append(
        "| "
        + " | ".join(["**all chapters**", f"**{_duration(total)}**"] + [""] * (len(columns) - 2))
        + " |"
    )
    table = "\n".join(rows)
    if one_machine:
        table = f"Every chapter ran on {machines.pop()}.\n\n" + table
    case_study_seconds = [
        record["seconds"] for name, record in chapters if name in case_study and record is not None
    ]
    if case_study and len(case_study_seconds) == len(case_study):
        names = ", ".join(f"{{doc}}`{name}`" for name in case_study)
        table += (
            f"\n\nThe case study's chapters ({names}) ran in {_duration(sum(case_study_seconds))} "
            f"together; all chapters took **{total / sum(case_study_seconds):.2f} times** as long."
        )
        cpu = {name: (record or {}).get("cpu_seconds") for name, record in chapters}
        if None not in cpu.values():  # every chapter's processor time was measured
            case_study_cpu = sum(cpu[name] for name in case_study)
            table += (
                f" In processor time (the kernels' user and system time, which a busy or shared "
                f"machine does not stretch) they used {_duration(case_study_cpu)}, and all "
                f"chapters **{sum(cpu.values()) / case_study_cpu:.2f} times** that."
            )
    if missing:
        table += (
            f"\n\nNo run record for: {', '.join(missing)} (executed by a tool that keeps none); "
            "the total leaves them out."
        )
    atomic_write_text(page_path, text.replace(PAGE_MARKER, table))
    return table
