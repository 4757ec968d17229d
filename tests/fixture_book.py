"""The fixture book of the runner's tests: small notebooks laid out like the repository.

``make_fixture_book`` lays out ``_config.yml`` (copied from the real one), ``_toc.yml`` and
``book/`` with notebooks that draw a matplotlib figure and show a pandas table, which is
what the real chapters render (no TensorFlow). ``run_cli`` runs ``python -m helpers.book``
on such a book as a user would; ``build_fixture_book_with_cli`` is the one full build that
test_book.py reads and test_browser.py opens (once per session, conftest.py).
Used by tests/test_book*.py and tests/test_browser.py; nothing here is a test.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parent.parent
STDERR_MARKER = "STDERR-MUST-NOT-REACH-THE-HTML"

INTRO = """\
# Fixture book

A page that introduces the chapters (the navigation links them).
"""

TOC = """\
format: jb-book
root: intro
chapters:
  - file: alpha
  - file: beta
"""


def make_notebook(*cells: tuple[str, str, list[str]]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    for kind, source, tags in cells:
        make = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
        cell = make(textwrap.dedent(source).strip())
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    return nb


#: The width ruff formats the book's notebook code at (book/ruff.toml).
NOTEBOOK_LINE_LENGTH = tomllib.loads((REPO / "book" / "ruff.toml").read_text())["line-length"]
#: A code line of that width, which prints a line of that width.
LONG_LINE = 'line = "' + "x" * (NOTEBOOK_LINE_LENGTH - 9) + '"'


def alpha_notebook() -> nbformat.NotebookNode:
    """A chapter with parameters, a matplotlib figure, stderr output, a folded code cell
    whose line and output line are as long as the book's code lines may be, and a log
    printed line by line."""
    return make_notebook(
        ("markdown", "# Alpha chapter\n\nA figure.", []),
        ("code", 'n_points = 5\nlabel = "alpha"\ndata_dir = "."', ["parameters"]),
        (
            "code",
            f"""
            import sys
            # Split so that the marker appears only in the output, not in the code.
            print("{STDERR_MARKER[:10]}" + "{STDERR_MARKER[10:]}", file=sys.stderr)
            print(f"n_points={{n_points}} label={{label}}")
            """,
            [],
        ),
        (
            "code",
            """
            import matplotlib.pyplot as plt
            fig, ax = plt.subplots(figsize=(3, 2))
            ax.plot(range(n_points), [i * i for i in range(n_points)])
            plt.show()
            """,
            [],
        ),
        ("code", LONG_LINE + '\nprint(line + "123456789")', ["hide-input"]),
        (
            "code",
            """
            import time
            for epoch in range(1, 4):  # a training log: one message per line
                print(f"epoch {epoch}/3", flush=True)
                time.sleep(0.05)
            """,
            [],
        ),
    )


def beta_notebook() -> nbformat.NotebookNode:
    """A chapter showing a comparison table (a pandas DataFrame, shown as the book's
    chapters show tables: helpers.report.start_chapter) with intervals, and a figure."""
    return make_notebook(
        ("markdown", "# Beta chapter\n\nThe comparison table.", []),
        ("code", "n_rows = 3", ["parameters"]),
        (
            "code",
            """
            import pandas as pd
            from helpers import report
            report.start_chapter()
            table = pd.DataFrame({"model": [f"model_{i}" for i in range(n_rows)],
                                  "auc": [0.9 - 0.01 * i for i in range(n_rows)]})
            ci = [f"{a:.3f} ({a - 0.05:.3f}-{a + 0.05:.3f})" for a in table.auc]
            table["auc (95% CI)"] = ci
            table
            """,
            [],
        ),
        (
            "code",
            """
            import matplotlib.pyplot as plt
            plt.figure(figsize=(3, 2)); plt.bar(table["model"], table["auc"]); plt.show()
            """,
            [],
        ),
    )


def failing_notebook() -> nbformat.NotebookNode:
    """A chapter whose third cell raises."""
    return make_notebook(
        ("markdown", "# Gamma chapter", []),
        ("code", "threshold = 1", ["parameters"]),
        ("code", 'x = threshold + 1\nraise ValueError("gamma broke on purpose")', []),
        ("code", "print('never reached')", []),
    )


#: Where the producer and the reader below write the order in which they ran (a line each),
#: relative to the book's root; they run in book/ (jupyter-book's and nbval's folder).
EXECUTION_LOG = "executed-order.txt"


def producer_notebook(name: str = "model_a") -> nbformat.NotebookNode:
    """A model chapter: writes ``results/<name>/metrics.json`` beside ``book/``, as the
    book's model chapters write theirs, and logs that it ran."""
    return make_notebook(
        ("markdown", f"# Producer {name}", []),
        ("code", 'results_dir = "../results"', ["parameters"]),
        (
            "code",
            f"""
            import json
            from pathlib import Path
            with open("../{EXECUTION_LOG}", "a") as log:
                log.write("{name}\\n")
            folder = Path(results_dir) / "{name}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "metrics.json").write_text(json.dumps({{"auc": 0.75}}))
            """,
            [],
        ),
    )


def reader_notebook(reads: str = "model_a") -> nbformat.NotebookNode:
    """A comparison chapter: stops at its first code cell, as the book's do
    (:func:`helpers.results.require_chapters`), unless ``reads`` has written its results."""
    return make_notebook(
        ("markdown", "# Reader", []),
        ("code", 'results_dir = "../results"', ["parameters"]),
        (
            "code",
            f"""
            import json
            from pathlib import Path
            from helpers import results
            with open("../{EXECUTION_LOG}", "a") as log:
                log.write("reader\\n")
            results.require_chapters(results_dir, ["{reads}"])
            auc = json.loads((Path(results_dir) / "{reads}" / "metrics.json").read_text())["auc"]
            print(f"{reads} auc={{auc}}")
            """,
            [],
        ),
    )


def make_fixture_book(root: Path, notebooks: dict | None = None, toc: str = TOC) -> dict:
    """Lay out a small book like the repository's under ``root``.

    Returns the keyword arguments of :func:`helpers.book.build.build_book` (less the output).
    """
    source = root / "book"
    source.mkdir(parents=True)
    shutil.copyfile(REPO / "_config.yml", root / "_config.yml")
    if (REPO / "book" / "_static").is_dir():  # the book's CSS, which jupyter-book adds to each page
        shutil.copytree(REPO / "book" / "_static", source / "_static")
    (root / "_toc.yml").write_text(toc)
    # Like the repository: jupyter-book build book finds the toc inside book/.
    (source / "_toc.yml").symlink_to(Path("..") / "_toc.yml")
    (source / "intro.md").write_text(INTRO)
    notebooks = (
        notebooks
        if notebooks is not None
        else {
            "alpha": alpha_notebook(),
            "beta": beta_notebook(),
        }
    )
    for name, nb in notebooks.items():
        nbformat.write(nb, str(source / f"{name}.ipynb"))
    return {
        "source_dir": source,
        "config_path": root / "_config.yml",
        "toc_path": root / "_toc.yml",
    }


def file_hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def cli_arguments(layout: dict, output: Path, *args: str) -> list[str]:
    """The arguments of ``python -m helpers.book`` for a fixture book (no program name)."""
    return [
        "--source-dir",
        str(layout["source_dir"]),
        "--config",
        str(layout["config_path"]),
        "--toc",
        str(layout["toc_path"]),
        "--output-dir",
        str(output),
        *args,
    ]


def run_cli(layout: dict, output: Path, *args: str) -> subprocess.CompletedProcess:
    """Run ``python -m helpers.book`` on a fixture book, as a user would."""
    command = [sys.executable, "-m", "helpers.book", *cli_arguments(layout, output, *args)]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)


def build_fixture_book_with_cli(root: Path) -> dict:
    """One full build of the fixture book under ``root`` through the command line, with -p.

    Run once per session (``cli_built_fixture_book`` in conftest.py) for test_book.py's
    checks of the HTML and for test_browser.py, which opens the same pages in Chromium.
    """
    layout = make_fixture_book(root)
    before = file_hashes(layout["source_dir"])
    # --data-dir relative to the folder the command is typed in (the repository here).
    result = run_cli(
        layout, root, "-p", "n_points", "7", "-p", "n_rows", "4", "--data-dir", "data/chest_xray"
    )
    return {
        "root": root,
        "layout": layout,
        "before": before,
        "result": result,
        "html": root / "_build" / "html",
    }
