"""What the chapters' notebooks put on the page: plumbing folded away, and model chapters whose
prose is their own (what is shared is said once, in the evaluation chapter, and linked)."""

from __future__ import annotations

import difflib
import json

import pytest
from chapter_models import BOOK, _source

from helpers import chapters

MODEL_CHAPTERS = list(chapters.model_ids())
NOTEBOOKS = sorted(p.stem for p in BOOK.glob("*.ipynb"))
#: A paragraph this long that reads like one of another model chapter (difflib's ratio above
#: 0.85) is a copy: it belongs in the evaluation chapter, with a link from each chapter.
LONG_PARAGRAPH, NEAR_COPY = 300, 0.85


def cells(chapter: str) -> list[dict]:
    return json.loads((BOOK / f"{chapter}.ipynb").read_text(encoding="utf-8"))["cells"]


@pytest.mark.parametrize("chapter", NOTEBOOKS)
def test_the_parameters_cell_and_the_parameter_check_are_folded(chapter):
    code = [c for c in cells(chapter) if c["cell_type"] == "code"]
    parameters = [c for c in code if "parameters" in c["metadata"].get("tags", [])]
    for cell in parameters:
        assert "hide-cell" in cell["metadata"]["tags"], f"{chapter}: {cell['metadata']}"
    for cell in (c for c in code if "parameters.check(" in _source(c)):
        assert "params" not in _source(cell).splitlines(), f"{chapter}: the table is shown"
        if chapter in MODEL_CHAPTERS or chapter == "data":  # nothing but imports and the check
            assert "hide-input" in cell["metadata"].get("tags", []), chapter
    if chapter in MODEL_CHAPTERS:
        assert len(parameters) == 1, f"{chapter}: {len(parameters)} parameters cells"


def long_paragraphs(chapter: str) -> list[str]:
    return [
        paragraph.strip()
        for cell in cells(chapter)
        if cell["cell_type"] == "markdown"
        for paragraph in _source(cell).split("\n\n")
        if len(paragraph.strip()) > LONG_PARAGRAPH
    ]


def test_no_long_paragraph_of_a_model_chapter_is_a_near_copy_of_another_s():
    paragraphs = [(c, p) for c in MODEL_CHAPTERS for p in long_paragraphs(c)]
    assert len(paragraphs) > 20  # the check reads the chapters' prose
    copies = []
    for i, (chapter_a, a) in enumerate(paragraphs):
        for chapter_b, b in paragraphs[i + 1 :]:
            matcher = difflib.SequenceMatcher(None, a, b)
            if chapter_a != chapter_b and matcher.quick_ratio() > NEAR_COPY:
                if matcher.ratio() > NEAR_COPY:
                    copies.append((chapter_a, chapter_b, a[:60]))
    assert copies == [], copies
