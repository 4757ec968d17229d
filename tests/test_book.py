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
import time
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
        assert re.fullmatch(rf"{name}\s+executed\s+\d+\.\d s  \(never executed\)", matching[0]), matching
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
    assert "stale (never executed)" in next(l for l in lines if l.startswith("alpha"))
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


# ---------------------------------------------------------------------------------------
# Re-using unchanged chapters, and saying which are stale
# ---------------------------------------------------------------------------------------


def counting_notebook(name: str, uses: list[str] | None = None) -> nbformat.NotebookNode:
    """A chapter that appends a line to runs.txt (beside it) each time it executes."""
    nb = _notebook(
        ("markdown", f"# {name.title()} chapter", []),
        ("code", "n_points = 3", ["parameters"]),
        ("code", f"with open('runs.txt', 'a') as f:\n    f.write('{name}\\n')\nprint(n_points)", []),
    )
    if uses:
        nb.metadata["book"] = {"uses_results_of": uses}
    return nb


def _runs(layout) -> list[str]:
    runs = layout["source_dir"] / "runs.txt"
    return runs.read_text().split() if runs.exists() else []


def _lines(out: io.StringIO) -> dict[str, str]:
    return {line.split()[0]: line for line in out.getvalue().splitlines() if line.strip()}


@pytest.fixture
def counting_book(tmp_path):
    notebooks = {"alpha": counting_notebook("alpha"), "beta": counting_notebook("beta", uses=["alpha"])}
    layout = make_fixture_book(tmp_path, notebooks)
    code = tmp_path / "code"
    (code / "pkg").mkdir(parents=True)
    (code / "pkg" / "module.py").write_text("VALUE = 1\n")
    return layout, code, tmp_path


def _build(counting_book, **options):
    layout, code, root = counting_book
    out = io.StringIO()
    book.build_book(**layout, output_dir=root, code_dir=code, out=out, **options)
    return _lines(out)


def test_a_second_build_with_nothing_changed_reuses_every_chapter(counting_book):
    layout = counting_book[0]
    _build(counting_book)
    assert _runs(layout) == ["alpha", "beta"]
    lines = _build(counting_book)
    assert _runs(layout) == ["alpha", "beta"]  # nothing executed again
    for name in ("alpha", "beta"):
        assert re.match(rf"{name}\s+re-used\s+unchanged since \d{{4}}-", lines[name]), lines[name]
    assert "rendered" in lines["(rendering)"]
    assert (counting_book[2] / "_build" / "html" / "beta.html").is_file()


def test_force_executes_everything(counting_book):
    _build(counting_book)
    lines = _build(counting_book, force=True)
    assert _runs(counting_book[0]) == ["alpha", "beta"] * 2
    assert "(--force)" in lines["alpha"]


@pytest.mark.parametrize(
    "change, reruns, reason",
    [
        ("notebook", ["beta"], "notebook changed"),
        ("upstream", ["alpha", "beta"], "alpha runs again"),
        ("parameters", ["alpha", "beta"], "parameters changed"),
        ("code", ["alpha", "beta"], "helpers code changed"),
        ("environment", ["alpha", "beta"], "environment changed"),
    ],
)
def test_a_chapter_runs_again_when_one_of_its_inputs_changed(counting_book, monkeypatch, change, reruns, reason):
    layout, code, _ = counting_book
    _build(counting_book)
    options = {}
    if change == "notebook":
        nb = counting_notebook("beta", uses=["alpha"])
        nb.cells[0].source += "\n\nA new sentence."
        nbformat.write(nb, layout["source_dir"] / "beta.ipynb")
    elif change == "upstream":
        nb = counting_notebook("alpha")
        nb.cells[0].source += "\n\nA new sentence."
        nbformat.write(nb, layout["source_dir"] / "alpha.ipynb")
    elif change == "parameters":
        options["params"] = {"n_points": 4}
    elif change == "code":
        (code / "pkg" / "module.py").write_text("VALUE = 2\n")
    else:
        monkeypatch.setenv("BOOK_EPOCHS", "1")
    lines = _build(counting_book, **options)
    assert _runs(layout)[2:] == reruns
    last = reruns[-1]
    assert reason in lines[last], lines[last]


def test_dropping_a_parameter_goes_back_to_the_defaults_and_runs_again(counting_book):
    _build(counting_book, params={"n_points": 4})
    lines = _build(counting_book)  # no -p: the notebook's default n_points = 3
    assert _runs(counting_book[0]) == ["alpha", "beta"] * 2
    assert "parameters changed" in lines["alpha"]


def test_changed_data_makes_chapters_that_read_it_stale(tmp_path, make_xrays):
    folder = make_xrays()
    nb = counting_notebook("alpha")
    nb.cells[1].source = f"n_points = 3\ndata_dir = {str(folder.root)!r}"
    layout = make_fixture_book(tmp_path, {"alpha": nb, "beta": counting_notebook("beta")})
    out = io.StringIO()
    book.build_book(**layout, output_dir=tmp_path, out=out)
    extra = folder.root / "test" / "NORMAL" / "IM-0777-0001.jpeg"
    shutil.copy(folder.root / folder.images_of("test")[0], extra)
    out = io.StringIO()
    decisions = book.book_status(layout["source_dir"], tmp_path, layout["toc_path"], out=out)
    assert decisions["alpha"].action == "execute" and decisions["beta"].action == "reuse"
    assert re.search(r"alpha\s+stale\s+\(data changed\)", out.getvalue())
    assert re.search(r"beta\s+up to date", out.getvalue())


def test_changed_results_file_makes_the_chapter_stale(counting_book, tmp_path):
    layout, code, root = counting_book
    nb = counting_notebook("alpha")
    results = root / "results"
    nb.cells[1].source = f"n_points = 3\nresults_dir = {str(results)!r}"
    nb.cells.append(nbformat.v4.new_code_cell(
        "import os\nos.makedirs(results_dir + '/alpha', exist_ok=True)\n"
        "open(results_dir + '/alpha/metrics.json', 'w').write('{}')"
    ))
    nbformat.write(nb, layout["source_dir"] / "alpha.ipynb")
    _build(counting_book)
    (results / "alpha" / "metrics.json").write_text('{"edited": true}')
    lines = _build(counting_book)
    assert "results file" in lines["alpha"] and "changed or is missing" in lines["alpha"]
    assert "alpha runs again" in lines["beta"]


def test_an_interrupted_build_is_reported_and_its_chapter_runs_again(tmp_path):
    sleeper = _notebook(
        ("markdown", "# Slow chapter", []),
        ("code", "seconds = 120", ["parameters"]),
        ("code", "import time\nprint('STARTED', flush=True)\ntime.sleep(seconds)", []),
    )
    layout = make_fixture_book(tmp_path, {"alpha": alpha_notebook(), "beta": sleeper})
    process = subprocess.Popen(
        [sys.executable, "-m", "helpers.book", "--source-dir", str(layout["source_dir"]),
         "--output-dir", str(tmp_path), "--config", str(layout["config_path"]),
         "--toc", str(layout["toc_path"])],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO,
    )
    try:
        for line in process.stdout:
            if line.startswith("alpha"):
                break  # alpha finished; beta is running now
        state = tmp_path / "_build" / book.STATE_FILE
        for _ in range(300):
            if '"running"' in state.read_text():
                break
            time.sleep(0.1)
        process.kill()
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    status = subprocess.run(
        [sys.executable, "-m", "helpers.book", "--status", "--source-dir", str(layout["source_dir"]),
         "--output-dir", str(tmp_path), "--toc", str(layout["toc_path"])],
        capture_output=True, text=True, cwd=REPO,
    )
    assert status.returncode == 0, status.stderr
    assert re.search(r"alpha\s+up to date", status.stdout), status.stdout
    assert re.search(r"beta\s+stale\s+\(its run of .* was interrupted\)", status.stdout), status.stdout
