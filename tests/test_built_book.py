"""Check the real book as built by the runner: every chapter, its figures, the comparison table.

``make test`` builds the book with CI-sized parameters (``make book-test``) and then runs this
file with ``BOOK_HTML_DIR`` pointing at the HTML. Without ``BOOK_HTML_DIR`` the tests skip
(a plain ``pytest`` does not build the whole book); with it set, a missing page fails.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml
from bs4 import BeautifulSoup

from helpers.chapters import find_chapters, model_ids
from helpers.config import REPO_ROOT

HTML_DIR = os.environ.get("BOOK_HTML_DIR")
pytestmark = [
    pytest.mark.built_book,
    pytest.mark.skipif(
        not HTML_DIR, reason="set BOOK_HTML_DIR to a built book's _build/html (make book-test does)"
    ),
]

#: Chapters that must show at least one figure computed by the run.
MODEL_IDS = model_ids()
CHAPTERS_WITH_FIGURES = {"data", "evaluation", "comparison", *MODEL_IDS}
#: Lines TensorFlow writes to stderr; none may reach the HTML.
TF_LOG_PATTERNS = [
    r"oneDNN custom operations",
    r"cpu_feature_guard",
    r"E0000 00:00",
    r"I0000 00:00",
]


def chapter_named(name: str):
    """The chapter ``name`` of the book's toc, with its metadata (helpers.chapters)."""
    return next(c for c in find_chapters() if c.name == name)


def notebook_model_cell(name: str) -> str:
    """The source of the notebook's cell tagged ``model`` (the chapter's Keras code)."""
    notebook = json.loads((REPO_ROOT / "book" / f"{name}.ipynb").read_text())
    (cell,) = [c for c in notebook["cells"] if "model" in c["metadata"].get("tags", [])]
    return "".join(cell["source"])


def toc_chapters() -> list[str]:
    toc = yaml.safe_load((REPO_ROOT / "_toc.yml").read_text())
    return [toc["root"]] + [entry["file"] for entry in toc.get("chapters", [])]


@pytest.fixture(scope="module")
def html_dir() -> Path:
    path = Path(HTML_DIR).resolve()
    assert (path / "index.html").is_file(), f"no index.html in {path}"
    return path


def page(html_dir: Path, name: str) -> BeautifulSoup:
    file = html_dir / f"{name}.html"
    assert file.is_file(), f"chapter {name} has no page {file}"
    return BeautifulSoup(file.read_text(encoding="utf-8"), "html.parser")


@pytest.mark.parametrize("name", toc_chapters())
def test_chapter_page_exists_with_its_figures(html_dir, name):
    soup = page(html_dir, name)
    article = soup.select_one("article") or soup
    text = article.get_text(" ")
    assert len(text.split()) > 50, f"{name}: page is nearly empty"
    images = [img for img in article.find_all("img") if "_images/" in img.get("src", "")]
    if name in CHAPTERS_WITH_FIGURES:
        assert images, f"{name}: no figure"
    for img in images:
        target = (html_dir / img["src"]).resolve()
        assert target.is_file() and target.stat().st_size > 1000, (
            f"{name}: figure {img['src']} missing"
        )
    html = str(article)
    for pattern in TF_LOG_PATTERNS:
        assert not re.search(pattern, html), f"{name}: TensorFlow log line {pattern!r} in the HTML"
    assert "Traceback" not in text, f"{name}: a traceback was rendered"


def test_navigation_lists_every_chapter(html_dir):
    soup = page(html_dir, "intro")
    links = {Path(a["href"]).stem for a in soup.select("nav a.reference") if a.get("href")}
    missing = set(toc_chapters()[1:]) - links
    assert not missing, f"navigation lacks {sorted(missing)}"


def test_comparison_table_is_an_html_table_with_every_model(html_dir):
    soup = page(html_dir, "comparison")
    tables = soup.select("table.dataframe")
    assert tables, "comparison: no HTML table"
    first = tables[0].get_text(" ")
    for model_id in MODEL_IDS:
        assert model_id in first, f"comparison table lacks {model_id}"
    # Intervals are shown: "0.912 (0.887-0.934)".
    assert re.search(r"\d\.\d{3} \(\d\.\d{3}-\d\.\d{3}\)", first)


def test_model_6_shows_its_ablation_and_the_validation_test_gap(html_dir):
    from helpers.ablation import VARIANTS

    soup = page(html_dir, "model_6")
    tables = [t.get_text(" ") for t in soup.select("table.dataframe")]
    ablation = [t for t in tables if "val AUC (95% CI)" in t]
    assert ablation, "model_6: no ablation table"
    assert "AUC - first row (95% CI)" in ablation[0], "model_6: no paired difference to the recipe"
    for variant in VARIANTS:
        assert variant.name in ablation[0], f"model_6: ablation lacks {variant.name!r}"
        if variant.not_adoptable:
            assert variant.not_adoptable in ablation[0], f"model_6: no reason for {variant.name!r}"
    assert any("test minus validation" in t for t in tables), (
        "model_6: no validation-test gap table"
    )
    text = soup.get_text(" ")
    choice = re.search(r"in this run,\s+(.+?)\.\s", text)
    assert choice and choice.group(1).strip() in {v.name for v in VARIANTS}, (
        "model_6: the choice is not glued"
    )


def test_glued_numbers_are_rendered(html_dir):
    text = page(html_dir, "model_1").get_text(" ")
    match = re.search(r"reaches an AUC of\s+(\d\.\d{3})", text)
    assert match, "model_1: the glued AUC is missing from the prose"
    assert 0.0 <= float(match.group(1)) <= 1.0


def _chromium_or_skip(tmp_path):
    """``(test_browser, a headless Chromium)``, or a skip where Chromium is not installed
    and not required."""
    browser_module = pytest.importorskip("test_browser")
    if browser_module.CHROMIUM is None and not browser_module.REQUIRED:
        pytest.skip("chromium is not installed; set BOOK_REQUIRE_BROWSER=1 to make this a failure")
    return browser_module, browser_module.Chromium(tmp_path / "profile")


def test_pages_load_in_chromium(html_dir, tmp_path):
    browser_module, chromium = _chromium_or_skip(tmp_path)
    try:
        for name in toc_chapters():
            result = chromium.open_page((html_dir / f"{name}.html").as_uri())
            assert result["exceptions"] == [], (name, result["exceptions"])
            assert result["console_errors"] == [], (name, result["console_errors"])
            assert result["remote_requests"] == [], (name, result["remote_requests"])
            undecoded = [i for i in result["images"] if not i["complete"] or i["width"] <= 0]
            assert undecoded == [], (name, undecoded)
    finally:
        chromium.close()


def test_code_tables_and_figures_read_at_the_theme_s_size_on_every_page(html_dir, tmp_path):
    # At a 1366 px window: code at the theme's size, no code line wider than its block
    # (ruff formats the notebooks at book/ruff.toml's width), no table wider than the
    # article, no estimate broken from its interval, no figure whose labels overlap
    # (test_browser.layout_problems).
    browser_module, chromium = _chromium_or_skip(tmp_path)
    problems = {}
    try:
        for name in toc_chapters():
            url = (html_dir / f"{name}.html").as_uri()
            layout = browser_module.page_layout_at_1366_px(chromium, url)
            problems[name] = browser_module.layout_problems(layout)
    finally:
        chromium.close()
    assert {name: found for name, found in problems.items() if found} == {}


def test_every_internal_link_reaches_an_existing_page_and_anchor(html_dir):
    """The checklist page (and every other) links to sections that exist in this build."""
    anchors: dict[str, set[str]] = {}
    for name in toc_chapters():
        soup = page(html_dir, name)
        anchors[f"{name}.html"] = {tag["id"] for tag in soup.find_all(id=True)}
    checked = 0
    for name in toc_chapters():
        for link in page(html_dir, name).select("article a.reference.internal"):
            href = link.get("href", "")
            target, _, anchor = href.partition("#")
            target = target or f"{name}.html"
            if target not in anchors:
                continue  # _sources/, genindex and other generated pages
            checked += 1
            assert not anchor or anchor in anchors[target], f"{name}: link {href} has no target"
    assert checked >= 15  # the checklist alone links 20 sections


def test_checklist_links_every_model_chapters_clinical_sections(html_dir):
    soup = page(html_dir, "claim_checklist")
    hrefs = {a.get("href", "") for a in soup.select("article a.reference.internal")}
    for section in (
        "model-1-beyond",
        "model-1-calibration",
        "model-1-explanations",
        "model-1-errors",
        "comparison-paired",
        "data-split",
    ):
        assert any(h.endswith(f"#{section}") for h in hrefs), f"checklist lacks a link to {section}"
    text = page(html_dir, "model_1").get_text(" ")
    for heading in (
        "Beyond the case study",
        "Calibration",
        "What the model looks at",
        "The misclassified test images",
    ):
        assert heading in text, f"model_1 lacks the section {heading!r}"


@pytest.mark.parametrize("name", [m for m in MODEL_IDS])
def test_model_chapters_show_their_keras_code_and_summary(html_dir, name):
    soup = page(html_dir, name)
    # Code is highlighted token by token: read each block's text without separators.
    text = "\n".join(block.get_text("") for block in soup.find_all("pre"))
    # The definition in the chapter's cell tagged `model` is on the page.
    model_cell = notebook_model_cell(name)
    definitions = re.findall(r"^def (\w+)\(", model_cell, re.MULTILINE)
    assert definitions and all(f"def {d}(" in text for d in definitions), (
        f"{name}: the model's definition is not on the page"
    )
    if not chapter_named(name).uses_results_of:
        # A network trained in the chapter; a model built from other chapters' saved models
        # (model_8's ensemble) is neither compiled nor fitted there.
        assert "model.compile(" in text and "train.fit(" in text, (
            f"{name}: compile or fit is not shown"
        )
        assert "Total params" in text, f"{name}: model.summary() output is missing"
    for step in ("score_validation", "threshold_on_validation", "score_test_once", "save_results"):
        assert step in text, f"{name}: the evaluation step {step} is not shown"


def test_pages_show_repository_paths_never_the_build_machines(html_dir):
    root = str(REPO_ROOT)
    for html in sorted(html_dir.glob("*.html")):
        assert root not in html.read_text(encoding="utf-8"), (
            f"{html.name} shows the absolute path {root}"
        )


def test_cells_that_only_glue_numbers_are_hidden(html_dir):
    for name in ("data", "evaluation", "model_1", "comparison", "original_evaluation"):
        text = "\n".join(block.get_text("") for block in page(html_dir, name).find_all("pre"))
        assert "glue(" not in text, f"{name}: a glue-only cell is shown on the page"


def test_comparison_shows_the_forest_plot_paired_intervals_and_adapted_rows(html_dir):
    soup = page(html_dir, "comparison")
    text = soup.get_text(" ")
    assert "p (Holm)" in text, "comparison: no Holm-adjusted p-values"
    assert any(
        word in text for word in ("these data cannot tell", "improves on", "is worse than")
    ), "comparison: no conclusion judged by the interval of a difference"
    assert "adapted (no labels)" in text, "comparison: the adapted rows are missing"
    assert len(soup.find_all("img")) >= 2, (
        "comparison: the forest plot or the ROC overlay is missing"
    )
    # The carried-forward model's card, rendered as Markdown (its tables as HTML tables).
    assert "Model card: model_" in text and "not a medical device" in text, "comparison: no card"
    assert "Spread over seeds" in text and "Sensitivity by kind of pneumonia" in text


def test_evaluation_chapter_shows_the_package_code_and_exercises_with_hidden_solutions(html_dir):
    soup = page(html_dir, "evaluation")
    captions = " ".join(c.get_text(" ") for c in soup.select("div.code-block-caption"))
    for name in ("person_aware_split", "threshold_on_validation", "score_test_once"):
        assert "helpers/" in captions and name in captions, f"evaluation: {name} is not shown"
    exercises = soup.select("div.exercise")
    solutions = soup.select("div.solution")
    assert len(exercises) >= 3 and len(solutions) == len(exercises)
    # sphinx-togglebutton hides a "dropdown" admonition's body until the reader clicks it.
    assert all("dropdown" in s.get("class", []) for s in solutions)


def test_api_appendix_documents_the_public_names(html_dir):
    import importlib

    text = page(html_dir, "api").get_text(" ")
    for module in ("helpers.data", "helpers.evaluate", "helpers.bootstrap"):
        for name in importlib.import_module(module).__all__:
            if name[0].islower():  # functions; constants and aliases may carry no docstring
                assert name in text, f"api: {module}.{name} is not documented"


def _notebook_chapters() -> list[str]:
    return [n for n in toc_chapters() if (REPO_ROOT / "book" / f"{n}.ipynb").is_file()]


@pytest.mark.parametrize("name", _notebook_chapters())
def test_each_notebook_chapter_says_how_long_it_ran_right_under_its_title(html_dir, name):
    article = page(html_dir, name).select_one("article")
    note = article.select_one("div.admonition")
    assert note is not None and "Run time" in note.get_text(), name
    text = " ".join(note.get_text().split())
    # The time, the machine and what executed it, from the run's own record.
    assert re.search(r"ran in \d+\.\d s|ran in \d+\.\d min \(\d+\.\d s\)", text), text
    assert "CPU core" in text and ("pytest --nbval-lax" in text or "helpers.book" in text), text
    title = article.select_one("h1")
    assert title is not None and title.find_next("div", class_="admonition") is note


def test_run_times_appendix_lists_every_chapter_and_the_total(html_dir):
    text = " ".join(page(html_dir, "run_times").get_text().split())
    for name in _notebook_chapters():
        title = " ".join(page(html_dir, name).select_one("h1").get_text().split()).rstrip("#")
        assert title.strip() in text, name
    assert re.search(r"all chapters \d+\.\d (s|min)", text), text
    assert "No run record" not in text  # every chapter kept its record
    # The book's time budget: the whole book as a multiple of the case study's chapters.
    assert re.search(r"all chapters took \d+\.\d\d times as long", text), text
