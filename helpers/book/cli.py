"""The command line, ``python -m helpers.book``: parse options, run a build, a status or a list.

Exit status: 0 built; 1 a notebook failed or rendering reported a warning; 2 bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from helpers.replicates import DEFAULT_REPLICATES, REPLICATED_CHAPTERS

from . import build
from .build import book_status, build_book, find_experiment, list_chapters
from .errors import BookError
from .execute import KERNEL_NAME
from .plan import PATH_OPTIONS, parse_value
from .toc import CONFIG_PATH, SOURCE_DIR, TOC_PATH, find_chapters


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m helpers.book",
        description=(
            "Build the course book. Every notebook listed in _toc.yml is executed with "
            "papermill into _build/executed/ (a copy of book/; the source notebooks are "
            "never modified), with one shared set of parameters, then jupyter-book renders "
            "the executed copies, without executing them again, into _build/html/. "
            "Open _build/html/index.html in a browser; no server or network is needed. "
            "The HTML is replaced only when rendering succeeded."
        ),
        epilog=(
            "Parameters: each notebook is passed only the parameters its cell tagged "
            "'parameters' declares. A name that no selected notebook declares, or an "
            "impossible value (a missing --data-dir, epochs 0, ...), is rejected before any "
            "notebook runs, with the list of allowed names (see --list). A relative path "
            "given with -p is relative to the repository root; --data-dir and --results-dir "
            "are relative to the current folder. "
            "Exit status: 0 built; 1 a notebook failed (its name and failing cell are "
            "printed) or rendering reported a warning or broken reference; 2 bad arguments. "
            "`jupyter-book build book` from the repository root also builds the book; it "
            "executes the notebooks itself with their defaults."
        ),
    )
    parser.add_argument(
        "--data-dir",
        metavar="PATH",
        help="the chest X-ray data folder; passed as the parameter data_dir "
        "(default: each notebook's own default)",
    )
    parser.add_argument(
        "--results-dir",
        metavar="PATH",
        help="where models write their results; passed as the parameter results_dir "
        "(default: each notebook's own default)",
    )
    parser.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="set a notebook parameter; VALUE is parsed like papermill -p: True/False/None, "
        "an int, a float, else a string. Repeatable",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="execute only these notebooks (by name, e.g. model_1); the other chapters keep "
        "the executed copy of an earlier run if their source is unchanged, else are "
        "left out of this build (references to them become plain text)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="execute every selected notebook, even those whose notebook, parameters, data, "
        "the helpers modules they import and upstream results are unchanged since their last "
        "complete run (those are re-used otherwise)",
    )
    parser.add_argument(
        "--replicates",
        type=int,
        default=None,
        metavar="K",
        help="train each replicated chapter's recipe K more times, with the seeds "
        "seed+1 .. seed+K (seed: the chapter's), each a full run of its notebook into "
        "<results_dir>/replicates/seed_<seed>/ (executed copy in _build/replicates/, not a "
        "page); re-used when unchanged like the chapters "
        f"(default: {DEFAULT_REPLICATES} for the replicated chapters a build selects; 0 with "
        "--executed-from)",
    )
    parser.add_argument(
        "--replicate-chapters",
        nargs="+",
        metavar="NAME",
        help=f"the chapters --replicates applies to (default: {' '.join(REPLICATED_CHAPTERS)})",
    )
    parser.add_argument(
        "--status",
        action="store_true",
        help="say which chapters are up to date and which are stale (and why), then exit",
    )
    parser.add_argument(
        "--list",
        action="store_true",
        help="list the chapters and the parameters each notebook declares, then exit",
    )
    parser.add_argument(
        "--executed-from",
        type=Path,
        metavar="DIR",
        help="render the notebooks found in DIR as they are, executed elsewhere (make test: "
        "pytest --nbval-lax book/ with BOOK_SAVE_EXECUTED=DIR), instead of executing them again",
    )
    parser.add_argument(
        "--kernel", default=KERNEL_NAME, help=f"Jupyter kernel name (default: {KERNEL_NAME})"
    )
    parser.add_argument(
        "--source-dir",
        type=Path,
        default=SOURCE_DIR,
        help="the book's source folder (default: book/)",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="the folder that receives _build/ (default: the repository root for the book; "
        "for an experiment, a build passed parameters that differ from the notebooks' "
        "defaults, its results folder: --results-dir, else results/experiment/)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=CONFIG_PATH,
        help="jupyter-book config (default: _config.yml)",
    )
    parser.add_argument(
        "--toc",
        type=Path,
        default=TOC_PATH,
        help="table of contents, entries relative to the source folder (default: _toc.yml)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="print jupyter-book's whole output"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (``sys.argv[1:]`` by default).

    Returns
    -------
    int
        0 on success, 1 for a failed notebook or render, 2 for bad arguments.
    """
    args = _parser().parse_args(argv)
    params: dict[str, Any] = {name: parse_value(value) for name, value in args.parameter}
    for name, option in PATH_OPTIONS.items():
        given = getattr(args, name)
        if given is not None:
            if name in params:
                print(
                    f"error: give {name} either as {option} or -p {name}, not both", file=sys.stderr
                )
                return 2
            # Typed in a shell: relative to where the command was typed. The plan passes it
            # on repository-relative when it is inside the repository.
            params[name] = str(Path(given).expanduser().resolve())
    try:
        if args.list:
            list_chapters(find_chapters(args.source_dir.resolve(), args.toc.resolve()))
            return 0
        output_dir = args.output_dir
        if output_dir is None:
            # An experiment (an exercise's -p or --results-dir) is built apart from the book.
            only = None if args.status else args.only
            experiment = find_experiment(args.source_dir, args.toc, only, params)
            output_dir = build.OUTPUT_DIR if experiment is None else experiment.output_dir
            if experiment is not None:
                params = experiment.params
                print(experiment.describe(), flush=True)
        if args.status:
            book_status(
                args.source_dir,
                output_dir,
                args.toc,
                params,
                replicates=args.replicates,
                replicate_chapters=args.replicate_chapters,
            )
            return 0
        build_book(
            source_dir=args.source_dir,
            output_dir=output_dir,
            config_path=args.config,
            toc_path=args.toc,
            only=args.only,
            params=params,
            kernel_name=args.kernel,
            verbose=args.verbose,
            force=args.force,
            executed_from=args.executed_from,
            replicates=args.replicates,
            replicate_chapters=args.replicate_chapters,
        )
    except BookError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0
