"""Tests of the book runner (``python -m helpers.book``): one full build through the command
line, its arguments and parameters, and the book's configuration and package layout.

The books are the fixture book of tests/fixture_book.py, laid out like the repository
(``_config.yml`` copied from the real one), so that the real configuration is what is
tested. The full build is made once per session (``cli_built_fixture_book``, conftest.py)
and only read here. Successive builds: test_book_rebuilds.py; builds of some chapters and
the render: test_book_left_out.py.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml
from fixture_book import (
    EXECUTION_LOG,
    REPO,
    STDERR_MARKER,
    TOC,
    alpha_notebook,
    beta_notebook,
    cli_arguments,
    failing_notebook,
    file_hashes,
    make_fixture_book,
    make_notebook,
    producer_notebook,
    reader_notebook,
    run_cli,
)

from helpers import config
from helpers.book import build, cli, plan, runtimes, toc


@pytest.fixture
def built(cli_built_fixture_book) -> dict:
    """The fixture book built through the command line (read only)."""
    return cli_built_fixture_book


@pytest.mark.notebook
def test_build_succeeds_with_one_progress_line_per_notebook(built):
    result = built["result"]
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for name in ("alpha", "beta"):
        matching = [line for line in lines if line.split()[0] == name]
        assert len(matching) == 1, lines
        assert re.fullmatch(rf"{name}\s+executed\s+\d+\.\d s  \(never executed\)", matching[0]), (
            matching
        )
        # The kernel's processor time is measured once it has ended: starting Python, IPython
        # and matplotlib alone takes a fraction of a second; two cores at most bound it.
        record = runtimes.read_record(built["html"].parent / "executed" / f"{name}.ipynb")
        assert 0.2 < record["cpu_seconds"] <= 2 * record["seconds"] + 1, record
    assert (built["html"] / "index.html").is_file()


@pytest.mark.notebook
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


@pytest.mark.notebook
def test_comparison_table_is_an_html_table(built):
    page = (built["html"] / "beta.html").read_text()
    assert re.search(r"<table[^>]*class=\"[^\"]*dataframe", page), "no pandas HTML table"
    assert page.count("model_") >= 4  # n_rows=4 reached the notebook


@pytest.mark.notebook
def test_parameters_reach_only_the_notebooks_that_declare_them(built):
    page = (built["html"] / "alpha.html").read_text()
    assert "n_points=7 label=alpha" in page
    executed = built["root"] / "_build" / "executed"
    alpha = nbformat.read(str(executed / "alpha.ipynb"), as_version=4)
    beta = nbformat.read(str(executed / "beta.ipynb"), as_version=4)
    # A path inside the repository is passed repository-relative.
    assert alpha.metadata["papermill"]["parameters"] == {
        "n_points": 7,
        "data_dir": "data/chest_xray",
    }
    assert beta.metadata["papermill"]["parameters"] == {"n_rows": 4}


@pytest.mark.notebook
def test_rendered_pages_show_repository_relative_paths(built):
    page = (built["html"] / "alpha.html").read_text()
    assert "data/chest_xray" in page  # the injected-parameters cell
    assert str(REPO) not in page  # never the build machine's folders


@pytest.mark.notebook
def test_navigation_lists_every_chapter(built):
    assert "intro.html" in (built["html"] / "index.html").read_text()  # a redirect
    page = (built["html"] / "intro.html").read_text()
    for name in ("alpha", "beta"):
        assert f'href="{name}.html"' in page, name


@pytest.mark.notebook
def test_the_run_s_parameters_are_folded_and_printed_lines_are_one_block(built):
    page = (built["html"] / "alpha.html").read_text()
    # The injected-parameters cell, like the source's parameters cell, is folded (hide-cell).
    cells = re.findall(r'<div class="cell ([^"]*)"', page)
    injected = [c for c in cells if "tag_injected-parameters" in c]
    assert injected and all("tag_hide-cell" in c for c in injected), cells
    # Lines printed one message at a time (a training log) render as one block.
    assert "epoch 1/3\nepoch 2/3\nepoch 3/3" in page


@pytest.mark.notebook
def test_stderr_never_reaches_the_html(built):
    for page in built["html"].rglob("*.html"):
        assert STDERR_MARKER not in page.read_text(), page
    # It was printed, though: the executed notebook keeps it.
    executed = (built["root"] / "_build" / "executed" / "alpha.ipynb").read_text()
    assert STDERR_MARKER in executed


@pytest.mark.notebook
def test_source_notebooks_are_unchanged(built):
    assert file_hashes(built["layout"]["source_dir"]) == built["before"]


@pytest.mark.notebook
def test_only_runs_the_named_chapter(tmp_path):
    layout = make_fixture_book(tmp_path)
    out = io.StringIO()
    index = build.build_book(**layout, output_dir=tmp_path, only=["beta"], out=out)
    lines = out.getvalue().splitlines()
    assert re.match(r"beta\s+executed\s", next(item for item in lines if item.startswith("beta")))
    assert "stale (never executed)" in next(item for item in lines if item.startswith("alpha"))
    assert not any(re.match(r"alpha\s+executed", item) for item in lines)
    # Never executed, alpha is left out (its glued numbers would be broken references).
    assert "left out" in next(item for item in lines if item.startswith("alpha"))
    assert not (index.parent / "alpha.html").exists()
    assert (index.parent / "beta.html").is_file()

    # A second run with --only alpha keeps beta's executed copy (its source is unchanged).
    out = io.StringIO()
    build.build_book(**layout, output_dir=tmp_path, only=["alpha.ipynb"], out=out)
    beta_line = next(item for item in out.getvalue().splitlines() if item.startswith("beta"))
    assert "kept" in beta_line
    assert "<table" in (index.parent / "beta.html").read_text()


@pytest.mark.notebook
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
def test_bad_arguments_are_rejected_before_anything_runs(
    tmp_path, args, expected, capsys, monkeypatch
):
    # The command line's main() in this process (a fresh process per case costs seconds);
    # its exit status reaching the shell is checked by the tests that use run_cli.
    layout = make_fixture_book(tmp_path)
    monkeypatch.chdir(REPO)  # where the command is typed: --data-dir is relative to it
    status = cli.main(cli_arguments(layout, tmp_path, *args))
    stdout, stderr = capsys.readouterr()
    assert status == 2, stdout + stderr
    assert expected in stderr
    if "unknown parameter" in expected or "expected" in expected:
        assert "Allowed parameters:" in stderr
        assert "n_rows" in stderr or "n_points" in stderr
    assert not (tmp_path / "_build").exists(), "something ran"


@pytest.mark.notebook
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
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
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


READER_TOC = TOC + "  - file: model_a\n  - file: comparison\n"


def test_in_toc_order_follows_the_toc_and_puts_other_documents_last(tmp_path):
    toc_path = tmp_path / "_toc.yml"
    toc_path.write_text(READER_TOC)
    alphabetical = ["alpha", "beta", "comparison", "intro", "model_a", "scratch"]
    assert toc.in_toc_order(alphabetical, toc_path) == [
        "intro",
        "alpha",
        "beta",
        "model_a",
        "comparison",
        "scratch",
    ]
    # nbval's items: one per cell, each notebook's cells kept in order.
    cells = [("comparison", 1), ("model_a", 1), ("comparison", 2), ("model_a", 2)]
    assert toc.in_toc_order(cells, toc_path, lambda cell: cell[0]) == [
        ("model_a", 1),
        ("model_a", 2),
        ("comparison", 1),
        ("comparison", 2),
    ]


def test_the_config_loads_the_extension_that_sorts_what_sphinx_reads(tmp_path):
    from types import SimpleNamespace

    from helpers.book import toc_order

    extensions = yaml.safe_load((REPO / "_config.yml").read_text())["sphinx"]["config"][
        "extensions"
    ]
    assert "helpers.book.toc_order" in extensions
    (tmp_path / "book").mkdir()
    (tmp_path / "_toc.yml").write_text(READER_TOC)
    for toc_setting in (str(tmp_path / "_toc.yml"), "../_toc.yml"):  # absolute: jupyter-book's
        app = SimpleNamespace(
            srcdir=str(tmp_path / "book"),
            config=SimpleNamespace(external_toc_path=toc_setting),
        )
        docnames = ["alpha", "beta", "comparison", "intro", "model_a"]
        toc_order.sort_into_toc_order(app, None, docnames)  # in place, as Sphinx reads it
        assert docnames == ["intro", "alpha", "beta", "model_a", "comparison"]


@pytest.mark.notebook
def test_jupyter_book_build_book_executes_the_chapters_in_toc_order(tmp_path):
    """The card's own command, run from the root: jupyter-book executes the notebooks itself,
    in _toc.yml's order (helpers.book.toc_order, loaded by the plain _config.yml).

    The toc puts a reader chapter (``comparison``) after the model chapter whose results it
    reads (``model_a``), the reverse of the alphabetical order in which Sphinx would read
    them: without the extension the reader stops at require_chapters and raise_on_error
    fails the build. One real build with execution (seconds) also checks the pages.
    """
    notebooks = {
        "alpha": alpha_notebook(),
        "beta": beta_notebook(),
        "model_a": producer_notebook("model_a"),
        "comparison": reader_notebook("model_a"),
    }
    make_fixture_book(tmp_path, notebooks, READER_TOC)
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [str(jupyter_book), "build", "book", "-W", "-n", "--keep-going"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / EXECUTION_LOG).read_text().split() == ["model_a", "reader"]
    html = tmp_path / "_build" / "html"
    assert "model_a auc=0.75" in (html / "comparison.html").read_text()
    alpha = (html / "alpha.html").read_text()
    assert "n_points=5 label=alpha" in alpha  # the notebook's own defaults
    assert "<img" in alpha and STDERR_MARKER not in alpha
    assert "<table" in (html / "beta.html").read_text()
    # jupyter-book's own cache, beside the HTML (not the runner's _build/executed/).
    assert (tmp_path / "_build" / ".jupyter_cache").is_dir()
    assert not (tmp_path / "_build" / "executed").exists()


# ---------------------------------------------------------------------------------------
# Parameters of a build: one set of rules (helpers.parameters), paths relative to the repo
# ---------------------------------------------------------------------------------------


def _declaring(tmp_path: Path, cell: str) -> list[toc.Chapter]:
    nb = make_notebook(("markdown", "# Chapter", []), ("code", cell, ["parameters"]))
    layout = make_fixture_book(
        tmp_path, {"alpha": nb}, "format: jb-book\nroot: intro\nchapters:\n  - file: alpha\n"
    )
    return toc.find_chapters(layout["source_dir"], layout["toc_path"])


def test_paths_inside_the_repository_are_passed_relative_and_others_absolute(tmp_path):
    chapters = _declaring(tmp_path, "data_dir = None\nresults_dir = None")
    inside = plan.plan_build(
        chapters,
        params={
            "data_dir": str(config.DEFAULT_DATA_DIR),
            "results_dir": str(REPO / "results" / "ci"),
        },
        environ={},
    )
    assert inside.parameters["alpha"] == {
        "data_dir": "data/chest_xray",
        "results_dir": "results/ci",
    }
    outside = plan.plan_build(chapters, params={"results_dir": str(tmp_path / "out")}, environ={})
    assert outside.parameters["alpha"] == {"results_dir": str(tmp_path / "out")}
    relative = plan.plan_build(chapters, params={"data_dir": "data/chest_xray"}, environ={})
    assert relative.parameters["alpha"] == {"data_dir": "data/chest_xray"}  # relative to the repo


@pytest.mark.parametrize(
    "params, environ, message",
    [
        ({"epochs": 0}, {}, "epochs = 0 (-p epochs): expected a whole number of at least 1"),
        (
            {"base_weights": "none"},
            {},
            "base_weights = 'none' (-p base_weights): expected 'imagenet', 'random'",
        ),
        (
            {"on_leak": "maybe"},
            {},
            "on_leak = 'maybe' (-p on_leak): expected one of 'warn', 'stop', 'ignore'",
        ),
        (
            {},
            {"BOOK_EPOCHS": "0"},
            "epochs = 0 (environment variable BOOK_EPOCHS): expected a whole number of at least 1",
        ),
        (
            {},
            {"BOOK_EPOCSH": "1"},
            "BOOK_EPOCSH: unknown environment variable; the overrides are BOOK_DATA_DIR",
        ),
    ],
)
def test_the_runner_checks_values_and_environment_with_the_book_rules(
    tmp_path, params, environ, message
):
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
    assert {p.stem for p in modules} >= {
        "toc",
        "plan",
        "staleness",
        "execute",
        "render",
        "cli",
        "__main__",
    }
    assert not (REPO / "helpers" / "book.py").exists()
    graph = {}
    for path in modules:
        text = path.read_text()
        assert len(text.splitlines()) <= 600, path.name
        assert text.lstrip().startswith('"""'), f"{path.name} has no module docstring"
        imports = _package_imports(path)
        for retired in ("helpers.chapter", "helpers.models", "helpers.train", "helpers.book.book"):
            assert not any(i == retired or i.startswith(retired + ".") for i in imports), (
                path.name,
                retired,
            )
        graph[path.stem] = {i.split(".")[2] for i in imports if i.startswith("helpers.book.")} - {
            path.stem
        }

    # __init__ and __main__ sit on top; every other module must not reach itself.
    def reaches(start, goal, seen=()):
        return any(
            n == goal or (n not in seen and reaches(n, goal, (*seen, n)))
            for n in graph.get(start, ())
            if n not in ("__init__", "__main__")
        )

    for name in graph:
        if name not in ("__init__", "__main__"):
            assert not reaches(name, name), f"import circle through helpers.book.{name}"


def test_a_kernel_gets_minutes_to_start_on_a_busy_machine(tmp_path, monkeypatch):
    # papermill's default of 60 s once failed a tiny notebook during make test (both cores
    # busy with two TensorFlow workers and the unit tests).
    import papermill

    from helpers.book import execute
    from helpers.chapters import Chapter

    given = {}

    def papermill_run(source, output, **options):
        given.update(options)
        Path(output).write_text(Path(source).read_text())

    monkeypatch.setattr(papermill, "execute_notebook", papermill_run)
    source = tmp_path / "book"
    source.mkdir()
    nbformat.write(nbformat.v4.new_notebook(), source / "alpha.ipynb")
    execute.execute_notebook(
        Chapter("alpha", source / "alpha.ipynb"), source, tmp_path / "executed", {}
    )
    assert given["start_timeout"] == execute.KERNEL_START_TIMEOUT >= 300
