"""Replicates in a build: a chapter's notebook run again with other seeds, each into its own folder.

``python -m helpers.book --replicates K`` runs each replicated chapter (by default
:data:`helpers.replicates.REPLICATED_CHAPTERS`, else ``--replicate-chapters``) K more
times, right after the chapter itself: the same notebook and parameters, with
``seed = s + k`` (``s`` the chapter's seed, ``k = 1 .. K``) and
``results_dir = <results_dir>/replicates/seed_<s + k>`` (the layout and the seed rule are
:mod:`helpers.replicates`'s). A replicate is re-used like a chapter when its inputs (the
notebook, its parameters with the seed, the data, the ``helpers`` modules it runs, the
chapters whose results it reads) are unchanged; its record in the state file is named
``<chapter>/seed_<seed>``. Its executed copy is ``_build/replicates/<chapter>/
seed_<seed>.ipynb``: kept, never rendered (it is in no table of contents).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path
from typing import Any

from helpers import config
from helpers import parameters as book_parameters
from helpers import replicates as recipe_replicates

from .errors import ParameterError
from .plan import Plan, declared_parameters, value_for_notebook
from .staleness import effective_value
from .toc import Chapter

#: Where, inside ``<output>/_build/``, the replicates' executed notebooks go.
REPLICATES_SUBDIR = "replicates"
#: The parameters a replicated notebook must declare: the seed it is given, and the results
#: folder that keeps its results apart from the chapter's own.
REQUIRED_PARAMETERS = ("seed", "results_dir")


@dataclass(frozen=True)
class Replicate:
    """One extra run of a chapter's notebook with another seed.

    Attributes
    ----------
    chapter : Chapter
        The chapter whose notebook runs again.
    seed : int
        Its seed (:func:`helpers.replicates.replicate_seeds`).
    parameters : dict
        What the notebook is passed: the chapter's parameters, with ``seed`` and
        ``results_dir`` (:func:`helpers.replicates.replicate_results_dir`).
    """

    chapter: Chapter
    seed: int
    parameters: dict[str, Any] = field(compare=False)

    @property
    def name(self) -> str:
        """Its name in progress lines and the state file: ``model_1/seed_43``."""
        return f"{self.chapter.name}/seed_{self.seed}"

    def executed_path(self, build_dir: Path) -> Path:
        """Its executed notebook, ``<build_dir>/replicates/<chapter>/seed_<seed>.ipynb``."""
        return Path(build_dir) / REPLICATES_SUBDIR / self.chapter.name / f"seed_{self.seed}.ipynb"


def _chapters_to_replicate(plan: Plan, names: Sequence[str] | None) -> list[Chapter]:
    notebooks = {c.name: c for c in plan.chapters if c.is_notebook}
    if names is None:
        wanted = [n for n in recipe_replicates.REPLICATED_CHAPTERS if n in notebooks]
    else:
        wanted = [n[: -len(".ipynb")] if n.endswith(".ipynb") else n for n in names]
        unknown = [n for n in wanted if n not in notebooks]
        if unknown:
            raise ParameterError(
                f"--replicate-chapters: no notebook chapter named {', '.join(unknown)}.\n"
                f"Notebook chapters in the table of contents: {', '.join(notebooks) or '(none)'}"
            )
    selected = {c.name for c in plan.selected}
    return [notebooks[n] for n in dict.fromkeys(wanted) if n in selected]


def plan_replicates(
    plan: Plan, count: int, chapters: Sequence[str] | None = None, *, required: bool = True
) -> dict[str, list[Replicate]]:
    """The replicates a build runs, checked before any notebook runs.

    Parameters
    ----------
    plan : Plan
        The build's plan (:func:`helpers.book.plan.plan_build`).
    count : int >= 0
        Replicates per replicated chapter; 0 for none.
    chapters : sequence of str, optional
        The chapters to replicate; by default those of
        :data:`helpers.replicates.REPLICATED_CHAPTERS` the book has. Only the ones this
        build selects (``--only``) get replicates.
    required : bool
        Whether replicates were asked for (``--replicates K``). False for the default
        count: then a build that selects no replicated chapter (``--only data``), or
        chapters that do not declare ``seed`` and ``results_dir``, runs none, without an
        error.

    Returns
    -------
    dict
        Chapter name to its replicates, in seed order; empty when ``count`` is 0.

    Raises
    ------
    ParameterError
        If ``count`` is not a whole number >= 0; a named chapter is not a notebook of the
        book; a replicated chapter does not declare ``seed`` and ``results_dir``, or its
        seed is not a whole number; or replicates are asked for and no selected chapter
        gets them.
    """
    if isinstance(count, bool) or not isinstance(count, Integral) or count < 0:
        raise ParameterError(f"--replicates must be a whole number >= 0, got {count!r}")
    if count == 0:
        return {}
    replicated = _chapters_to_replicate(plan, chapters)
    if not required:  # the default: the selected chapters that can be replicated, if any
        replicated = [
            c
            for c in replicated
            if all(name in declared_parameters(c.path) for name in REQUIRED_PARAMETERS)
        ]
        if not replicated:
            return {}
    if not replicated:
        asked = ", ".join(chapters or recipe_replicates.REPLICATED_CHAPTERS)
        raise ParameterError(
            f"--replicates {count}: none of the chapters to replicate ({asked}) is a "
            "notebook this build executes; name them with --replicate-chapters"
        )
    out: dict[str, list[Replicate]] = {}
    for chapter in replicated:
        declared = declared_parameters(chapter.path)
        missing = [name for name in REQUIRED_PARAMETERS if name not in declared]
        if missing:
            raise ParameterError(
                f"{chapter.name} cannot be replicated: its parameters cell does not declare "
                f"{' and '.join(missing)} (a replicate is the notebook run with another seed "
                "into its own results folder)"
            )
        passed = plan.parameters[chapter.name]
        seed = effective_value(chapter, "seed", passed)
        if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
            raise ParameterError(
                f"{chapter.name} cannot be replicated: its seed is {seed!r}, not a whole "
                "number >= 0 (the replicates' seeds are derived from it)"
            )
        results = effective_value(chapter, "results_dir", passed)
        results_dir = (
            config.DEFAULT_RESULTS_DIR
            if results in (None, "")
            else book_parameters.resolve_path(str(results))
        )
        out[chapter.name] = [
            Replicate(
                chapter,
                s,
                {
                    **passed,
                    "seed": s,
                    "results_dir": value_for_notebook(
                        "results_dir", str(recipe_replicates.replicate_results_dir(results_dir, s))
                    ),
                },
            )
            for s in recipe_replicates.replicate_seeds(int(seed), count)
        ]
    return out


def kept_replicates(
    plan: Plan,
    state: dict[str, dict[str, Any]],
    count: int,
    chapters: Sequence[str] | None = None,
) -> dict[str, list[Replicate]]:
    """The replicates of the chapters a build does not select (``--only``), as last run.

    A chapter outside ``--only`` keeps the parameters of its last run, and so do its
    replicates: a notebook that reads them (the comparison) then depends on the same
    replicates as in the build that ran them, and stays up to date when they are.

    Parameters
    ----------
    plan : Plan
        The build's plan.
    state : mapping
        The state file's records (each chapter's last parameters).
    count : int >= 0
        Replicates per replicated chapter, as for :func:`plan_replicates`.
    chapters : sequence of str, optional
        The chapters to replicate, as for :func:`plan_replicates`.

    Returns
    -------
    dict
        Chapter name to its replicates, for the replicated chapters the build leaves
        unselected and whose last parameters can be replicated; empty when ``count`` is 0.
    """
    others = [c for c in plan.chapters if c.is_notebook and c not in plan.selected]
    if not others:
        return {}
    last_run = {c.name: dict(state.get(c.name, {}).get("parameters", {})) for c in others}
    return plan_replicates(Plan(plan.chapters, others, last_run), count, chapters, required=False)


def build_replicates(
    plan: Plan,
    state: dict[str, dict[str, Any]],
    count: int,
    chapters: Sequence[str] | None = None,
    *,
    required: bool = True,
) -> dict[str, list[Replicate]]:
    """Every replicate a build decides on: the selected chapters' (:func:`plan_replicates`,
    run when stale) and the others' as last run (:func:`kept_replicates`, kept or left out).

    Parameters are those of :func:`plan_replicates`, and ``state`` that of
    :func:`kept_replicates`.

    Returns
    -------
    dict
        Chapter name to its replicates.
    """
    return {
        **plan_replicates(plan, count, chapters, required=required),
        **kept_replicates(plan, state, count, chapters),
    }
