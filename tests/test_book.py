"""Tests of the book runner (``python -m helpers.book``) and the book's configuration.

Each test builds a small book from fixture notebooks in a temporary folder laid out like
the repository (``_config.yml`` copied from the real one, ``_toc.yml``, ``book/``), so
that the real configuration is what is tested. No TensorFlow: the notebooks draw a
matplotlib figure and show a pandas table, which is what the real chapters render.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

from helpers import book

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


def _notebook(*cells: tuple[str, str, list[str]]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for kind, source, tags in cells:
        make = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
        cell = make(textwrap.dedent(source).strip())
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    return nb


def alpha_notebook() -> nbformat.NotebookNode:
    """A chapter with parameters, a matplotlib figure and stderr output."""
    return _notebook(
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
    )


def beta_notebook() -> nbformat.NotebookNode:
    """A chapter showing a comparison table (a pandas DataFrame) and a figure."""
    return _notebook(
        ("markdown", "# Beta chapter\n\nThe comparison table.", []),
        ("code", "n_rows = 3", ["parameters"]),
        (
            "code",
            """
            import pandas as pd
            table = pd.DataFrame({"model": [f"model_{i}" for i in range(n_rows)],
                                  "auc": [0.9 - 0.01 * i for i in range(n_rows)]})
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
    return _notebook(
        ("markdown", "# Gamma chapter", []),
        ("code", "threshold = 1", ["parameters"]),
        ("code", 'x = threshold + 1\nraise ValueError("gamma broke on purpose")', []),
        ("code", "print('never reached')", []),
    )


def make_fixture_book(root: Path, notebooks: dict | None = None, toc: str = TOC) -> dict:
    """Lay out a small book like the repository's under ``root``.

    Returns the keyword arguments of :func:`helpers.book.build_book` (less the output).
    """
    source = root / "book"
    source.mkdir(parents=True)
    shutil.copyfile(REPO / "_config.yml", root / "_config.yml")
    (root / "_toc.yml").write_text(toc)
    # Like the repository: jupyter-book build book finds the toc inside book/.
    (source / "_toc.yml").symlink_to(Path("..") / "_toc.yml")
    (source / "intro.md").write_text(INTRO)
    notebooks = notebooks if notebooks is not None else {
        "alpha": alpha_notebook(),
        "beta": beta_notebook(),
    }
    for name, nb in notebooks.items():
        nbformat.write(nb, str(source / f"{name}.ipynb"))
    return {"source_dir": source, "config_path": root / "_config.yml", "toc_path": root / "_toc.yml"}


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def run_cli(layout: dict, output: Path, *args: str) -> subprocess.CompletedProcess:
    """Run ``python -m helpers.book`` on a fixture book, as a user would."""
    command = [
        sys.executable, "-m", "helpers.book",
        "--source-dir", str(layout["source_dir"]),
        "--config", str(layout["config_path"]),
        "--toc", str(layout["toc_path"]),
        "--output-dir", str(output),
        *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One full build of the fixture book through the command line, with -p."""
    root = tmp_path_factory.mktemp("fixture")
    layout = make_fixture_book(root)
    before = _hashes(layout["source_dir"])
    result = run_cli(layout, root, "-p", "n_points", "7", "-p", "n_rows", "4")
    return {"root": root, "layout": layout, "before": before, "result": result,
            "html": root / "_build" / "html"}  # fmt: skip


def test_build_succeeds_with_one_progress_line_per_notebook(built):
    result = built["result"]
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for name in ("alpha", "beta"):
        matching = [line for line in lines if line.split()[0] == name]
        assert len(matching) == 1, lines
        assert re.fullmatch(rf"{name}\s+executed\s+\d+\.\d s", matching[0]), matching
    assert (built["html"] / "index.html").is_file()


def test_every_chapter_has_html_with_its_images(built):
    html = built["html"]
    for name in ("intro", "alpha", "beta"):
        assert (html / f"{name}.html").is_file(), name
    for name in ("alpha", "beta"):
        page = (html / f"{name}.html").read_text()
        assert "unpkg.com" not in page and "THEBE_JS_URL" not in page  # see _config.yml
        images = re.findall(r'<img[^>]*\bsrc="([^"]+)"', page)
        assert images, f"{name}.html has no <img>"
        for src in images:
            assert not src.startswith(("http:", "https:", "//")), src
            assert (html / src).is_file() and (html / src).stat().st_size > 0, src


def test_comparison_table_is_an_html_table(built):
    page = (built["html"] / "beta.html").read_text()
    assert re.search(r"<table[^>]*class=\"[^\"]*dataframe", page), "no pandas HTML table"
    assert page.count("model_") >= 4  # n_rows=4 reached the notebook


def test_parameters_reach_only_the_notebooks_that_declare_them(built):
    page = (built["html"] / "alpha.html").read_text()
    assert "n_points=7 label=alpha" in page
    executed = built["root"] / "_build" / "executed"
    alpha = nbformat.read(str(executed / "alpha.ipynb"), as_version=4)
    beta = nbformat.read(str(executed / "beta.ipynb"), as_version=4)
    assert alpha.metadata["papermill"]["parameters"] == {"n_points": 7}
    assert beta.metadata["papermill"]["parameters"] == {"n_rows": 4}


def test_navigation_lists_every_chapter(built):
    assert "intro.html" in (built["html"] / "index.html").read_text()  # a redirect
    page = (built["html"] / "intro.html").read_text()
    for name in ("alpha", "beta"):
        assert f'href="{name}.html"' in page, name


def test_stderr_never_reaches_the_html(built):
    for page in built["html"].rglob("*.html"):
        assert STDERR_MARKER not in page.read_text(), page
    # It was printed, though: the executed notebook keeps it.
    executed = (built["root"] / "_build" / "executed" / "alpha.ipynb").read_text()
    assert STDERR_MARKER in executed


def test_source_notebooks_are_unchanged(built):
    assert _hashes(built["layout"]["source_dir"]) == built["before"]


def test_only_runs_the_named_chapter(tmp_path):
    layout = make_fixture_book(tmp_path)
    out = io.StringIO()
    index = book.build_book(**layout, output_dir=tmp_path, only=["beta"], out=out)
    lines = out.getvalue().splitlines()
    assert re.match(r"beta\s+executed\s", next(l for l in lines if l.startswith("beta")))
    assert "not executed" in next(l for l in lines if l.startswith("alpha"))
    assert not any(re.match(r"alpha\s+executed", l) for l in lines)
    # Never executed, alpha is left out (its glued numbers would be broken references).
    assert "left out" in next(l for l in lines if l.startswith("alpha"))
    assert not (index.parent / "alpha.html").exists()
    assert (index.parent / "beta.html").is_file()

    # A second run with --only alpha keeps beta's executed copy (its source is unchanged).
    out = io.StringIO()
    book.build_book(**layout, output_dir=tmp_path, only=["alpha.ipynb"], out=out)
    beta_line = next(l for l in out.getvalue().splitlines() if l.startswith("beta"))
    assert "kept" in beta_line
    assert "<table" in (index.parent / "beta.html").read_text()


def test_failing_notebook_stops_the_build_naming_notebook_and_cell(tmp_path):
    toc = TOC + "  - file: gamma\n"
    notebooks = {"alpha": alpha_notebook(), "beta": beta_notebook(), "gamma": failing_notebook()}
    layout = make_fixture_book(tmp_path, notebooks, toc)
    result = run_cli(layout, tmp_path, "--only", "gamma")
    assert result.returncode == 1
    message = result.stderr
    assert "gamma" in message and "failed" in message
    assert "cell 3 of 4" in message  # numbered as in the source, not the injected copy
    assert 'raise ValueError("gamma broke on purpose")' in message
    assert "ValueError: gamma broke on purpose" in message
    assert re.search(r"gamma\s+FAILED", result.stdout)
    assert not (tmp_path / "_build" / "html").exists()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["-p", "no_such_name", "1"], "unknown parameter no_such_name"),
        (["-p", "n_points", "many"], "n_points = 'many' (-p n_points): expected a whole number"),
        (["--data-dir", "/no/such/folder"], "expected an existing folder"),
        (["--only", "nope"], "no notebook chapter named nope"),
        (["--only", "beta", "-p", "n_points", "3"], "unknown parameter n_points"),
    ],
)
def test_bad_arguments_are_rejected_before_anything_runs(tmp_path, args, expected):
    layout = make_fixture_book(tmp_path)
    result = run_cli(layout, tmp_path, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stderr
    if "unknown parameter" in expected or "expected" in expected:
        assert "Allowed parameters:" in result.stderr
        assert "n_rows" in result.stderr or "n_points" in result.stderr
    assert not (tmp_path / "_build").exists(), "something ran"


def test_rendering_warnings_fail_the_build(tmp_path):
    layout = make_fixture_book(tmp_path, notebooks={})
    (layout["source_dir"] / "intro.md").write_text("# Intro\n\nSee {doc}`missing_chapter`.\n")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\n")
    result = run_cli(layout, tmp_path)
    assert result.returncode == 1
    assert "missing_chapter" in result.stderr and "WARNING" in result.stderr


def test_parse_value_follows_papermill():
    assert book.parse_value("3") == 3
    assert book.parse_value("0.5") == 0.5
    assert book.parse_value("True") is True
    assert book.parse_value("none") is None
    assert book.parse_value("rgb") == "rgb"


def test_check_value_types_and_rules():
    epochs = book.Parameter("epochs", "10", "int")
    assert book.check_value(epochs, 3) == (3, None)
    assert book.check_value(epochs, 0)[1] == "a whole number of at least 1"
    assert book.check_value(epochs, 2.5)[1] == "a whole number"
    rate = book.Parameter("learning_rate", "1e-3", "float")
    assert book.check_value(rate, 1) == (1.0, None)
    name = book.Parameter("run_name", "'x'", "str")
    assert book.check_value(name, 2024) == ("2024", None)
    unknown = book.Parameter("data_dir", "config.DEFAULT_DATA_DIR", "None")
    assert book.check_value(unknown, str(REPO))[1] is None


def test_help_documents_every_option():
    result = subprocess.run(
        [sys.executable, "-m", "helpers.book", "--help"],
        capture_output=True, text=True, cwd=REPO, check=True,
    )  # fmt: skip
    for option in ("--data-dir", "--results-dir", "-p NAME VALUE", "--only", "--list"):
        assert option in result.stdout, option


def test_repository_toc_and_config_are_consistent():
    # jupyter-book build book reads book/_toc.yml; the runner reads _toc.yml: one file.
    assert (REPO / "book" / "_toc.yml").resolve() == (REPO / "_toc.yml").resolve()
    chapters = book.find_chapters(REPO / "book", REPO / "_toc.yml")
    assert chapters[0].name == "intro"
    config = book.yaml.safe_load((REPO / "_config.yml").read_text())
    assert config["execute"]["stderr_output"] == "remove"
    assert config["execute"]["timeout"] >= 1800
    assert config["launch_buttons"]["thebe"] is False


def test_jupyter_book_build_book_works_with_the_plain_config(tmp_path):
    """The card's own command, run from the root: jupyter-book executes the notebooks."""
    make_fixture_book(tmp_path)
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [str(jupyter_book), "build", "book", "-W", "-n", "--keep-going"],
        capture_output=True, text=True, cwd=tmp_path, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    html = tmp_path / "_build" / "html"
    alpha = (html / "alpha.html").read_text()
    assert "n_points=5 label=alpha" in alpha  # the notebook's own defaults
    assert "<img" in alpha and STDERR_MARKER not in alpha
    assert "<table" in (html / "beta.html").read_text()
