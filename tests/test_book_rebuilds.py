"""Successive builds of the book runner: unchanged chapters are re-used, changed ones (and
the chapters reading their results) run again, each saying why; a failed render keeps the
last good book.

A render is a jupyter-book run of seconds: the counting book is built (and rendered) once
per module and each test works on a copy (``counting_book``); the tests of what runs
again and why skip the render (``no_render``), which the tests that read HTML check.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from fixture_book import REPO, alpha_notebook, file_hashes, make_fixture_book, make_notebook

from helpers.book import build, render, staleness

# Every test builds (executes) a small book: the slow kind `make quick` leaves out.
pytestmark = pytest.mark.notebook

# ---------------------------------------------------------------------------------------
# Re-using unchanged chapters, and saying which are stale
# ---------------------------------------------------------------------------------------


def counting_notebook(
    name: str, uses: list[str] | None = None, imports: str = ""
) -> nbformat.NotebookNode:
    """A chapter that appends a line to runs.txt (beside it) each time it executes.

    ``imports``: a module of the counting book's own package (``pkg.module``), imported
    from ``../code`` (the chapter runs in its source folder)."""
    run = f"with open('runs.txt', 'a') as f:\n    f.write('{name}\\n')\nprint(n_points)"
    if imports:
        run = f"import sys\nsys.path.insert(0, '../code')\nimport {imports}\n{run}"
    nb = make_notebook(
        ("markdown", f"# {name.title()} chapter", []),
        ("code", "n_points = 3", ["parameters"]),
        ("code", run, []),
    )
    if uses:
        nb.metadata["book"] = {"uses_results_of": uses}
    return nb


def _runs(layout) -> list[str]:
    runs = layout["source_dir"] / "runs.txt"
    return runs.read_text().split() if runs.exists() else []


def _lines(out: io.StringIO) -> dict[str, str]:
    return {line.split()[0]: line for line in out.getvalue().splitlines() if line.strip()}


def _counting_layout(root: Path) -> tuple[dict, Path, Path]:
    """The counting book (beta reads alpha's results; alpha imports ``pkg.module``) and its
    package ``code/pkg`` (``module.py``, and ``unused.py``, which no chapter imports), under
    ``root``; not built. Returns ``(layout, code_dir, root)``, ``code_dir`` the package."""
    notebooks = {
        "alpha": counting_notebook("alpha", imports="pkg.module"),
        "beta": counting_notebook("beta", uses=["alpha"]),
    }
    layout = make_fixture_book(root, notebooks)
    code = root / "code" / "pkg"
    code.mkdir(parents=True)
    (code / "__init__.py").write_text("")
    (code / "module.py").write_text("VALUE = 1\n")
    (code / "unused.py").write_text("VALUE = 1\n")
    return layout, code, root


def _build(counting_book, **options):
    layout, code, root = counting_book
    out = io.StringIO()
    build.build_book(**layout, output_dir=root, code_dir=code, out=out, **options)
    return _lines(out)


@pytest.fixture(scope="module")
def counting_template(tmp_path_factory) -> Path:
    """The counting book built once, for real (both notebooks executed, the HTML rendered);
    each test gets a copy of it instead of building it again."""
    book = _counting_layout(tmp_path_factory.mktemp("counting"))
    _build(book)
    assert _runs(book[0]) == ["alpha", "beta"]
    assert (book[2] / "_build" / "html" / "beta.html").is_file()  # rendered by jupyter-book
    return book[2]


@pytest.fixture
def counting_book(counting_template, tmp_path):
    """A copy of the built counting book: alpha and beta executed once each (``runs.txt``
    says so), ``_build/`` holding their executed copies, the state file and the HTML.
    The state file holds no absolute path of these chapters, so the copy is up to date."""
    shutil.copytree(counting_template, tmp_path, symlinks=True, dirs_exist_ok=True)
    layout = {
        "source_dir": tmp_path / "book",
        "config_path": tmp_path / "_config.yml",
        "toc_path": tmp_path / "_toc.yml",
    }
    return layout, tmp_path / "code" / "pkg", tmp_path


@pytest.fixture
def no_render(monkeypatch) -> list[Path]:
    """For tests of what runs again and why: the build's render step (jupyter-book in a
    fresh process, seconds a call) only notes its call and makes the HTML folder.

    What is executed, re-used or left out, and the state file, are settled before the
    render; the render itself is checked by the tests that read the HTML (the counting
    template, ``test_a_second_build_...`` and the failed render here, test_book.py's
    ``built`` book and ``--only`` build, and test_book_left_out.py)."""
    calls = []

    def note_render(executed_dir, output_dir, config_path, toc_path, **options):
        calls.append(Path(executed_dir))
        html = Path(output_dir) / "_build" / render.HTML_SUBDIR
        html.mkdir(parents=True, exist_ok=True)
        return html

    monkeypatch.setattr(build, "render", note_render)
    return calls


def test_a_second_build_with_nothing_changed_reuses_every_chapter(counting_book):
    layout = counting_book[0]
    assert _runs(layout) == ["alpha", "beta"]  # the first build (the template's)
    shutil.rmtree(counting_book[2] / "_build" / "html")  # so the HTML below is this build's
    lines = _build(counting_book)
    assert _runs(layout) == ["alpha", "beta"]  # nothing executed again
    for name in ("alpha", "beta"):
        assert re.match(rf"{name}\s+re-used\s+unchanged since \d{{4}}-", lines[name]), lines[name]
    assert "rendered" in lines["(rendering)"]
    assert (counting_book[2] / "_build" / "html" / "beta.html").is_file()


def test_force_executes_everything(counting_book, no_render):
    lines = _build(counting_book, force=True)
    assert _runs(counting_book[0]) == ["alpha", "beta"] * 2
    assert "(--force)" in lines["alpha"]
    assert no_render == [counting_book[2] / "_build" / "executed"]  # and then rendered


@pytest.mark.parametrize(
    "change, reruns, reason",
    [
        ("notebook", ["beta"], "notebook changed"),
        ("upstream", ["alpha", "beta"], "alpha runs again"),
        # A changed parameter: see test_dropping_a_parameter_goes_back_to_the_defaults_...
        ("code", ["alpha", "beta"], "alpha runs again"),
        ("environment", ["alpha", "beta"], "environment changed"),
    ],
)
def test_a_chapter_runs_again_when_one_of_its_inputs_changed(
    counting_book, no_render, monkeypatch, change, reruns, reason
):
    layout, code, _ = counting_book  # built once: runs.txt holds alpha, beta
    options = {}
    if change == "notebook":
        nb = counting_notebook("beta", uses=["alpha"])
        nb.cells[0].source += "\n\nA new sentence."
        nbformat.write(nb, layout["source_dir"] / "beta.ipynb")
    elif change == "upstream":
        nb = counting_notebook("alpha", imports="pkg.module")
        nb.cells[0].source += "\n\nA new sentence."
        nbformat.write(nb, layout["source_dir"] / "alpha.ipynb")
    elif change == "code":
        (code / "module.py").write_text("VALUE = 2\n")
    else:
        monkeypatch.setenv("BOOK_EPOCHS", "1")
    lines = _build(counting_book, **options)
    assert _runs(layout)[2:] == reruns
    last = reruns[-1]
    assert reason in lines[last], lines[last]


def test_an_edit_to_a_module_names_it_and_reruns_only_the_chapters_that_run_it(
    counting_book, no_render
):
    layout, code, root = counting_book
    (code / "module.py").write_text("VALUE = 1\nEDITED = True\n")
    out = io.StringIO()
    build.book_status(layout["source_dir"], root, layout["toc_path"], out=out, code_dir=code)
    assert re.search(r"alpha\s+stale\s+\(pkg/module\.py changed\)", out.getvalue())
    assert re.search(r"beta\s+stale\s+\(alpha runs again\)", out.getvalue())
    lines = _build(counting_book)
    assert _runs(layout)[2:] == ["alpha", "beta"]
    assert "(pkg/module.py changed)" in lines["alpha"], lines["alpha"]


def test_an_edit_to_a_module_no_chapter_imports_reruns_nothing(counting_book, no_render):
    layout, code, _ = counting_book
    (code / "unused.py").write_text("VALUE = 2\n")
    (code / "new_module.py").write_text("VALUE = 3\n")
    lines = _build(counting_book)
    assert _runs(layout) == ["alpha", "beta"]  # the template's build only
    assert all("re-used" in lines[name] for name in ("alpha", "beta")), lines


def test_dropping_a_parameter_goes_back_to_the_defaults_and_runs_again(counting_book, no_render):
    # Built once with the defaults; then -p n_points 4 (a changed parameter) ...
    lines = _build(counting_book, params={"n_points": 4})
    assert _runs(counting_book[0]) == ["alpha", "beta"] * 2
    assert "parameters changed" in lines["alpha"] and "parameters changed" in lines["beta"]
    lines = _build(counting_book)  # ... then no -p: the notebook's default n_points = 3
    assert _runs(counting_book[0]) == ["alpha", "beta"] * 3
    assert "parameters changed" in lines["alpha"]


def test_changed_data_makes_chapters_that_read_it_stale(tmp_path, make_xrays, no_render):
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


def test_changed_results_file_makes_the_chapter_stale(tmp_path, no_render):
    counting_book = _counting_layout(tmp_path)  # alpha is changed before the first build
    layout, code, root = counting_book
    nb = counting_notebook("alpha")
    results = root / "results"
    nb.cells[1].source = f"n_points = 3\nresults_dir = {str(results)!r}"
    nb.cells.append(
        nbformat.v4.new_code_cell(
            "import os\nos.makedirs(results_dir + '/alpha', exist_ok=True)\n"
            "open(results_dir + '/alpha/metrics.json', 'w').write('{}')"
        )
    )
    nbformat.write(nb, layout["source_dir"] / "alpha.ipynb")
    _build(counting_book)
    (results / "alpha" / "metrics.json").write_text('{"edited": true}')
    lines = _build(counting_book)
    assert "results file" in lines["alpha"] and "changed or is missing" in lines["alpha"]
    assert "alpha runs again" in lines["beta"]


def test_an_interrupted_build_is_reported_and_its_chapter_runs_again(tmp_path):
    sleeper = make_notebook(
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
        [
            sys.executable,
            "-c",
            script,
            str(layout["source_dir"]),
            str(tmp_path),
            str(layout["config_path"]),
            str(layout["toc_path"]),
            str(code),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
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
        [
            sys.executable,
            "-m",
            "helpers.book",
            "--status",
            "--source-dir",
            str(layout["source_dir"]),
            "--output-dir",
            str(tmp_path),
            "--toc",
            str(layout["toc_path"]),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert status.returncode == 0, status.stderr
    assert re.search(r"beta\s+stale\s+\(its run of .* was interrupted\)", status.stdout), (
        status.stdout
    )
    out = io.StringIO()
    decisions = build.book_status(
        layout["source_dir"], tmp_path, layout["toc_path"], out=out, code_dir=code
    )
    assert re.search(r"alpha\s+up to date", out.getvalue()), out.getvalue()
    assert re.search(r"beta\s+stale\s+\(its run of .* was interrupted\)", out.getvalue()), (
        out.getvalue()
    )
    assert decisions["beta"].action == "execute"  # the next build runs it again


def test_editing_one_model_notebook_runs_only_it_and_the_chapters_that_read_its_results(
    tmp_path, no_render
):
    notebooks = {
        "model_1": counting_notebook("model_1"),
        "model_2": counting_notebook("model_2"),
        "comparison": counting_notebook("comparison", uses=["model_1", "model_2"]),
        "original": counting_notebook("original", uses=["model_2"]),
    }
    chapters_toc = "".join(f"  - file: {name}\n" for name in notebooks)
    layout = make_fixture_book(
        tmp_path, notebooks, "format: jb-book\nroot: intro\nchapters:\n" + chapters_toc
    )
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
    executed = sorted(
        name for name, line in lines.items() if re.match(rf"{name}\s+executed\s", line)
    )
    assert executed == ["comparison", "model_1"], out.getvalue()
    assert "(notebook changed)" in lines["model_1"]
    assert "(model_1 runs again)" in lines["comparison"]
    for name in ("model_2", "original"):
        assert re.match(rf"{name}\s+re-used\s+unchanged since", lines[name]), lines[name]
    assert _runs(layout) == [
        "model_1",
        "model_2",
        "comparison",
        "original",
        "model_1",
        "comparison",
    ]


# ---------------------------------------------------------------------------------------
# A failed render keeps the last good book
# ---------------------------------------------------------------------------------------


def test_a_failed_render_keeps_the_last_good_book(counting_book):
    layout, _, root = counting_book  # built and rendered once
    html = root / "_build" / "html"
    assert (html / "beta.html").is_file()
    before = file_hashes(html)
    (layout["source_dir"] / "intro.md").write_text("# Intro\n\nSee {doc}`missing_chapter`.\n")
    with pytest.raises(render.RenderFailed, match="missing_chapter"):
        _build(counting_book)
    assert file_hashes(html) == before  # the last good book, untouched
    leftovers = [p.name for p in (root / "_build").iterdir() if p.name.startswith(".")]
    assert leftovers == [], leftovers
