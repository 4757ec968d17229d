"""The whole build: plan, decide what is stale, execute it, render; and the status and list reports.

:func:`build_book` is what ``python -m helpers.book`` runs. Every function takes its
folders as arguments, so that the tests build a small book from fixture notebooks in a
temporary folder.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from helpers import config
from helpers import parameters as book_parameters
from helpers.chapters import SOURCE_ENV, TOC_ENV
from helpers.replicates import DEFAULT_REPLICATES

from .errors import NotebookFailed
from .execute import EXECUTED_SUBDIR, KERNEL_NAME, execute_notebook, prepare_executed_dir
from .plan import PATH_OPTIONS, declared_parameters, differences_from_the_book, plan_build
from .render import render
from .replicates import Replicate, build_replicates
from .runtimes import PAGE_NAME, annotate_run_time, read_record, record_run, write_run_times_page
from .staleness import (
    CODE_DIR,
    STATE_FILE,
    Decision,
    decide,
    load_state,
    result_files,
    save_state,
    sha256_file,
)
from .toc import (
    CONFIG_PATH,
    SOURCE_DIR,
    TOC_PATH,
    Chapter,
    chapter_targets,
    find_chapters,
    toc_without,
)

#: The folder that receives the book's ``_build/`` (like ``jupyter-book build --path-output``).
OUTPUT_DIR = config.REPO_ROOT
#: The results folder of an experiment that names none of its own (the book's stay apart).
EXPERIMENT_RESULTS_DIR = config.DEFAULT_RESULTS_DIR / "experiment"


@dataclass(frozen=True)
class Experiment:
    """A build whose parameters differ from the book's, and the folders it is given.

    Attributes
    ----------
    differences : dict
        The parameters that differ from the notebooks' defaults, as passed.
    params : dict
        The build's parameters, with ``results_dir`` added when it named none
        (:data:`EXPERIMENT_RESULTS_DIR`, for notebooks that declare it).
    output_dir : Path
        Its results folder, which receives its ``_build/`` (executed notebooks, pages,
        record of runs), apart from the book's.
    """

    differences: dict[str, Any]
    params: dict[str, Any]
    output_dir: Path

    def describe(self) -> str:
        """The lines that say what the experiment is and where it writes."""
        changed = ", ".join(f"{name}={value}" for name, value in self.differences.items())
        html = self.output_dir / "_build" / "html"
        return (
            f"experiment ({changed} differ from the book's parameters): its results, "
            f"executed notebooks and pages go to {self.output_dir}/ "
            f"(open {html / 'index.html'});\n"
            f"the book's _build/ is left as it is (--output-dir chooses another folder)."
        )


def find_experiment(
    source_dir: Path,
    toc_path: Path,
    only: Sequence[str] | None,
    params: Mapping[str, Any],
) -> Experiment | None:
    """Whether a build is the book's or an experiment, and an experiment's folders.

    A build is the book's when every notebook it runs is passed its own defaults
    (:func:`~helpers.book.plan.differences_from_the_book`). Any other build writes its
    results, executed notebooks, pages and record of runs under its results folder, so
    that the book's ``_build/html`` and ``_build/runner-state.json`` stay as they were.

    Parameters
    ----------
    source_dir, toc_path : Path
        As for :func:`build_book`.
    only : sequence of str, optional
        The notebooks the build runs.
    params : mapping
        The parameters it is given.

    Returns
    -------
    Experiment or None
        None for the book's own build.

    Raises
    ------
    ParameterError
        For unknown names or impossible values, as :func:`build_book` would.
    """
    chapters = find_chapters(Path(source_dir).resolve(), Path(toc_path).resolve())
    plan = plan_build(chapters, only, params)
    differences = differences_from_the_book(plan)
    if not differences:
        return None
    params = dict(params)
    if "results_dir" in differences:
        results_dir = book_parameters.resolve_path(differences["results_dir"])
    else:
        results_dir = EXPERIMENT_RESULTS_DIR
        if any("results_dir" in declared_parameters(c.path) for c in plan.selected):
            params["results_dir"] = str(results_dir)
    return Experiment(differences, params, results_dir)


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def _progress(out: TextIO, width: int, name: str, word: str, seconds: str, note: str) -> None:
    print(f"{name:<{width}} {word:<9} {seconds:>9}  {note}".rstrip(), file=out, flush=True)


def _run_one(
    chapter: Chapter,
    decision: Decision,
    parameters: Mapping[str, Any],
    *,
    source_dir: Path,
    executed_dir: Path,
    state: dict[str, Any],
    state_path: Path,
    kernel_name: str,
    out: TextIO,
    width: int,
    replicate: Replicate | None = None,
) -> None:
    """Execute one notebook (or a replicate of it), recording its run in the state file
    before and after."""
    name = chapter.name if replicate is None else replicate.name
    output = None if replicate is None else replicate.executed_path(executed_dir.parent)
    state[name] = {
        "status": "running",
        "started": _now(),
        "inputs": decision.inputs,
        "code_files": decision.code_files,
        "parameters": dict(parameters),
    }
    save_state(state_path, state)
    start, cpu_start = time.perf_counter(), _children_cpu_seconds()
    try:
        executed = execute_notebook(
            chapter, source_dir, executed_dir, parameters, kernel_name, output=output, name=name
        )
    except NotebookFailed:
        state[name]["status"] = "failed"
        save_state(state_path, state)
        _progress(out, width, name, "FAILED", f"{time.perf_counter() - start:7.1f} s", "")
        raise
    seconds = time.perf_counter() - start
    # The time travels with the executed copy, so that a re-used copy still shows it.
    record_run(
        executed,
        seconds,
        executed_by="python -m helpers.book",
        parameters=parameters,
        cpu_seconds=_children_cpu_seconds() - cpu_start,
    )
    state[name].update(
        status="complete",
        finished=_now(),
        seconds=round(seconds, 1),
        outputs={str(f): sha256_file(f) for f in result_files(chapter, parameters) if f.is_file()},
    )
    save_state(state_path, state)
    _progress(out, width, name, "executed", f"{seconds:7.1f} s", f"({decision.reason})")


def _children_cpu_seconds() -> float:
    """User and system time of this process's ended child processes: a notebook's kernel
    (and what it started) once papermill has shut it down."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _show_run_times(
    executed_dir: Path,
    source_dir: Path,
    rendered: Sequence[Chapter],
    replicates: Mapping[str, Sequence[Replicate]],
) -> None:
    """Each rendered chapter's run-time note, and the appendix page's table when the book
    has that page (:mod:`helpers.book.runtimes`), each chapter's replicates of this build
    listed after it."""
    page = executed_dir / PAGE_NAME
    notebooks = [
        (c.name, executed_dir / c.path.relative_to(source_dir)) for c in rendered if c.is_notebook
    ]
    for _, path in notebooks:
        annotate_run_time(path, link_to_page=page.is_file())
    if page.is_file():
        rows = []
        for name, path in notebooks:
            rows.append((name, read_record(path)))
            for replicate in replicates.get(name, ()):
                executed = replicate.executed_path(executed_dir.parent)
                rows.append((replicate.name, read_record(executed) if executed.is_file() else None))
        case_study = [c.name for c in rendered if c.case_study]
        write_run_times_page(page, rows, case_study=case_study)


def _adoptable(executed_from: Path | None, chapters: Sequence[Chapter]) -> dict[str, Path]:
    """The chapters with an executed notebook in ``executed_from``: name -> file."""
    if executed_from is None:
        return {}
    folder = Path(executed_from)
    if not folder.is_dir():
        raise FileNotFoundError(f"--executed-from {folder} is not a folder of executed notebooks")
    return {
        c.name: folder / f"{c.name}.ipynb"
        for c in chapters
        if c.is_notebook and (folder / f"{c.name}.ipynb").is_file()
    }


@contextlib.contextmanager
def _book_environment(source_dir: Path, toc_path: Path) -> Iterator[None]:
    """Name the book's source folder and toc in the environment the kernels inherit
    (:data:`helpers.chapters.SOURCE_ENV`, :data:`helpers.chapters.TOC_ENV`), so that a
    notebook that lists the model chapters (the comparison) reads this book's, then restore
    the environment."""
    names = {SOURCE_ENV: str(source_dir), TOC_ENV: str(toc_path)}
    before = {name: os.environ.get(name) for name in names}
    os.environ.update(names)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def build_book(
    source_dir: Path = SOURCE_DIR,
    output_dir: Path = OUTPUT_DIR,
    config_path: Path = CONFIG_PATH,
    toc_path: Path = TOC_PATH,
    only: Sequence[str] | None = None,
    params: Mapping[str, Any] | None = None,
    kernel_name: str = KERNEL_NAME,
    verbose: bool = False,
    out: TextIO | None = None,
    force: bool = False,
    code_dir: Path = CODE_DIR,
    executed_from: Path | None = None,
    replicates: int | None = None,
    replicate_chapters: Sequence[str] | None = None,
) -> Path:
    """Execute the book's stale notebooks with papermill, then render them with jupyter-book.

    Parameters
    ----------
    source_dir : Path
        The book's pages and notebooks (never modified).
    output_dir : Path
        Receives ``_build/executed/`` (the executed copy) and ``_build/html/``.
    config_path, toc_path : Path
        ``_config.yml`` and ``_toc.yml``; toc entries are relative to ``source_dir``.
    only : sequence of str, optional
        Consider only these notebooks (by name, ``"model_1"``) for execution. The others
        keep an earlier run's executed copy when still valid, else are left out of the
        render, and references to them are shown as plain text.
    params : mapping, optional
        Parameter name to value, shared by all notebooks; each notebook gets those its
        ``parameters`` cell declares. A relative path is relative to the repository root;
        paths inside the repository are passed repository-relative.
    kernel_name : str
        The Jupyter kernel.
    verbose : bool
        Print jupyter-book's whole output.
    out : text stream, optional
        Where progress lines go (standard output by default).
    force : bool
        Execute every selected notebook, even those whose inputs did not change.
    code_dir : Path
        The package whose modules the notebooks import (the files each one runs are among
        its inputs).
    executed_from : Path, optional
        A folder of notebooks already executed elsewhere (``pytest --nbval-lax book/`` with
        ``BOOK_SAVE_EXECUTED`` set, see ``book/conftest.py``): each chapter found there is
        rendered as it is ("adopted"), not executed again, so that ``make test`` executes
        every notebook once.
    replicates : int >= 0, optional
        Run each replicated chapter this many more times, with the seeds and results
        folders of :mod:`helpers.replicates`, right after the chapter; re-used like
        chapters when unchanged, never rendered (:mod:`helpers.book.replicates`). None:
        :data:`helpers.replicates.DEFAULT_REPLICATES` of each replicated chapter this
        build selects that can be replicated (none when ``executed_from`` is given, and no
        error when none is selected).
    replicate_chapters : sequence of str, optional
        The chapters to replicate (default
        :data:`helpers.replicates.REPLICATED_CHAPTERS`); only selected ones are.

    Returns
    -------
    Path
        ``<output_dir>/_build/html/index.html``.

    Raises
    ------
    ParameterError
        Before anything runs, for unknown names or impossible values.
    NotebookFailed
        When a notebook raises; nothing is rendered.
    RenderFailed
        When jupyter-book warns or fails; the previous HTML is kept.
    """
    out = out or sys.stdout
    source_dir, output_dir = Path(source_dir).resolve(), Path(output_dir).resolve()
    config_path, toc_path = Path(config_path).resolve(), Path(toc_path).resolve()
    chapters = find_chapters(source_dir, toc_path)
    plan = plan_build(chapters, only, params)
    executed_dir = output_dir / "_build" / EXECUTED_SUBDIR
    state_path = output_dir / "_build" / STATE_FILE
    state = load_state(state_path)
    # Those of chapters outside --only are kept as last run, so that their readers stay.
    planned_replicates = build_replicates(
        plan,
        state,
        _replicate_count(replicates, executed_from),
        replicate_chapters,
        required=replicates is not None,
    )
    decisions = decide(
        plan,
        state,
        executed_dir,
        source_dir,
        force=force,
        code_dir=code_dir,
        replicates=planned_replicates,
    )
    adopted = _adoptable(executed_from, plan.chapters)
    for name in adopted:
        decisions[name] = Decision("adopt", f"executed by {executed_from}", decisions[name].inputs)
    kept = {n for n, d in decisions.items() if d.action in ("reuse", "leave out")}
    prepare_executed_dir(source_dir, executed_dir, kept, chapters)
    for name, path in adopted.items():
        chapter = next(c for c in chapters if c.name == name)
        (executed_dir / chapter.path.relative_to(source_dir)).write_bytes(path.read_bytes())
    # The kernels inherit this: it silences TensorFlow's C++ INFO and WARNING lines
    # (stderr is also removed from the HTML by the config, for the lines it misses).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    width = max((len(name) for name in [*(c.name for c in chapters), *decisions]), default=10) + 2
    with _book_environment(source_dir, toc_path):  # the kernels read this book's chapters
        for chapter in plan.chapters:
            decision = decisions.get(chapter.name)
            if decision is None:
                continue
            runs = [(chapter.name, decision, plan.parameters.get(chapter.name), None)]
            runs += [
                (r.name, decisions[r.name], r.parameters, r)
                for r in planned_replicates.get(chapter.name, ())
            ]
            for name, run_decision, parameters, replicate in runs:
                if run_decision.action != "execute":
                    word = {"reuse": "re-used", "adopt": "adopted"}.get(
                        run_decision.action, "left out"
                    )
                    _progress(out, width, name, word, "", run_decision.reason)
                    continue
                _run_one(
                    chapter,
                    run_decision,
                    parameters,
                    source_dir=source_dir,
                    executed_dir=executed_dir,
                    state=state,
                    state_path=state_path,
                    kernel_name=kernel_name,
                    out=out,
                    width=width,
                    replicate=replicate,
                )

    start = time.perf_counter()
    left_out = [
        c for c in chapters if c.name in decisions and decisions[c.name].action == "leave out"
    ]
    _show_run_times(
        executed_dir,
        source_dir,
        [c for c in chapters if c not in left_out],
        planned_replicates,
    )
    render_toc = toc_path
    labels: set[str] = set()
    if left_out:
        names = {c.name for c in left_out}
        render_toc = executed_dir / "_toc.render.yml"
        render_toc.write_text(
            yaml.safe_dump(
                toc_without(yaml.safe_load(toc_path.read_text()), names), sort_keys=False
            )
        )
        labels = set().union(*(chapter_targets(c) for c in left_out))
    html_dir = render(
        executed_dir,
        output_dir,
        config_path,
        render_toc,
        verbose=verbose,
        left_out_labels=labels,
        left_out_docs={c.name for c in left_out},
    )
    pages = len(plan.chapters) - len(left_out)
    note = f"{pages} page{'s' if pages != 1 else ''} -> {html_dir / 'index.html'}"
    if left_out:
        note += f" (left out: {', '.join(c.name for c in left_out)})"
    _progress(out, width, "(rendering)", "rendered", f"{time.perf_counter() - start:7.1f} s", note)
    return html_dir / "index.html"


def _replicate_count(replicates: int | None, executed_from: Path | None) -> int:
    """The replicates a build runs: those asked for; else, by default,
    :data:`helpers.replicates.DEFAULT_REPLICATES`, except when the chapters come executed
    from elsewhere (``make test`` renders nbval's runs and trains nothing)."""
    if replicates is not None:
        return replicates
    return 0 if executed_from is not None else DEFAULT_REPLICATES


def book_status(
    source_dir: Path = SOURCE_DIR,
    output_dir: Path = OUTPUT_DIR,
    toc_path: Path = TOC_PATH,
    params: Mapping[str, Any] | None = None,
    out: TextIO | None = None,
    code_dir: Path = CODE_DIR,
    replicates: int | None = None,
    replicate_chapters: Sequence[str] | None = None,
) -> dict[str, Decision]:
    """Print, for every notebook (and replicate), whether its last run is up to date or
    stale, and why.

    Parameters
    ----------
    source_dir, output_dir, toc_path : Path
        As for :func:`build_book`.
    params : mapping, optional
        The parameters a build would pass.
    out : text stream, optional
        Where the lines go (standard output by default).
    code_dir : Path
        The package whose code the notebooks run.
    replicates, replicate_chapters
        The replicates a build would run, as for :func:`build_book`; each is listed
        after its chapter as ``<chapter>/seed_<seed>``.

    Returns
    -------
    dict
        Notebook (and replicate) name to :class:`~helpers.book.staleness.Decision`.
    """
    out = out or sys.stdout
    source_dir, output_dir = Path(source_dir).resolve(), Path(output_dir).resolve()
    chapters = find_chapters(source_dir, Path(toc_path).resolve())
    plan = plan_build(chapters, None, params)
    state = load_state(output_dir / "_build" / STATE_FILE)
    decisions = decide(
        plan,
        state,
        output_dir / "_build" / EXECUTED_SUBDIR,
        source_dir,
        code_dir=code_dir,
        replicates=build_replicates(
            plan,
            state,
            _replicate_count(replicates, None),
            replicate_chapters,
            required=replicates is not None,
        ),
    )
    width = max((len(name) for name in [*(c.name for c in chapters), *decisions]), default=10) + 2
    for name, decision in decisions.items():
        if decision.action == "reuse":
            seconds = state.get(name, {}).get("seconds", "?")
            line = f"up to date  ({decision.reason}, {seconds} s)"
        else:
            line = f"stale       ({decision.reason})"
        print(f"{name:<{width}} {line}", file=out)
    return decisions


def list_chapters(chapters: Sequence[Chapter], out: TextIO | None = None) -> None:
    """Print each chapter and the parameters its notebook declares.

    Parameters
    ----------
    chapters : sequence of Chapter
        The book's chapters.
    out : text stream, optional
        Where the lines go (standard output by default).
    """
    out = out or sys.stdout
    for chapter in chapters:
        if not chapter.is_notebook:
            print(f"{chapter.name}  (page)", file=out)
            continue
        print(f"{chapter.name}  (notebook)", file=out)
        for p in declared_parameters(chapter.path).values():
            option = f"  [{PATH_OPTIONS[p.name]}]" if p.name in PATH_OPTIONS else ""
            spec = book_parameters.PARAMETERS.get(p.name)
            help_text = f"  # {spec.help}" if spec else ""
            print(f"    {p.name}: {p.type_name} = {p.default}{option}{help_text}", file=out)
