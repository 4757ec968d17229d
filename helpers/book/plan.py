"""The parameters of a build: which notebooks run, and the checked values each is passed.

The names, types and value rules of the book's parameters live in
:mod:`helpers.parameters`; this module reads what each notebook declares in its cell
tagged ``parameters``, parses ``-p NAME VALUE`` like papermill, and checks every value
with those rules, before any notebook runs.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers import config
from helpers import parameters as book_parameters

from .errors import ParameterError
from .toc import Chapter

#: Command-line options that are shorthands for notebook parameters.
PATH_OPTIONS: dict[str, str] = {"data_dir": "--data-dir", "results_dir": "--results-dir"}


@dataclass(frozen=True)
class Parameter:
    """A parameter declared in a notebook's ``parameters`` cell.

    Attributes
    ----------
    name : str
        Variable name.
    default : str
        The default as written in the cell (source text, not evaluated).
    type_name : str
        The annotated type (``epochs: int = 10``), else the type of a literal default,
        else ``"None"`` when unknown.
    help : str
        The comment after the assignment, if any.
    """

    name: str
    default: str
    type_name: str
    help: str = ""


@dataclass
class Plan:
    """What a build will do, fixed before any notebook runs.

    Attributes
    ----------
    chapters : list of Chapter
        Every chapter of the table of contents, in order.
    selected : list of Chapter
        The notebooks to execute.
    parameters : dict
        Notebook name to the parameters it is passed (only those it declares).
    """

    chapters: list[Chapter]
    selected: list[Chapter]
    parameters: dict[str, dict[str, Any]] = field(default_factory=dict)


def declared_parameters(notebook: Path) -> dict[str, Parameter]:
    """Read the parameters a notebook declares in its cell tagged ``parameters``.

    Parameters
    ----------
    notebook : Path
        A notebook file.

    Returns
    -------
    dict
        Name to :class:`Parameter`; empty if the notebook has no ``parameters`` cell.
    """
    import papermill

    found = {}
    for name, info in papermill.inspect_notebook(str(notebook)).items():
        default = str(info.get("default", ""))
        type_name = str(info.get("inferred_type_name") or "None")
        if type_name == "None":
            try:
                literal = ast.literal_eval(default)
            except (ValueError, SyntaxError):
                pass  # an expression such as 2 ** 7: type unknown
            else:
                type_name = "None" if literal is None else type(literal).__name__
        found[name] = Parameter(name, default, type_name, str(info.get("help") or ""))
    return found


def declared_default(notebook: Path, name: str) -> Any:
    """The value of a declared parameter's default.

    Parameters
    ----------
    notebook : Path
        A notebook file.
    name : str
        A parameter name.

    Returns
    -------
    Any
        The literal default; None if it is an expression or the name is not declared.
    """
    declared = declared_parameters(notebook).get(name)
    if declared is None:
        return None
    try:
        return ast.literal_eval(declared.default)
    except (ValueError, SyntaxError):
        return None


def parse_value(text: str) -> Any:
    """Parse a ``-p NAME VALUE`` value the way ``papermill -p`` does.

    ``True``/``False``/``None`` (any case as papermill accepts them), then an int, then a
    float; anything else stays a string.

    Parameters
    ----------
    text : str
        The value as typed.

    Returns
    -------
    bool, None, int, float or str
    """
    lowered = text.lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    if lowered == "none":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def check_declared_value(parameter: Parameter, value: Any) -> tuple[Any, str | None]:
    """Check a value for a declared parameter.

    A parameter of the book (:data:`helpers.parameters.PARAMETERS`) is checked by the
    book's type and rule, the same check the notebook makes; any other name (a fixture's
    ``n_points``) by the type its cell declares or implies.

    Parameters
    ----------
    parameter : Parameter
        The declaration.
    value : Any
        The parsed value.

    Returns
    -------
    value : Any
        The value to pass (an int given for a float parameter becomes a float, a number
        given for a string parameter becomes a string).
    problem : str or None
        What was expected, if the value is impossible.
    """
    if parameter.name in book_parameters.PARAMETERS:
        return book_parameters.check_value(parameter.name, value)
    expected = parameter.type_name.replace(" ", "")
    optional = expected.startswith("Optional[") or "|None" in expected or "None|" in expected
    base = re.sub(r"^Optional\[(.*)\]$", r"\1", expected).replace("|None", "").replace("None|", "")
    problem = None
    if value is None:
        if base not in ("None", "") and not optional and parameter.default != "None":
            problem = f"a {base} (None is not allowed)"
    elif base == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        problem = "a whole number"
    elif base == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problem = "a number"
        else:
            value = float(value)
    elif base == "bool" and not isinstance(value, bool):
        problem = "True or False"
    elif base == "str" and not isinstance(value, str):
        # `-p run_name 2024` means the string "2024": papermill's parsing made it an int.
        value = str(value)
    return value, problem


def value_for_notebook(name: str, value: Any) -> Any:
    """The value passed with ``-p``: a path inside the repository becomes repository-relative.

    The notebook resolves a relative path against the repository root
    (:func:`helpers.parameters.resolve_path`), so the injected-parameters cell of the
    rendered page reads ``data/chest_xray``, not the build machine's folders.

    Parameters
    ----------
    name : str
        The parameter.
    value : Any
        Its checked value.

    Returns
    -------
    Any
        The value, with a path of the book's path parameters (and a ``base_weights`` file)
        repository-relative when inside the repository.
    """
    spec = book_parameters.PARAMETERS.get(name)
    if spec is None or not isinstance(value, (str, os.PathLike)) or not str(value):
        return value
    if spec.kind == "path" or (
        name == "base_weights" and value not in book_parameters.BASE_WEIGHTS
    ):
        return book_parameters.display_path(value)
    return value


def describe_allowed(declared: Mapping[str, Mapping[str, Parameter]]) -> str:
    """A table of allowed parameter names, their defaults and which notebooks declare them.

    Parameters
    ----------
    declared : mapping
        Notebook name to its declared parameters.

    Returns
    -------
    str
        One indented line per name, with the book's help where the name is one of
        :data:`helpers.parameters.PARAMETERS`.
    """
    names: dict[str, list[str]] = {}
    for notebook, params in declared.items():
        for name in params:
            names.setdefault(name, []).append(notebook)
    if not names:
        return "  (the selected notebooks declare no parameters)"
    lines = []
    for name in sorted(names):
        first = declared[names[name][0]][name]
        option = f" (or {PATH_OPTIONS[name]})" if name in PATH_OPTIONS else ""
        spec = book_parameters.PARAMETERS.get(name)
        help_text = f": {spec.help}" if spec else ""
        lines.append(
            f"  {name}{option}: {first.type_name}, default {first.default}"
            f"  [{', '.join(names[name])}]{help_text}"
        )
    return "\n".join(lines)


def _select(notebooks: Sequence[Chapter], only: Sequence[str]) -> list[Chapter]:
    by_name = {c.name: c for c in notebooks}
    by_stem = {Path(c.name).name: c for c in notebooks}
    selected, unknown = [], []
    for raw in only:
        key = raw[: -len(".ipynb")] if raw.endswith(".ipynb") else raw
        chapter = by_name.get(key) or by_stem.get(Path(key).name)
        if chapter is None:
            unknown.append(raw)
        elif chapter not in selected:
            selected.append(chapter)
    if unknown:
        allowed = ", ".join(c.name for c in notebooks) or "(the book has no notebooks)"
        raise ParameterError(
            f"--only: no notebook chapter named {', '.join(unknown)}.\n"
            f"Notebook chapters in the table of contents: {allowed}"
        )
    # Keep the book's order whatever order the names were given in.
    return [c for c in notebooks if c in selected]


def _environment_problems(
    declared: Mapping[str, Mapping[str, Parameter]],
    params: Mapping[str, Any],
    environ: Mapping[str, str],
) -> list[str]:
    """Problems with ``BOOK_*`` variables, found now rather than in every notebook."""
    unknown = book_parameters.unknown_book_variables(environ)
    overrides = ", ".join(s.env_name for s in book_parameters.PARAMETERS.values())
    problems = [
        f"  {name}: unknown environment variable; the overrides are {overrides}" for name in unknown
    ]
    names = {n for found in declared.values() for n in found} - set(params)
    for name in sorted(names & set(book_parameters.PARAMETERS)):
        spec = book_parameters.PARAMETERS[name]
        if spec.env_name not in environ:
            continue
        value, problem = spec.parse_env(environ[spec.env_name])
        if not problem:
            value, problem = spec.check(value)
        if problem:
            source = f"environment variable {spec.env_name}"
            problems.append("  " + book_parameters.describe_problem(name, value, source, problem))
    return problems


def plan_build(
    chapters: Sequence[Chapter],
    only: Sequence[str] | None = None,
    params: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Plan:
    """Select the notebooks and check every parameter, before anything runs.

    Parameters
    ----------
    chapters : sequence of Chapter
        The book's chapters (:func:`helpers.book.toc.find_chapters`).
    only : sequence of str, optional
        Notebook names to execute (``"model_1"``; a ``.ipynb`` suffix or folder prefix is
        ignored). All notebooks when None.
    params : mapping, optional
        Parameter name to value (already parsed). Each notebook is passed the ones its
        ``parameters`` cell declares; every name must be declared by at least one
        selected notebook. Paths inside the repository are passed repository-relative.
    environ : mapping, optional
        The environment whose ``BOOK_*`` variables the notebooks will see
        (``os.environ`` by default); checked here by the same rules.

    Returns
    -------
    Plan

    Raises
    ------
    ParameterError
        Unknown chapter or parameter names, unknown ``BOOK_*`` variables, or impossible
        values; the message lists what is allowed.
    """
    params = dict(params or {})
    environ = os.environ if environ is None else environ
    notebooks = [c for c in chapters if c.is_notebook]
    selected = _select(notebooks, only) if only else notebooks

    declared = {c.name: declared_parameters(c.path) for c in selected}
    known = {name for found in declared.values() for name in found}
    unknown_params = sorted(set(params) - known)
    if unknown_params:
        raise ParameterError(
            f"unknown parameter{'s' if len(unknown_params) > 1 else ''} "
            f"{', '.join(unknown_params)}: no selected notebook declares "
            f"{'them' if len(unknown_params) > 1 else 'it'}.\n"
            f"Allowed parameters:\n{describe_allowed(declared)}"
        )

    problems = []
    per_notebook: dict[str, dict[str, Any]] = {}
    for chapter in selected:
        passed = {}
        for name, value in params.items():
            if name in declared[chapter.name]:
                value, problem = check_declared_value(declared[chapter.name][name], value)
                if problem and not any(p.startswith(f"  {name} ") for p in problems):
                    option = PATH_OPTIONS.get(name, f"-p {name}")
                    problems.append(
                        "  " + book_parameters.describe_problem(name, value, option, problem)
                    )
                passed[name] = value_for_notebook(name, value)
        per_notebook[chapter.name] = passed
    problems += _environment_problems(declared, params, environ)
    if problems:
        raise ParameterError(
            "impossible parameter values:\n"
            + "\n".join(problems)
            + f"\nAllowed parameters:\n{describe_allowed(declared)}"
        )
    return Plan(list(chapters), selected, per_notebook)


#: What a path parameter whose default is None means in the chapters (their parameters
#: cells say so): the embedded data, and results/ at the repository root.
BOOK_PATHS: dict[str, Path] = {
    "data_dir": config.DEFAULT_DATA_DIR,
    "results_dir": config.DEFAULT_RESULTS_DIR,
}


def _book_value(name: str, value: Any) -> Any:
    """A value as the book means it: a path parameter resolved (None: its book folder)."""
    spec = book_parameters.PARAMETERS.get(name)
    if name in BOOK_PATHS or (spec is not None and spec.kind == "path"):
        if value is None:
            return BOOK_PATHS.get(name)
        return book_parameters.resolve_path(value)
    return value


def differences_from_the_book(plan: Plan) -> dict[str, Any]:
    """The parameters of a build that differ from the notebooks' own defaults.

    The book is the run of every notebook with the defaults of its ``parameters`` cell;
    a build passed other values (an exercise's ``-p epochs 1``, a ``--results-dir`` of
    its own) is an experiment, which :mod:`helpers.book.cli` builds apart from the book.

    Parameters
    ----------
    plan : Plan
        The checked plan (:func:`plan_build`).

    Returns
    -------
    dict
        Name to the value passed, for each parameter that some selected notebook is
        passed with another value than its default (paths compared once resolved, so
        ``--results-dir results`` is the book's own folder); empty for the book's run.
    """
    differences = {}
    for chapter in plan.selected:
        passed = plan.parameters.get(chapter.name, {})
        declared = declared_parameters(chapter.path) if passed else {}
        for name, value in passed.items():
            try:
                default = ast.literal_eval(declared[name].default)
            except (ValueError, SyntaxError):  # an expression: any value passed differs
                differences[name] = value
                continue
            if _book_value(name, value) != _book_value(name, default):
                differences[name] = value
    return differences
