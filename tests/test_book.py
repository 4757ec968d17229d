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

import yaml

from helpers import config
from helpers.book import build, left_out_refs, plan, render, staleness, toc

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

    Returns the keyword arguments of :func:`helpers.book.build.build_book` (less the output).
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
    # --data-dir relative to the folder the command is typed in (the repository here).
    result = run_cli(layout, root, "-p", "n_points", "7", "-p", "n_rows", "4", "--data-dir", "data/chest_xray")
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
    # A path inside the repository is passed repository-relative.
    assert alpha.metadata["papermill"]["parameters"] == {"n_points": 7, "data_dir": "data/chest_xray"}
    assert beta.metadata["papermill"]["parameters"] == {"n_rows": 4}


def test_rendered_pages_show_repository_relative_paths(built):
    page = (built["html"] / "alpha.html").read_text()
    assert "data/chest_xray" in page  # the injected-parameters cell
    assert str(REPO) not in page  # never the build machine's folders


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
    index = build.build_book(**layout, output_dir=tmp_path, only=["beta"], out=out)
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
    build.build_book(**layout, output_dir=tmp_path, only=["alpha.ipynb"], out=out)
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
    assert plan.parse_value("3") == 3
    assert plan.parse_value("0.5") == 0.5
    assert plan.parse_value("True") is True
    assert plan.parse_value("none") is None
    assert plan.parse_value("rgb") == "rgb"


def test_check_value_types_and_rules():
    epochs = plan.Parameter("epochs", "10", "int")
    assert plan.check_declared_value(epochs, 3) == (3, None)
    assert plan.check_declared_value(epochs, 0)[1] == "a whole number of at least 1"
    assert plan.check_declared_value(epochs, 2.5)[1] == "a whole number"
    rate = plan.Parameter("learning_rate", "1e-3", "float")
    assert plan.check_declared_value(rate, 1) == (1.0, None)
    name = plan.Parameter("run_name", "'x'", "str")
    assert plan.check_declared_value(name, 2024) == ("2024", None)
    unknown = plan.Parameter("data_dir", "config.DEFAULT_DATA_DIR", "None")
    assert plan.check_declared_value(unknown, str(REPO))[1] is None


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
    chapters = toc.find_chapters(REPO / "book", REPO / "_toc.yml")
    assert chapters[0].name == "intro"
    config = yaml.safe_load((REPO / "_config.yml").read_text())
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
    build.build_book(**layout, output_dir=root, code_dir=code, out=out, **options)
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
    build.build_book(**layout, output_dir=tmp_path, out=out)
    extra = folder.root / "test" / "NORMAL" / "IM-0777-0001.jpeg"
    shutil.copy(folder.root / folder.images_of("test")[0], extra)
    out = io.StringIO()
    decisions = build.book_status(layout["source_dir"], tmp_path, layout["toc_path"], out=out)
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
    # A code folder of its own: edits to helpers/ while the test runs must not count.
    code = tmp_path / "code"
    code.mkdir()
    (code / "module.py").write_text("VALUE = 1\n")
    script = (
        "import sys; from pathlib import Path; from helpers.book.build import build_book; "
        "s, o, c, t, code = map(Path, sys.argv[1:]); "
        "build_book(source_dir=s, output_dir=o, config_path=c, toc_path=t, code_dir=code)"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(layout["source_dir"]), str(tmp_path),
         str(layout["config_path"]), str(layout["toc_path"]), str(code)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO,
    )
    try:
        for line in process.stdout:
            if line.startswith("alpha"):
                break  # alpha finished; beta is running now
        state = tmp_path / "_build" / staleness.STATE_FILE
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
    assert re.search(r"beta\s+stale\s+\(its run of .* was interrupted\)", status.stdout), status.stdout
    out = io.StringIO()
    decisions = build.book_status(layout["source_dir"], tmp_path, layout["toc_path"], out=out, code_dir=code)
    assert re.search(r"alpha\s+up to date", out.getvalue()), out.getvalue()
    assert re.search(r"beta\s+stale\s+\(its run of .* was interrupted\)", out.getvalue()), out.getvalue()
    assert decisions["beta"].action == "execute"  # the next build runs it again


def test_editing_one_model_notebook_runs_only_it_and_the_chapters_that_read_its_results(tmp_path):
    notebooks = {
        "model_1": counting_notebook("model_1"),
        "model_2": counting_notebook("model_2"),
        "comparison": counting_notebook("comparison", uses=["model_1", "model_2"]),
        "original": counting_notebook("original", uses=["model_2"]),
    }
    chapters_toc = "".join(f"  - file: {name}\n" for name in notebooks)
    layout = make_fixture_book(tmp_path, notebooks, "format: jb-book\nroot: intro\nchapters:\n" + chapters_toc)
    code = tmp_path / "code"  # not helpers/, which may change while the test runs
    code.mkdir()
    (code / "module.py").write_text("VALUE = 1\n")
    build.build_book(**layout, output_dir=tmp_path, out=io.StringIO(), code_dir=code)
    edited = counting_notebook("model_1")
    edited.cells[0].source += "\n\nA sentence added to model 1."
    nbformat.write(edited, layout["source_dir"] / "model_1.ipynb")
    out = io.StringIO()
    build.build_book(**layout, output_dir=tmp_path, out=out, code_dir=code)
    lines = _lines(out)
    executed = sorted(name for name, line in lines.items() if re.match(rf"{name}\s+executed\s", line))
    assert executed == ["comparison", "model_1"], out.getvalue()
    assert "(notebook changed)" in lines["model_1"]
    assert "(model_1 runs again)" in lines["comparison"]
    for name in ("model_2", "original"):
        assert re.match(rf"{name}\s+re-used\s+unchanged since", lines[name]), lines[name]
    assert _runs(layout) == ["model_1", "model_2", "comparison", "original", "model_1", "comparison"]


# ---------------------------------------------------------------------------------------
# A build of some chapters renders what it has; a failed render keeps the last good book
# ---------------------------------------------------------------------------------------


def labelled_notebook(name: str) -> nbformat.NotebookNode:
    """A chapter with a reference target, writing ``<results_dir>/<name>/metrics.json``."""
    return _notebook(
        ("markdown", f"({name}-results)=\n# {name.title()} chapter\n\nIts results.", []),
        ("code", "results_dir = None", ["parameters"]),
        (
            "code",
            f"""
            import os
            folder = os.path.join(results_dir or 'results-default', '{name}')
            os.makedirs(folder, exist_ok=True)
            open(os.path.join(folder, 'metrics.json'), 'w').write('{{}}')
            print('{name} wrote', folder)
            """,
            [],
        ),
    )


CHECKLIST = """\
# Checklist

Alpha's results: {ref}`alpha-results`. Beta's results: {ref}`beta-results`.
The whole alpha chapter: {doc}`alpha`.
"""
CHECKLIST_TOC = TOC + "  - file: checklist\n"


def _checklist_book(root: Path) -> dict:
    layout = make_fixture_book(
        root, {"alpha": labelled_notebook("alpha"), "beta": labelled_notebook("beta")}, CHECKLIST_TOC
    )
    (layout["source_dir"] / "checklist.md").write_text(CHECKLIST)
    return layout


def test_only_on_a_fresh_book_renders_what_it_has(tmp_path):
    """Like `--only model_1` on a fresh clone: the checklist refers to chapters never run."""
    layout = _checklist_book(tmp_path)
    results = tmp_path / "other-results"
    result = run_cli(layout, tmp_path, "--only", "beta", "--results-dir", str(results))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert re.match(r"alpha\s+left out\s+stale \(never executed\)", lines["alpha"]), lines["alpha"]
    assert re.match(r"beta\s+executed\s", lines["beta"])
    assert "(left out: alpha)" in lines["(rendering)"]
    assert (results / "beta" / "metrics.json").is_file()  # the other --results-dir was used
    assert not (results / "alpha").exists()
    executed = nbformat.read(str(tmp_path / "_build" / "executed" / "beta.ipynb"), as_version=4)
    assert executed.metadata["papermill"]["parameters"] == {"results_dir": str(results)}  # outside the repo

    html = tmp_path / "_build" / "html"
    assert not (html / "alpha.html").exists()
    page = (html / "checklist.html").read_text()
    assert 'href="beta.html#beta-results"' in page  # a chapter of this build: a link
    assert "alpha-results (not in this build)" in page  # a chapter left out: plain text
    assert re.search(r"alpha\S* \(not in this build\)", page.replace("</span>", ""))
    assert 'href="alpha.html' not in page
    assert 'class="left-out-reference"' in page


def test_a_render_of_some_chapters_still_fails_on_any_other_broken_reference(tmp_path):
    layout = _checklist_book(tmp_path)
    (layout["source_dir"] / "checklist.md").write_text(CHECKLIST + "\nAnd {ref}`no-such-label`.\n")
    result = run_cli(layout, tmp_path, "--only", "beta")
    assert result.returncode == 1
    assert "no-such-label" in result.stderr
    assert "alpha-results" not in result.stderr  # that one was made plain text


def test_the_full_build_has_no_left_out_references(tmp_path):
    layout = _checklist_book(tmp_path)
    build.build_book(**layout, output_dir=tmp_path, out=io.StringIO())
    page = (tmp_path / "_build" / "html" / "checklist.html").read_text()
    assert 'href="alpha.html#alpha-results"' in page and 'href="beta.html#beta-results"' in page
    assert "not in this build" not in page
    rendered_config = yaml.safe_load((tmp_path / "_build" / "executed" / "_config.yml").read_text())
    assert render.LEFT_OUT_EXTENSION not in str(rendered_config)  # -W stays fully strict


def test_a_failed_render_keeps_the_last_good_book(counting_book):
    layout, _, root = counting_book
    _build(counting_book)
    html = root / "_build" / "html"
    before = _hashes(html)
    (layout["source_dir"] / "intro.md").write_text("# Intro\n\nSee {doc}`missing_chapter`.\n")
    with pytest.raises(render.RenderFailed, match="missing_chapter"):
        _build(counting_book)
    assert _hashes(html) == before  # the last good book, untouched
    leftovers = [p.name for p in (root / "_build").iterdir() if p.name.startswith(".")]
    assert leftovers == [], leftovers


def test_replace_folder_swaps_and_puts_the_old_folder_back_if_the_swap_fails(tmp_path, monkeypatch):
    old, new = tmp_path / "html", tmp_path / "new"
    old.mkdir()
    (old / "index.html").write_text("old")
    new.mkdir()
    (new / "index.html").write_text("new")
    real_rename = os.rename

    def failing_rename(source, destination):
        if Path(source) == new:
            raise OSError("disk gone")
        real_rename(source, destination)

    monkeypatch.setattr(render.os, "rename", failing_rename)
    with pytest.raises(OSError, match="disk gone"):
        render.replace_folder(new, old)
    assert (old / "index.html").read_text() == "old"
    monkeypatch.setattr(render.os, "rename", real_rename)
    render.replace_folder(new, old)
    assert (old / "index.html").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["html"]  # the old copy was deleted


def test_write_render_config_loads_the_extension_only_with_chapters_left_out(tmp_path):
    full = yaml.safe_load(render.write_render_config(REPO / "_config.yml", tmp_path / "full.yml").read_text())
    assert full["execute"]["execute_notebooks"] == "off"
    assert full["sphinx"] == yaml.safe_load((REPO / "_config.yml").read_text())["sphinx"]
    partial = yaml.safe_load(
        render.write_render_config(REPO / "_config.yml", tmp_path / "partial.yml", ["b", "a"], ["data"]).read_text()
    )
    sphinx_config = partial["sphinx"]["config"]
    assert sphinx_config["extensions"][-1] == render.LEFT_OUT_EXTENSION
    assert sphinx_config["extensions"][:-1] == full["sphinx"]["config"]["extensions"]
    assert sphinx_config["book_left_out_labels"] == ["a", "b"]
    assert sphinx_config["book_left_out_docs"] == ["data"]


@pytest.mark.parametrize(
    "refdoc, target, expected",
    [("checklist", "alpha", "alpha"), ("part/page", "other", "part/other"),
     ("part/page", "../model_1.ipynb", "model_1"), ("part/page", "/data", "data")],
)  # fmt: skip
def test_doc_targets_are_resolved_from_the_referring_page(refdoc, target, expected):
    assert left_out_refs.target_docname(refdoc, target) == expected


def test_every_reference_of_the_real_pages_has_a_target_the_runner_can_find():
    """So that `--only model_1` can turn the checklist's references to other chapters into text."""
    chapters = toc.find_chapters(REPO / "book", REPO / "_toc.yml")
    defined = {c.name: toc.chapter_targets(c) for c in chapters}
    for chapter in chapters:
        for target in re.findall(r"\{(?:ref|numref)\}`(?:[^`<]*<)?([^`>]+)>?`", toc.markdown_text(chapter)):
            owners = [name for name, labels in defined.items() if target.lower() in labels]
            assert owners, f"{chapter.name} refers to {target}, which no chapter defines"


def test_toc_without_removes_the_named_entries_only():
    parsed = yaml.safe_load(CHECKLIST_TOC)
    trimmed = toc.toc_without(parsed, {"alpha"})
    assert [e["file"] for e in trimmed["chapters"]] == ["beta", "checklist"]
    assert [e["file"] for e in parsed["chapters"]] == ["alpha", "beta", "checklist"]  # unchanged


# ---------------------------------------------------------------------------------------
# Parameters of a build: one set of rules (helpers.parameters), paths relative to the repo
# ---------------------------------------------------------------------------------------


def _declaring(tmp_path: Path, cell: str) -> list[toc.Chapter]:
    nb = _notebook(("markdown", "# Chapter", []), ("code", cell, ["parameters"]))
    layout = make_fixture_book(tmp_path, {"alpha": nb}, "format: jb-book\nroot: intro\nchapters:\n  - file: alpha\n")
    return toc.find_chapters(layout["source_dir"], layout["toc_path"])


def test_paths_inside_the_repository_are_passed_relative_and_others_absolute(tmp_path):
    chapters = _declaring(tmp_path, "data_dir = None\nresults_dir = None")
    inside = plan.plan_build(chapters, params={"data_dir": str(config.DEFAULT_DATA_DIR),
                                               "results_dir": str(REPO / "results" / "ci")}, environ={})
    assert inside.parameters["alpha"] == {"data_dir": "data/chest_xray", "results_dir": "results/ci"}
    outside = plan.plan_build(chapters, params={"results_dir": str(tmp_path / "out")}, environ={})
    assert outside.parameters["alpha"] == {"results_dir": str(tmp_path / "out")}
    relative = plan.plan_build(chapters, params={"data_dir": "data/chest_xray"}, environ={})
    assert relative.parameters["alpha"] == {"data_dir": "data/chest_xray"}  # relative to the repo


@pytest.mark.parametrize(
    "params, environ, message",
    [
        ({"epochs": 0}, {}, "epochs = 0 (-p epochs): expected a whole number of at least 1"),
        ({"base_weights": "none"}, {}, "base_weights = 'none' (-p base_weights): expected 'imagenet', 'random'"),
        ({"on_leak": "maybe"}, {}, "on_leak = 'maybe' (-p on_leak): expected one of 'warn', 'stop', 'ignore'"),
        ({}, {"BOOK_EPOCHS": "0"}, "epochs = 0 (environment variable BOOK_EPOCHS): expected a whole number of at least 1"),
        ({}, {"BOOK_EPOCSH": "1"}, "BOOK_EPOCSH: unknown environment variable; the overrides are BOOK_DATA_DIR"),
    ],
)  # fmt: skip
def test_the_runner_checks_values_and_environment_with_the_book_rules(tmp_path, params, environ, message):
    chapters = _declaring(tmp_path, 'epochs = 10\nbase_weights = "imagenet"\non_leak = "warn"')
    with pytest.raises(plan.ParameterError) as caught:
        plan.plan_build(chapters, params=params, environ=environ)
    assert message in str(caught.value)
    assert "Allowed parameters:" in str(caught.value)


def test_an_explicit_value_makes_the_environment_variable_irrelevant_to_the_runner(tmp_path):
    chapters = _declaring(tmp_path, "epochs = 10")
    planned = plan.plan_build(chapters, params={"epochs": 2}, environ={"BOOK_EPOCHS": "0"})
    assert planned.parameters["alpha"] == {"epochs": 2}


# ---------------------------------------------------------------------------------------
# The package's layout
# ---------------------------------------------------------------------------------------

BOOK_PACKAGE = REPO / "helpers" / "book"


def _package_imports(path: Path) -> set[str]:
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                names.add(f"helpers.book.{node.module}" if node.module else "helpers.book")
            elif node.module:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_the_runner_is_a_package_of_small_modules_without_import_circles():
    modules = sorted(BOOK_PACKAGE.glob("*.py"))
    assert {p.stem for p in modules} >= {"toc", "plan", "staleness", "execute", "render", "cli", "__main__"}
    assert not (REPO / "helpers" / "book.py").exists()
    graph = {}
    for path in modules:
        text = path.read_text()
        assert len(text.splitlines()) <= 600, path.name
        assert text.lstrip().startswith('"""'), f"{path.name} has no module docstring"
        imports = _package_imports(path)
        for retired in ("helpers.chapter", "helpers.models", "helpers.train", "helpers.book.book"):
            assert not any(i == retired or i.startswith(retired + ".") for i in imports), (path.name, retired)
        graph[path.stem] = {i.split(".")[2] for i in imports if i.startswith("helpers.book.")} - {path.stem}
    # __init__ and __main__ sit on top; every other module must not reach itself.
    def reaches(start, goal, seen=()):
        return any(n == goal or (n not in seen and reaches(n, goal, (*seen, n)))
                   for n in graph.get(start, ()) if n not in ("__init__", "__main__"))
    for name in graph:
        if name not in ("__init__", "__main__"):
            assert not reaches(name, name), f"import circle through helpers.book.{name}"


def test_the_real_checklist_renders_with_every_notebook_left_out(tmp_path):
    """The pages of a fresh `--only` build: the real intro and checklist, no chapter executed."""
    chapters = toc.find_chapters(REPO / "book", REPO / "_toc.yml")
    notebooks = [c for c in chapters if c.is_notebook]
    executed = tmp_path / "executed"
    executed.mkdir()
    for chapter in chapters:
        if not chapter.is_notebook:
            shutil.copyfile(chapter.path, executed / chapter.path.name)
    trimmed = toc.toc_without(yaml.safe_load((REPO / "_toc.yml").read_text()), {c.name for c in notebooks})
    (tmp_path / "_toc.yml").write_text(yaml.safe_dump(trimmed, sort_keys=False))
    labels = set().union(*(toc.chapter_targets(c) for c in notebooks))
    html = render.render(
        executed, tmp_path, REPO / "_config.yml", tmp_path / "_toc.yml",
        left_out_labels=labels, left_out_docs={c.name for c in notebooks},
    )  # fmt: skip
    page = (html / "claim_checklist.html").read_text()
    assert "data-counts (not in this build)" in page and "model-6-gap (not in this build)" in page
    assert 'href="model_1.html' not in page
