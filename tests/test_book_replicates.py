"""Replicates in the book runner: a chapter's notebook run again with other seeds, each into
its own results folder, re-used when unchanged, listed by --status, never rendered.

The fixture chapter ``model_1`` writes ``<results_dir>/model_1/metrics.json`` holding the
seed it ran with, and appends ``model_1 <seed>`` to runs.txt (beside it) each time it runs.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import nbformat
import pytest
from fixture_book import make_fixture_book, make_notebook, run_cli

from helpers import replicates as recipe_replicates
from helpers.book import NotebookFailed, ParameterError, build, render, staleness
from helpers.book.replicates import REPLICATES_SUBDIR

# Every test but the last builds (executes) a small book: the slow kind `make quick` skips.
TOC = "format: jb-book\nroot: intro\nchapters:\n  - file: model_1\n  - file: beta\n"


def model_notebook(
    fail_unless_seed: int | None = None, name: str = "model_1"
) -> nbformat.NotebookNode:
    """A model chapter: parameters seed and results_dir; writes its metrics.json."""
    check = f"assert seed == {fail_unless_seed}, 'trained with another seed'\n" * (
        fail_unless_seed is not None
    )
    return make_notebook(
        ("markdown", f"# {name}", []),
        ("code", "n_points = 3\nseed = 42\nresults_dir = None", ["parameters"]),
        (
            "code",
            check
            + "import json, os\n"
            + "with open('runs.txt', 'a') as f:\n"
            + f"    f.write(f'{name} {{seed}}\\n')\n"
            + f"os.makedirs(os.path.join(results_dir, '{name}'), exist_ok=True)\n"
            + f"with open(os.path.join(results_dir, '{name}', 'metrics.json'), 'w') as f:\n"
            + "    json.dump({'parameters': {'seed': seed, 'n_points': n_points}}, f)",
            [],
        ),
    )


def reader_notebook(*, replicates: bool = False) -> nbformat.NotebookNode:
    """beta; with ``replicates``, it reads model_1's results and replicates (as the
    comparison does) and appends ``beta`` to runs.txt each time it runs."""
    if not replicates:
        return make_notebook(("markdown", "# Beta", []), ("code", "n_points = 3", ["parameters"]))
    nb = make_notebook(
        ("markdown", "# Beta", []),
        ("code", "n_points = 3", ["parameters"]),
        ("code", "with open('runs.txt', 'a') as f:\n    f.write('beta\\n')", []),
    )
    nb.metadata["book"] = {"uses_results_of": ["model_1"], "uses_replicates": True}
    return nb


def _book(
    root: Path, model: nbformat.NotebookNode | None = None, *, reads_replicates: bool = False
) -> dict:
    notebooks = {
        "model_1": model or model_notebook(),
        "beta": reader_notebook(replicates=reads_replicates),
    }
    return make_fixture_book(root, notebooks, TOC)


def _code(root: Path) -> Path:
    """A code folder of the book's own: edits to helpers/ while the tests run must not count."""
    code = root / "code"
    code.mkdir(exist_ok=True)
    (code / "module.py").write_text("VALUE = 1\n")
    return code


def _build(layout: dict, root: Path, **options) -> dict[str, str]:
    out = io.StringIO()
    # Results in the test's folder; only model_1 declares results_dir.
    results = {} if options.get("only") == ["beta"] else {"results_dir": str(root / "results")}
    params = {**results, **options.pop("params", {})}
    build.build_book(
        **layout, output_dir=root, code_dir=_code(root), out=out, params=params, **options
    )
    return {line.split()[0]: line for line in out.getvalue().splitlines() if line.strip()}


def _status(layout: dict, root: Path, **options) -> str:
    """What ``--status`` prints for the book built by :func:`_build`."""
    out = io.StringIO()
    build.book_status(
        layout["source_dir"],
        root,
        layout["toc_path"],
        params={"results_dir": str(root / "results")},
        out=out,
        code_dir=_code(root),
        **options,
    )
    return out.getvalue()


def _runs(layout: dict) -> list[str]:
    runs = layout["source_dir"] / "runs.txt"
    return runs.read_text().splitlines() if runs.exists() else []


def _seed_in(folder: Path) -> int:
    return json.loads((folder / "model_1" / "metrics.json").read_text())["parameters"]["seed"]


@pytest.fixture
def no_render(monkeypatch) -> None:
    """The render step only makes the HTML folder (the render is checked in
    test_replicates_are_not_rendered_as_pages)."""

    def note_render(executed_dir, output_dir, config_path, toc_path, **options):
        html = Path(output_dir) / "_build" / render.HTML_SUBDIR
        html.mkdir(parents=True, exist_ok=True)
        return html

    monkeypatch.setattr(build, "render", note_render)


@pytest.mark.notebook
def test_replicates_train_with_distinct_seeds_into_their_own_folders_and_are_reused(
    tmp_path, no_render
):
    layout = _book(tmp_path)
    results = tmp_path / "results"
    lines = _build(layout, tmp_path, replicates=2)
    assert _runs(layout) == ["model_1 42", "model_1 43", "model_1 44"]
    assert _seed_in(results) == 42  # the chapter's own run, where it always was
    for seed in (43, 44):
        folder = recipe_replicates.replicate_results_dir(results, seed)
        assert folder == results / "replicates" / f"seed_{seed}"
        assert _seed_in(folder) == seed
        executed = tmp_path / "_build" / REPLICATES_SUBDIR / "model_1" / f"seed_{seed}.ipynb"
        assert executed.is_file()
        assert re.match(rf"model_1/seed_{seed}\s+executed\s", lines[f"model_1/seed_{seed}"])
    assert not list((tmp_path / "_build" / "executed").rglob("seed_*"))  # not pages
    assert sorted(recipe_replicates.replicate_folders(results, "model_1")) == [43, 44]

    # A second build with nothing changed re-uses the chapter and its replicates.
    lines = _build(layout, tmp_path, replicates=2)
    assert len(_runs(layout)) == 3
    for name in ("model_1", "model_1/seed_43", "model_1/seed_44"):
        assert re.match(rf"{name}\s+re-used\s+unchanged since", lines[name]), lines[name]

    # One more replicate: only the new seed runs.
    lines = _build(layout, tmp_path, replicates=3)
    assert _runs(layout)[3:] == ["model_1 45"]
    assert "re-used" in lines["model_1/seed_44"] and "executed" in lines["model_1/seed_45"]

    # A changed parameter runs the chapter and every replicate again.
    lines = _build(layout, tmp_path, replicates=3, params={"n_points": 4})
    assert _runs(layout)[4:] == ["model_1 42", "model_1 43", "model_1 44", "model_1 45"]
    assert "(parameters changed)" in lines["model_1/seed_43"], lines["model_1/seed_43"]
    assert "beta" in lines and "seed" not in lines["beta"]  # beta has no replicates


@pytest.mark.notebook
def test_a_chapter_that_reads_replicates_runs_again_when_one_runs_or_is_added(tmp_path, no_render):
    layout = _book(tmp_path, reads_replicates=True)
    _build(layout, tmp_path, replicates=1)
    assert _runs(layout) == ["model_1 42", "model_1 43", "beta"]
    lines = _build(layout, tmp_path, replicates=1)  # nothing changed
    assert len(_runs(layout)) == 3 and "re-used" in lines["beta"], lines["beta"]
    lines = _build(layout, tmp_path, replicates=2)  # one more seed: beta reads it
    assert _runs(layout)[3:] == ["model_1 44", "beta"]
    assert re.search(r"beta\s+executed.*\(model_1/seed_44 runs again\)", lines["beta"])
    lines = _build(layout, tmp_path, replicates=1)  # one fewer: beta's inputs changed
    assert _runs(layout)[5:] == ["beta"], _runs(layout)
    assert "executed" in lines["beta"] and "model_1/seed_43" in lines


@pytest.mark.notebook
def test_a_build_of_some_chapters_keeps_the_other_chapters_replicates_and_their_reader(
    tmp_path, no_render
):
    """Like ``--only model_1`` on a complete book: the comparison reads the replicates of
    model_2 too, which this build neither runs nor changes, so it stays in the book."""
    reader = reader_notebook(replicates=True)
    reader.metadata["book"]["uses_results_of"] = ["model_1", "model_2"]
    toc = TOC.replace("  - file: beta", "  - file: model_2\n  - file: beta")
    notebooks = {
        "model_1": model_notebook(),
        "model_2": model_notebook(name="model_2"),
        "beta": reader,
    }
    layout = make_fixture_book(tmp_path, notebooks, toc)
    both = ["model_1", "model_2"]
    _build(layout, tmp_path, replicate_chapters=both)
    ran = len(_runs(layout))
    assert ran == 2 * (1 + recipe_replicates.DEFAULT_REPLICATES) + 1, _runs(layout)

    lines = _build(layout, tmp_path, replicate_chapters=both, only=["model_1"])
    assert len(_runs(layout)) == ran, _runs(layout)[ran:]
    assert re.match(r"beta\s+re-used\s+kept from the run of", lines["beta"]), lines["beta"]
    assert re.match(r"model_2/seed_43\s+re-used\s+kept", lines["model_2/seed_43"])
    status = _status(layout, tmp_path, replicate_chapters=both)
    assert "stale" not in status, status
    assert re.search(r"^model_2/seed_44\s+up to date", status, re.M)

    # A stale replicate of a chapter outside --only is left out, not run.
    (tmp_path / "_build" / REPLICATES_SUBDIR / "model_2" / "seed_44.ipynb").unlink()
    lines = _build(layout, tmp_path, replicate_chapters=both, only=["model_1"])
    assert len(_runs(layout)) == ran
    assert re.match(r"model_2/seed_44\s+left out", lines["model_2/seed_44"])

    # A chapter left out keeps its executed copy: were it replaced by the source, a later
    # build that finds it up to date would render a notebook without outputs.
    executed_beta = tmp_path / "_build" / "executed" / "beta.ipynb"
    before = executed_beta.read_bytes()
    lines = _build(
        layout, tmp_path, replicate_chapters=both, only=["model_1"], params={"n_points": 4}
    )
    assert re.match(r"beta\s+left out", lines["beta"]), lines["beta"]
    assert executed_beta.read_bytes() == before


@pytest.mark.notebook
def test_a_chapter_that_does_not_read_replicates_ignores_them(tmp_path, no_render):
    layout = _book(tmp_path)
    _build(layout, tmp_path, replicates=1)
    lines = _build(layout, tmp_path, replicates=2)
    assert "re-used" in lines["beta"] and "executed" in lines["model_1/seed_44"]


@pytest.mark.notebook
def test_status_lists_the_replicates_and_says_which_are_stale(tmp_path, no_render):
    layout = _book(tmp_path)
    results = tmp_path / "results"
    _build(layout, tmp_path, replicates=1)
    status = run_cli(
        layout, tmp_path, "--status", "--results-dir", str(results), "--replicates", "2"
    )
    assert status.returncode == 0, status.stderr
    assert re.search(r"^model_1/seed_43\s+up to date", status.stdout, re.M), status.stdout
    assert re.search(r"^model_1/seed_44\s+stale\s+\(never executed\)", status.stdout, re.M)
    without = run_cli(
        layout, tmp_path, "--status", "--results-dir", str(results), "--replicates", "0"
    )
    assert "seed_" not in without.stdout
    default = run_cli(layout, tmp_path, "--status", "--results-dir", str(results))
    assert re.findall(r"^model_1/seed_\d+", default.stdout, re.M) == [
        f"model_1/seed_{seed}"
        for seed in recipe_replicates.replicate_seeds(42, recipe_replicates.DEFAULT_REPLICATES)
    ], default.stdout
    # The seeds follow the chapter's seed, here given with -p.
    seven = run_cli(
        layout,
        tmp_path,
        "--status",
        "--results-dir",
        str(results),
        "-p",
        "seed",
        "7",
        "--replicates",
        "2",
    )
    assert re.findall(r"^model_1/seed_\d+", seven.stdout, re.M) == [
        "model_1/seed_8",
        "model_1/seed_9",
    ], seven.stdout


@pytest.mark.notebook
def test_replicates_are_not_rendered_as_pages(tmp_path):
    layout = _book(tmp_path)
    _build(layout, tmp_path, replicates=1)
    html = tmp_path / "_build" / "html"
    assert (html / "model_1.html").is_file()
    assert not [p.name for p in html.rglob("*seed_*")]
    assert (tmp_path / "_build" / REPLICATES_SUBDIR / "model_1" / "seed_43.ipynb").is_file()


@pytest.mark.notebook
def test_a_failed_replicate_is_named_and_runs_again_next_time(tmp_path, no_render):
    layout = _book(tmp_path, model_notebook(fail_unless_seed=42))
    with pytest.raises(NotebookFailed, match=r"notebook model_1/seed_43 .*failed"):
        _build(layout, tmp_path, replicates=1)
    state = staleness.load_state(tmp_path / "_build" / staleness.STATE_FILE)
    assert state["model_1"]["status"] == "complete"
    assert state["model_1/seed_43"]["status"] == "failed"
    status = _status(layout, tmp_path, replicates=1)
    assert re.search(r"model_1/seed_43\s+stale\s+\(its last run failed\)", status)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"replicates": -1}, r"--replicates must be a whole number >= 0, got -1"),
        (
            {"replicates": 2, "replicate_chapters": ["gamma"]},
            r"no notebook chapter named gamma",
        ),
        (
            {"replicates": 2, "replicate_chapters": ["beta"]},
            r"beta cannot be replicated: .* does not declare seed and results_dir",
        ),
        (
            {"replicates": 2, "only": ["beta"]},
            r"none of the chapters to replicate \(model_1, model_2, model_3, model_5\)",
        ),
    ],
)
def test_impossible_replicates_are_refused_before_anything_runs(tmp_path, options, message):
    layout = _book(tmp_path)
    with pytest.raises(ParameterError, match=message):
        _build(layout, tmp_path, **options)
    assert _runs(layout) == [] and not (tmp_path / "_build").exists()


def test_replicates_cli_refuses_a_negative_count_with_exit_status_2(tmp_path):
    layout = _book(tmp_path)
    result = run_cli(layout, tmp_path, "--status", "--replicates", "-1")
    assert result.returncode == 2
    assert "--replicates must be a whole number >= 0" in result.stderr


def test_the_default_book_replicates_models_1_2_3_and_5_and_only_what_a_build_selects():
    from helpers.book import SOURCE_DIR, TOC_PATH, find_chapters
    from helpers.book.plan import plan_build
    from helpers.book.replicates import plan_replicates

    chapters = find_chapters(SOURCE_DIR, TOC_PATH)
    default = plan_replicates(
        plan_build(chapters), recipe_replicates.DEFAULT_REPLICATES, required=False
    )
    assert recipe_replicates.DEFAULT_REPLICATES >= 2  # at least three seeds per recipe
    assert list(default) == ["model_1", "model_2", "model_3", "model_5"]
    for replicates in default.values():
        assert [r.seed for r in replicates] == recipe_replicates.replicate_seeds(
            42, recipe_replicates.DEFAULT_REPLICATES
        )
    # --only data: the default asks nothing of a build that selects no replicated chapter;
    # an explicit --replicates does.
    only_data = plan_build(chapters, only=["data"])
    assert plan_replicates(only_data, 2, required=False) == {}
    with pytest.raises(ParameterError, match="none of the chapters to replicate"):
        plan_replicates(only_data, 2)


def test_a_build_of_chapters_executed_elsewhere_trains_no_replicates_by_default():
    assert build._replicate_count(None, Path("executed-by-nbval")) == 0
    assert build._replicate_count(None, None) == recipe_replicates.DEFAULT_REPLICATES
    assert build._replicate_count(1, Path("executed-by-nbval")) == 1
