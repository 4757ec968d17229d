"""pytest --nbval-lax over book/: run the notebooks in the order of _toc.yml.

Chapters read the results of earlier chapters (the comparison reads every
model's), so the alphabetical order pytest would use is wrong.
"""

import os
import time
from pathlib import Path

from helpers.book.toc import in_toc_order

_SOURCE = Path(__file__).resolve().parent
_TOC = _SOURCE.parent / "_toc.yml"


def _docname(item) -> str:
    """The toc's name of the notebook an nbval item (one cell) belongs to; a
    file outside book/ (collected beside it) keeps its path, which no toc entry
    has: it runs last."""
    path = Path(str(item.fspath)).resolve()
    return (
        path.relative_to(_SOURCE).with_suffix("").as_posix()
        if path.is_relative_to(_SOURCE)
        else str(path)
    )


def pytest_collection_modifyitems(session, config, items):
    # The one toc reader (helpers.book.toc), which jupyter-book's reading order
    # follows too; the sort is stable: the cells of one notebook keep their
    # order.
    items[:] = in_toc_order(items, _TOC, _docname)


# ------------------------------------------------------------------------------
# One execution per notebook in `make test`: with BOOK_SAVE_EXECUTED=DIR, each
# notebook whose cells all passed is written to DIR/<name>.ipynb with the outputs
# nbval collected, and the CI-sized book build renders those (python -m
# helpers.book --executed-from DIR) instead of executing every notebook a second
# time.
# ------------------------------------------------------------------------------

_SAVE_DIR = os.environ.get("BOOK_SAVE_EXECUTED")
# path -> nbval's IPyNbFile (holds the notebook)
_notebooks: dict[str, object] = {}
_failed: set[str] = set()
# path -> when its first cell started (the kernel starts then)
_started: dict[str, float] = {}
_finished: dict[str, float] = {}  # path -> when its last cell ended


def pytest_runtest_setup(item):
    _started.setdefault(str(item.fspath), time.perf_counter())


def pytest_runtest_logreport(report):
    if _SAVE_DIR and report.failed:
        _failed.add(str(report.fspath))


def pytest_runtest_teardown(item, nextitem):
    outputs = getattr(item, "test_outputs", None)
    cell = getattr(item, "cell", None)
    if not _SAVE_DIR or outputs is None or cell is None:
        return
    _finished[str(item.fspath)] = time.perf_counter()
    cell.outputs = list(outputs)
    count = next(
        (
            o.get("execution_count")
            for o in outputs
            if o.get("output_type") == "execute_result"
        ),
        None,
    )
    cell.execution_count = count
    _notebooks[str(item.fspath)] = item.parent


def pytest_sessionfinish(session, exitstatus):
    if not _SAVE_DIR:
        return
    import nbformat

    from helpers.book import runtimes
    from helpers.book.plan import declared_parameters

    folder = Path(_SAVE_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    for path, parent in _notebooks.items():
        target = folder / Path(path).name
        if path in _failed:
            target.unlink(missing_ok=True)  # never render a notebook that failed
            continue
        partial = target.with_suffix(".ipynb.partial")
        nbformat.write(parent.nb, str(partial))
        os.replace(partial, target)
        # The chapter's run time, kept with it as the runner keeps its own (see
        # helpers.book.runtimes); the CI-sized parameters come from BOOK_*
        # variables.
        runtimes.record_run(
            target,
            _finished[path] - _started[path],
            executed_by="pytest --nbval-lax",
            parameters={
                name: int(value) if value.isdigit() else value
                for name, value in (
                    (key[len("BOOK_") :].lower(), value)
                    for key, value in os.environ.items()
                    if key.startswith("BOOK_")
                )
                if name in declared_parameters(Path(path))  # this chapter's own
            },
        )
