"""Recorded exercise runs: whole-chapter runs that some solutions compare, run by a program.

Some exercises change a chapter (a layer, a learning rate) and ask what the change does to the
chapter's numbers. Answering takes whole-chapter runs, with and without the change, which the
book's build cannot afford. Their numbers must still come from runs, not from a keyboard, so:

- The solution's markdown cell names the runs it compares in its metadata, as
  ``"exercise_runs": [{"row": ..., "chapter": ..., "change": <exercise label>,
  "parameters": {...}}, ...]`` (``change`` and ``parameters`` optional). ``change`` names an
  exercise whose ``exercise_change`` (the cell, the old and the new text; see
  tests/test_exercise_changes.py) is applied to a copy of the chapter.
  ``"exercise_run_columns"`` names the table's columns (keys of :data:`COLUMNS`): only those
  its prose discusses, as a page has room for about six.
- ``python -m helpers.book.exercise_runs`` executes each named run once (a run two solutions
  share is executed once) with papermill into a temporary results folder, and records what
  the tables show, with the commit, the processor, the packages and the date, in
  :data:`RECORD_PATH`. Then it writes each solution's table, between :data:`TABLE_START`
  and :data:`TABLE_END`, from that record.
- ``--tables-only`` rewrites the tables from the record without running anything; the tests
  check that every table is the one the record gives, and that every recorded change is the
  exercise's change as the notebook has it now.

The tables are therefore measured outside the build that renders them, on the machine that
recorded them; each solution says so and glues its page's own run beside them.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from helpers import config
from helpers.files import atomic_write_text

from .execute import execute_notebook
from .toc import SOURCE_DIR, Chapter

#: The record of the runs, committed beside the notebooks (not a page of the book).
RECORD_PATH = SOURCE_DIR / "exercise_runs.json"
#: The markers around a generated table in a solution's markdown (HTML comments: the page
#: shows nothing of them).
TABLE_START = "<!-- exercise-runs table: written by python -m helpers.book.exercise_runs -->"
TABLE_END = "<!-- end of exercise-runs table -->"
#: The columns a table can show, by the key a solution names them with in its metadata
#: ``exercise_run_columns`` (each table shows only what its prose discusses: the pages have
#: room for about six columns).
COLUMNS = {
    "training_loss": "training loss, first to last epoch",
    "validation_loss": "validation loss, first to last epoch",
    "val_auc": "validation AUC",
    "test_auc": "test AUC (95% CI)",
    "test_sensitivity": "test sensitivity",
    "test_specificity": "test specificity (95% CI)",
    "false_alarms": "false alarms",
    "probe_test_auc": "probe's test AUC",
}


class ExerciseRunError(ValueError):
    """A solution's run list, an exercise's change or a record that cannot be used."""


def _source(cell: Mapping) -> str:
    source = cell["source"]
    return source if isinstance(source, str) else "".join(source)


def _set_source(cell: dict, text: str) -> None:
    lines = text.split("\n")
    cell["source"] = [line + "\n" for line in lines[:-1]] + [lines[-1]]


def read_notebook(path: Path) -> dict:
    """A notebook as JSON."""
    return json.loads(path.read_text(encoding="utf-8"))


def write_notebook(path: Path, notebook: dict) -> None:
    """A notebook as the book stores it (one-space indent, UTF-8, final newline)."""
    atomic_write_text(path, json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")


def exercise_changes(notebook: dict) -> dict[str, dict]:
    """Each exercise's ``exercise_change`` by its label."""
    found = {}
    for cell in notebook["cells"]:
        change = cell["metadata"].get("exercise_change")
        if cell["cell_type"] == "markdown" and change is not None:
            label = next(
                (
                    line.split(None, 1)[1].strip()
                    for line in _source(cell).splitlines()
                    if line.startswith(":label:")
                ),
                None,
            )
            if label is None:
                raise ExerciseRunError("an exercise with an exercise_change has no :label: line")
            found[label] = change
    return found


def target_cell(notebook: dict, which: str, *, name: str) -> dict:
    """The code cell an exercise changes: ``"model"`` (tagged ``model``) or ``"compile"``
    (the one calling ``model.compile(``); exactly one must match."""
    cells = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    if which == "model":
        found = [c for c in cells if "model" in c["metadata"].get("tags", [])]
    elif which == "compile":
        found = [c for c in cells if "model.compile(" in _source(c)]
    else:
        raise ExerciseRunError(
            f"{name}: an exercise names the cell {which!r}, not model or compile"
        )
    if len(found) != 1:
        raise ExerciseRunError(f"{name}: {len(found)} cells match {which!r}, expected one")
    return found[0]


def changed_source(notebook: dict, change: Mapping, *, name: str) -> str:
    """The source of the cell ``change`` names, with its ``old`` text (exactly once) replaced
    by its ``new`` text."""
    source = _source(target_cell(notebook, change["cell"], name=name))
    count = source.count(change["old"])
    if count != 1:
        raise ExerciseRunError(
            f"{name}: {change['old']!r} occurs {count} times in the {change['cell']} cell, "
            "expected once"
        )
    return source.replace(change["old"], change["new"])


def apply_change(notebook: dict, change: Mapping, *, name: str) -> dict:
    """A copy of ``notebook`` with ``change`` applied (the notebook itself is not changed)."""
    changed = json.loads(json.dumps(notebook))
    cell = target_cell(changed, change["cell"], name=name)
    _set_source(cell, changed_source(notebook, change, name=name))
    return changed


def run_key(spec: Mapping) -> str:
    """A run's key in the record: the chapter, the exercise whose change it applies, and the
    parameters it sets, e.g. ``model_1 + model-1-ex-dense`` or ``model_1 seed=1``."""
    key = spec["chapter"]
    if spec.get("change"):
        key += f" + {spec['change']}"
    for name, value in sorted(spec.get("parameters", {}).items()):
        key += f" {name}={value}"
    return key


@dataclass(frozen=True)
class Solution:
    """A solution that shows recorded runs: where it is, its runs and its columns."""

    path: Path
    index: int
    runs: list
    columns: list

    @property
    def where(self) -> str:
        return f"{self.path.name}, cell {self.index}"


def _check_runs(specs, columns, *, where: str, source_dir: Path) -> None:
    if not isinstance(specs, list) or not specs:
        raise ExerciseRunError(f"{where}: exercise_runs must be a non-empty list")
    for spec in specs:
        unknown = set(spec) - {"row", "chapter", "change", "parameters"}
        if unknown or not {"row", "chapter"} <= set(spec):
            raise ExerciseRunError(
                f"{where}: a run needs 'row' and 'chapter' (optional 'change', "
                f"'parameters'), got {sorted(spec)}"
            )
        if not (source_dir / f"{spec['chapter']}.ipynb").is_file():
            raise ExerciseRunError(f"{where}: no chapter {spec['chapter']!r} in {source_dir}")
    if not isinstance(columns, list) or not columns or not set(columns) <= set(COLUMNS):
        raise ExerciseRunError(
            f"{where}: exercise_run_columns must name some of {list(COLUMNS)}, got {columns!r}"
        )


def solution_runs(source_dir: Path = SOURCE_DIR) -> list[Solution]:
    """Every solution that names runs (metadata ``exercise_runs`` and
    ``exercise_run_columns`` of a markdown cell), checked."""
    found = []
    for path in sorted(source_dir.glob("*.ipynb")):
        for index, cell in enumerate(read_notebook(path)["cells"]):
            if "exercise_runs" not in cell["metadata"]:
                continue
            solution = Solution(
                path,
                index,
                cell["metadata"]["exercise_runs"],
                cell["metadata"].get("exercise_run_columns"),
            )
            if cell["cell_type"] != "markdown":
                raise ExerciseRunError(
                    f"{solution.where}: exercise_runs must be on a markdown cell"
                )
            _check_runs(
                solution.runs, solution.columns, where=solution.where, source_dir=source_dir
            )
            found.append(solution)
    return found


def planned_runs(source_dir: Path = SOURCE_DIR) -> dict[str, dict]:
    """Every run the solutions name, once each, by :func:`run_key`, with the change resolved
    from its exercise."""
    planned: dict[str, dict] = {}
    for solution in solution_runs(source_dir):
        for spec in solution.runs:
            run = {"chapter": spec["chapter"], "parameters": dict(spec.get("parameters", {}))}
            if spec.get("change"):
                changes = exercise_changes(read_notebook(source_dir / f"{spec['chapter']}.ipynb"))
                if spec["change"] not in changes:
                    raise ExerciseRunError(
                        f"{solution.where}: {spec['chapter']} has no exercise "
                        f"{spec['change']!r} with an exercise_change"
                    )
                run["exercise"], run["change"] = spec["change"], changes[spec["change"]]
            planned[run_key(spec)] = run
    return planned


def _processor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=config.REPO_ROOT, capture_output=True, text=True
    )
    return done.stdout.strip() if done.returncode == 0 else "unknown"


#: Parameters that name folders of the machine that ran: never recorded.
_PATH_PARAMETERS = ("data_dir", "results_dir")


def portable(parameters: Mapping) -> dict:
    """A run's parameters without the folders of the machine that ran it (the record is
    committed; a temporary folder's name says nothing, a home folder's says too much)."""
    return {k: v for k, v in parameters.items() if k not in _PATH_PARAMETERS}


def record_of(results: Path, chapter: str) -> dict:
    """What a table shows of one finished run, read from its ``metrics.json`` and
    ``history.csv``."""
    import pandas as pd

    metrics = json.loads((results / chapter / "metrics.json").read_text(encoding="utf-8"))
    history = pd.read_csv(results / chapter / "history.csv")
    test = metrics["test"]
    record = {
        "training_loss": [float(x) for x in history["loss"]],
        "validation_loss": [float(x) for x in history["val_loss"]],
        "val_auc": float(metrics["val"]["auc"]),
        "test": {
            name: float(test[name])
            for name in (
                "auc",
                "auc_ci_low",
                "auc_ci_high",
                "sensitivity",
                "specificity",
                "specificity_ci_low",
                "specificity_ci_high",
            )
        },
        "false_alarms": int(test["fp"]),
        "versions": metrics["versions"],
        "parameters": portable(metrics["parameters"]),
    }
    probe = metrics.get("logistic_probe")
    if probe is not None:
        record["probe_test_auc"] = float(probe["test"]["auc"])
    return record


def execute_run(key: str, run: Mapping, workdir: Path, source_dir: Path = SOURCE_DIR) -> dict:
    """Execute one planned run (:func:`planned_runs`) with papermill and return its record.

    The chapter (changed where the run says) is written into ``workdir/book/``, executed
    there with its parameters and ``results_dir = workdir/results``; the source notebooks
    are only read.
    """
    import time

    notebook = read_notebook(source_dir / f"{run['chapter']}.ipynb")
    if run.get("change"):
        notebook = apply_change(notebook, run["change"], name=f"{run['chapter']} ({key})")
    book = workdir / "book"
    book.mkdir(parents=True)
    path = book / f"{run['chapter']}.ipynb"
    write_notebook(path, notebook)
    results = workdir / "results"
    started = time.perf_counter()
    execute_notebook(
        Chapter(name=run["chapter"], path=path),
        book,
        workdir / "executed",
        {**run["parameters"], "results_dir": str(results)},
        name=key,
    )
    return {
        "chapter": run["chapter"],
        "exercise": run.get("exercise"),
        "change": run.get("change"),
        "set_parameters": run["parameters"],
        "commit": _commit(),
        "recorded": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "processor": _processor(),
        "seconds": round(time.perf_counter() - started, 1),
        **record_of(results, run["chapter"]),
    }


def _estimate(value: float, low: float, high: float) -> str:
    # the book's interval cell (helpers.report.table_html renders it the same way)
    return (
        f'<span class="estimate"><span class="value">{value:.3f}</span><br>'
        f'<span class="interval">({low:.3f}&#8209;{high:.3f})</span></span>'
    )


def _cell(column: str, run: Mapping) -> str:
    test = run["test"]
    if column in ("training_loss", "validation_loss"):
        return f"{run[column][0]:.3f} to {run[column][-1]:.3f}"
    if column == "test_auc":
        return _estimate(test["auc"], test["auc_ci_low"], test["auc_ci_high"])
    if column == "test_specificity":
        return _estimate(
            test["specificity"], test["specificity_ci_low"], test["specificity_ci_high"]
        )
    if column == "test_sensitivity":
        return f"{test['sensitivity']:.3f}"
    if column == "false_alarms":
        return f"{run['false_alarms']:,}"
    return f"{run[column]:.3f}"  # val_auc, probe_test_auc


def table_markdown(
    specs: Sequence[Mapping], record: Mapping[str, Mapping], columns: Sequence[str]
) -> str:
    """The markdown table of a solution's runs, row for row from the record, with the
    columns named (keys of :data:`COLUMNS`), and a sentence on where the runs were made.

    Raises
    ------
    ExerciseRunError
        If a run has no record (run ``python -m helpers.book.exercise_runs``), or lacks a
        column (a probe's AUC of a chapter without a probe).
    """
    missing = [run_key(spec) for spec in specs if run_key(spec) not in record]
    if missing:
        raise ExerciseRunError(
            f"no recorded run {', '.join(map(repr, missing))} in {RECORD_PATH.name}; run "
            "python -m helpers.book.exercise_runs"
        )
    runs = [record[run_key(spec)] for spec in specs]
    if "probe_test_auc" in columns and not all("probe_test_auc" in run for run in runs):
        raise ExerciseRunError("the column probe_test_auc needs runs of a chapter with a probe")
    lines = [
        "| run | " + " | ".join(COLUMNS[c] for c in columns) + " |",
        "|" + "---|" * (len(columns) + 1),
    ]
    for spec, run in zip(specs, runs, strict=True):
        lines.append(f"| {spec['row']} | " + " | ".join(_cell(c, run) for c in columns) + " |")
    lines += ["", provenance(runs)]
    return "\n".join(lines)


def provenance(runs: Sequence[Mapping]) -> str:
    """Where and when the runs of a table were recorded, in one sentence (each distinct value
    once, so that runs recorded apart say so)."""

    def distinct(values) -> str:
        return ", ".join(dict.fromkeys(values))

    return (
        "Recorded by `python -m helpers.book.exercise_runs` on "
        f"{distinct(run['recorded'][:10] for run in runs)} (commit "
        f"{distinct(run['commit'][:7] for run in runs)}; "
        f"{distinct(run['processor'] for run in runs)}; TensorFlow "
        f"{distinct(run['versions']['tensorflow'] for run in runs)}, Keras "
        f"{distinct(run['versions']['keras'] for run in runs)})."
    )


def with_table(source: str, table: str, *, where: str) -> str:
    """``source`` with the text between :data:`TABLE_START` and :data:`TABLE_END` replaced
    by ``table``."""
    if source.count(TABLE_START) != 1 or source.count(TABLE_END) != 1:
        raise ExerciseRunError(f"{where}: needs one {TABLE_START!r} and one {TABLE_END!r}")
    head, rest = source.split(TABLE_START)
    _, tail = rest.split(TABLE_END)
    return f"{head}{TABLE_START}\n{table}\n{TABLE_END}{tail}"


def read_record(path: Path = RECORD_PATH) -> dict:
    """The recorded runs by :func:`run_key` (empty when there is no record yet)."""
    return json.loads(path.read_text(encoding="utf-8"))["runs"] if path.is_file() else {}


def write_tables(source_dir: Path = SOURCE_DIR, record_path: Path = RECORD_PATH) -> list[Path]:
    """Write every solution's table from the record; returns the notebooks that changed."""
    record = read_record(record_path)
    changed = []
    for solution in solution_runs(source_dir):
        notebook = read_notebook(solution.path)
        cell = notebook["cells"][solution.index]
        table = table_markdown(solution.runs, record, solution.columns)
        text = with_table(_source(cell), table, where=solution.where)
        if text != _source(cell):
            _set_source(cell, text)
            write_notebook(solution.path, notebook)
            changed.append(solution.path)
    return changed


def record_runs(
    keys: Sequence[str] | None = None,
    source_dir: Path = SOURCE_DIR,
    record_path: Path = RECORD_PATH,
) -> dict:
    """Execute the planned runs (those of ``keys``, or all) and add them to the record.

    The record file is replaced only after every run finished: a failed run leaves the
    earlier record as it was.
    """
    planned = planned_runs(source_dir)
    unknown = sorted(set(keys or ()) - set(planned))
    if unknown:
        raise ExerciseRunError(f"no solution names the runs {unknown}; planned: {sorted(planned)}")
    record = read_record(record_path)
    for key in keys or planned:
        print(f"running {key} ...", flush=True)
        with tempfile.TemporaryDirectory(prefix="exercise-run-") as workdir:
            record[key] = execute_run(key, planned[key], Path(workdir), source_dir)
        print(
            f"  {record[key]['seconds']} s, test AUC {record[key]['test']['auc']:.3f}", flush=True
        )
    atomic_write_text(
        record_path, json.dumps({"runs": dict(sorted(record.items()))}, indent=1) + "\n"
    )
    return record


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m helpers.book.exercise_runs",
        description="Run the whole-chapter runs that exercise solutions compare, record them "
        f"in {RECORD_PATH.relative_to(config.REPO_ROOT)} and write the solutions' tables.",
    )
    parser.add_argument("--only", nargs="+", metavar="RUN", help="run only these (see --list)")
    parser.add_argument("--list", action="store_true", help="list the planned runs and exit")
    parser.add_argument(
        "--tables-only", action="store_true", help="write the tables from the record; run nothing"
    )
    args = parser.parse_args(argv)
    try:
        if args.list:
            for key, run in planned_runs().items():
                print(f"{key:40} {run['parameters'] or ''}")
            return 0
        if not args.tables_only:
            record_runs(args.only)
        for path in write_tables():
            print(f"table written: {path.relative_to(config.REPO_ROOT)}")
    except ExerciseRunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
