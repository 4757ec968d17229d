"""Builds of some chapters (``--only``): the book renders what it has, references to the
chapters left out become plain text, any other broken reference still fails; and the
render's own pieces (the swap of the HTML folder, the render configuration).
"""

from __future__ import annotations

import io
import os
import re
import shutil
from pathlib import Path

import nbformat
import pytest
import yaml
from fixture_book import REPO, TOC, make_fixture_book, make_notebook, run_cli

from helpers.book import build, left_out_refs, render, toc

# ---------------------------------------------------------------------------------------
# A build of some chapters renders what it has
# ---------------------------------------------------------------------------------------


def labelled_notebook(name: str) -> nbformat.NotebookNode:
    """A chapter with a reference target, writing ``<results_dir>/<name>/metrics.json``."""
    return make_notebook(
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
        root,
        {"alpha": labelled_notebook("alpha"), "beta": labelled_notebook("beta")},
        CHECKLIST_TOC,
    )
    (layout["source_dir"] / "checklist.md").write_text(CHECKLIST)
    return layout


@pytest.mark.notebook
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
    assert executed.metadata["papermill"]["parameters"] == {
        "results_dir": str(results)
    }  # outside the repo

    html = tmp_path / "_build" / "html"
    assert not (html / "alpha.html").exists()
    page = (html / "checklist.html").read_text()
    assert 'href="beta.html#beta-results"' in page  # a chapter of this build: a link
    assert "alpha-results (not in this build)" in page  # a chapter left out: plain text
    assert re.search(r"alpha\S* \(not in this build\)", page.replace("</span>", ""))
    assert 'href="alpha.html' not in page
    assert 'class="left-out-reference"' in page


@pytest.mark.notebook
def test_a_render_of_some_chapters_still_fails_on_any_other_broken_reference(tmp_path):
    layout = _checklist_book(tmp_path)
    (layout["source_dir"] / "checklist.md").write_text(CHECKLIST + "\nAnd {ref}`no-such-label`.\n")
    # In this process: a failed render's exit status 1 is checked through the command line
    # by test_rendering_warnings_fail_the_build.
    with pytest.raises(render.RenderFailed) as failed:
        build.build_book(**layout, output_dir=tmp_path, only=["beta"], out=io.StringIO())
    assert "no-such-label" in str(failed.value)
    assert "alpha-results" not in str(failed.value)  # that one was made plain text


@pytest.mark.notebook
def test_the_full_build_has_no_left_out_references(tmp_path):
    layout = _checklist_book(tmp_path)
    build.build_book(**layout, output_dir=tmp_path, out=io.StringIO())
    page = (tmp_path / "_build" / "html" / "checklist.html").read_text()
    assert 'href="alpha.html#alpha-results"' in page and 'href="beta.html#beta-results"' in page
    assert "not in this build" not in page
    rendered_config = yaml.safe_load((tmp_path / "_build" / "executed" / "_config.yml").read_text())
    assert render.LEFT_OUT_EXTENSION not in str(rendered_config)  # -W stays fully strict


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
    full = yaml.safe_load(
        render.write_render_config(REPO / "_config.yml", tmp_path / "full.yml").read_text()
    )
    assert full["execute"]["execute_notebooks"] == "off"
    assert full["sphinx"] == yaml.safe_load((REPO / "_config.yml").read_text())["sphinx"]
    partial = yaml.safe_load(
        render.write_render_config(
            REPO / "_config.yml", tmp_path / "partial.yml", ["b", "a"], ["data"]
        ).read_text()
    )
    sphinx_config = partial["sphinx"]["config"]
    assert sphinx_config["extensions"][-1] == render.LEFT_OUT_EXTENSION
    assert sphinx_config["extensions"][:-1] == full["sphinx"]["config"]["extensions"]
    assert sphinx_config["book_left_out_labels"] == ["a", "b"]
    assert sphinx_config["book_left_out_docs"] == ["data"]


@pytest.mark.parametrize(
    "refdoc, target, expected",
    [
        ("checklist", "alpha", "alpha"),
        ("part/page", "other", "part/other"),
        ("part/page", "../model_1.ipynb", "model_1"),
        ("part/page", "/data", "data"),
    ],
)
def test_doc_targets_are_resolved_from_the_referring_page(refdoc, target, expected):
    assert left_out_refs.target_docname(refdoc, target) == expected


def test_every_reference_of_the_real_pages_has_a_target_the_runner_can_find():
    """So that `--only model_1` can turn the checklist's references to other chapters into text."""
    chapters = toc.find_chapters(REPO / "book", REPO / "_toc.yml")
    defined = {c.name: toc.chapter_targets(c) for c in chapters}
    for chapter in chapters:
        for target in re.findall(
            r"\{(?:ref|numref)\}`(?:[^`<]*<)?([^`>]+)>?`", toc.markdown_text(chapter)
        ):
            owners = [name for name, labels in defined.items() if target.lower() in labels]
            assert owners, f"{chapter.name} refers to {target}, which no chapter defines"


def test_toc_without_removes_the_named_entries_only():
    parsed = yaml.safe_load(CHECKLIST_TOC)
    trimmed = toc.toc_without(parsed, {"alpha"})
    assert [e["file"] for e in trimmed["chapters"]] == ["beta", "checklist"]
    assert [e["file"] for e in parsed["chapters"]] == ["alpha", "beta", "checklist"]  # unchanged


@pytest.mark.notebook
def test_the_real_checklist_renders_with_every_notebook_left_out(tmp_path):
    """The pages of a fresh `--only` build: the real intro and checklist, no chapter executed."""
    chapters = toc.find_chapters(REPO / "book", REPO / "_toc.yml")
    notebooks = [c for c in chapters if c.is_notebook]
    executed = tmp_path / "executed"
    executed.mkdir()
    for chapter in chapters:
        if not chapter.is_notebook:
            shutil.copyfile(chapter.path, executed / chapter.path.name)
    trimmed = toc.toc_without(
        yaml.safe_load((REPO / "_toc.yml").read_text()), {c.name for c in notebooks}
    )
    (tmp_path / "_toc.yml").write_text(yaml.safe_dump(trimmed, sort_keys=False))
    labels = set().union(*(toc.chapter_targets(c) for c in notebooks))
    html = render.render(
        executed,
        tmp_path,
        REPO / "_config.yml",
        tmp_path / "_toc.yml",
        left_out_labels=labels,
        left_out_docs={c.name for c in notebooks},
    )
    page = (html / "claim_checklist.html").read_text()
    assert "data-counts (not in this build)" in page and "model-6-gap (not in this build)" in page
    assert 'href="model_1.html' not in page
