"""The book's exercises and the code its chapters include from the package.

Every chapter of ``_toc.yml`` is read as the reader gets it (markdown cells of notebooks,
``.md`` pages): each ``{exercise}`` has a label of the form ``<chapter>-ex-<short>``
(``model-1-ex-dense``), unique in the book, and exactly one solution that refers to it and
opens on demand (``:class: dropdown``); the chapters in :data:`REQUIRED` have at least
:data:`MIN_EXERCISES`. A solution is either one ``{solution}`` directive or a gated pair
``{solution-start}`` ... ``{solution-end}`` whose code cells run with the notebook (nbval and
the book build execute them, so the numbers a solution quotes are measured by the run that
renders it).

Every ``{literalinclude}`` with ``:pyobject:`` must name a file and an object that exist:
Sphinx only warns otherwise, and the page would show nothing.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest

from helpers import chapters as book_chapters
from helpers.book import toc

REPO = Path(__file__).resolve().parents[1]
BOOK = REPO / "book"
#: Chapters that must end with exercises: every model chapter, and these.
REQUIRED = ["data", "evaluation", *book_chapters.model_ids(), "comparison"]
MIN_EXERCISES = 3

# An opening fence of a MyST directive: 3+ backticks or colons, {name}, argument.
_DIRECTIVE = re.compile(r"^(?P<fence>`{3,}|:{3,})\{(?P<name>[\w-]+)\}[ \t]*(?P<argument>.*)$")
_OPTION = re.compile(r"^:(?P<key>[\w-]+):[ \t]*(?P<value>.*)$")
_LABEL = re.compile(r"^(?P<chapter>[a-z0-9-]+?)-ex-[a-z0-9][a-z0-9-]*$")


@dataclass
class Directive:
    """One directive as written: name, argument, options, where it is."""

    name: str
    argument: str
    options: dict[str, str] = field(default_factory=dict)
    where: str = ""


def chapters() -> list[toc.Chapter]:
    """The book's chapters, in the order of the table of contents."""
    return toc.find_chapters(BOOK, REPO / "_toc.yml")


def markdown_blocks(chapter: toc.Chapter) -> list[str]:
    """The markdown the reader gets: a page's text, or a notebook's markdown cells."""
    if not chapter.is_notebook:
        return [chapter.path.read_text()]
    notebook = nbformat.read(str(chapter.path), as_version=4)
    return [cell.source for cell in notebook.cells if cell.cell_type == "markdown"]


def directives(text: str, where: str) -> list[Directive]:
    """The directives of a markdown text, nested ones included, with their options."""
    found = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = _DIRECTIVE.match(line.strip())
        if not match:
            continue
        directive = Directive(match["name"], match["argument"].strip(), where=f"{where}:{i + 1}")
        for option_line in lines[i + 1 :]:
            option = _OPTION.match(option_line.strip())
            if not option:
                break
            directive.options[option["key"]] = option["value"].strip()
        found.append(directive)
    return found


def chapter_directives(chapter: toc.Chapter) -> list[Directive]:
    out = []
    for number, block in enumerate(markdown_blocks(chapter)):
        out.extend(directives(block, f"{chapter.path.name} markdown block {number}"))
    return out


def test_the_parser_reads_exercises_solutions_and_their_options():
    text = (
        "````{exercise} A title\n:label: data-ex-one\n\nText.\n````\n\n"
        "```{solution} data-ex-one\n:class: dropdown\n\nAnswer.\n```\n"
        ":::{solution-start} data-ex-two\n:class: dropdown\n:::\n"
    )
    found = directives(text, "here")
    assert [(d.name, d.argument) for d in found] == [
        ("exercise", "A title"),
        ("solution", "data-ex-one"),
        ("solution-start", "data-ex-two"),
    ]
    assert found[0].options == {"label": "data-ex-one"}
    assert found[1].options == {"class": "dropdown"}


def test_every_exercise_has_a_unique_label_and_one_solution_that_opens_on_demand():
    labels: dict[str, str] = {}
    problems = []
    for chapter in chapters():
        found = chapter_directives(chapter)
        solutions = [d for d in found if d.name in ("solution", "solution-start")]
        gated_ends = [d for d in found if d.name == "solution-end"]
        for exercise in (d for d in found if d.name == "exercise"):
            label = exercise.options.get("label", "")
            match = _LABEL.match(label)
            # The book's labels spell a chapter with hyphens (model_1 -> model-1-beyond).
            prefix = chapter.name.replace("_", "-")
            if not match or match["chapter"] != prefix:
                problems.append(
                    f"{exercise.where}: exercise label {label!r} is not "
                    f"'{prefix}-ex-<short>' (lower case, digits, hyphens)"
                )
            if label in labels:
                problems.append(f"{exercise.where}: label {label!r} also used at {labels[label]}")
            labels[label] = exercise.where
            answers = [s for s in solutions if s.argument == label]
            if len(answers) != 1:
                problems.append(f"{exercise.where}: {label!r} has {len(answers)} solutions, not 1")
            for answer in answers:
                classes = answer.options.get("class", "").split()
                if "dropdown" not in classes:
                    problems.append(f"{answer.where}: solution of {label!r} lacks :class: dropdown")
        orphans = [s for s in solutions if s.argument not in labels]
        problems += [f"{s.where}: solution of unknown exercise {s.argument!r}" for s in orphans]
        gated_starts = [s for s in solutions if s.name == "solution-start"]
        if len(gated_starts) != len(gated_ends):
            problems.append(
                f"{chapter.path.name}: {len(gated_starts)} solution-start but "
                f"{len(gated_ends)} solution-end"
            )
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", REQUIRED)
def test_required_chapters_end_with_enough_exercises(name):
    by_name = {c.name: c for c in chapters()}
    assert name in by_name, f"{name} is not in _toc.yml"
    exercises = [d for d in chapter_directives(by_name[name]) if d.name == "exercise"]
    assert len(exercises) >= MIN_EXERCISES, (
        f"{name} has {len(exercises)} exercises; at least {MIN_EXERCISES} are expected"
    )


def _defines(tree: ast.Module, dotted: str) -> bool:
    """Whether the module defines ``dotted`` (``function`` or ``Class.method``) at top level."""
    scope: list[ast.stmt] = tree.body
    for part in dotted.split("."):
        node = next(
            (
                n
                for n in scope
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                and n.name == part
            ),
            None,
        )
        if node is None:
            return False
        scope = node.body
    return True


def literal_includes() -> list[tuple[toc.Chapter, Directive]]:
    return [
        (chapter, d)
        for chapter in chapters()
        for d in chapter_directives(chapter)
        if d.name == "literalinclude"
    ]


def test_the_evaluation_chapter_includes_the_package_code_it_teaches():
    included = {
        d.options.get("pyobject")
        for chapter, d in literal_includes()
        if chapter.name == "evaluation"
    }
    for name in (
        "person_aware_split",
        "threshold_on_validation",
        "score_test_once",
        "_resample_weights",
    ):
        assert name in included, f"evaluation.ipynb does not include {name}"


def test_every_literalinclude_names_a_file_and_object_that_exist():
    # The chapters include the package through book/_helpers, a link to helpers/, so that
    # the path is the same from book/ (jupyter-book build book) and from the runner's
    # executed copy (the copy follows the link).
    assert (BOOK / "_helpers").resolve() == (REPO / "helpers").resolve()
    found = literal_includes()
    assert found, "no chapter includes code; the evaluation chapter should"
    problems = []
    for chapter, directive in found:
        path = (chapter.path.parent / directive.argument).resolve()
        if not path.is_file():
            problems.append(f"{directive.where}: {directive.argument} does not exist")
            continue
        name = directive.options.get("pyobject")
        if name and not _defines(ast.parse(path.read_text()), name):
            problems.append(f"{directive.where}: {directive.argument} defines no {name}")
    assert not problems, "\n".join(problems)
