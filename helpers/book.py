"""Build the course book: execute every notebook once, then render the executed copies.

``python -m helpers.book`` (``make book`` sets up the venv first and then runs it):

1. reads the table of contents (``_toc.yml``) to find the chapters, in order;
2. checks every parameter against the ``parameters`` cells of the selected notebooks
   *before* any notebook runs (unknown names and impossible values are rejected, with the
   list of what is allowed);
3. copies the book source (``book/``) to ``_build/executed/`` and executes each selected
   notebook there with papermill, with one shared set of parameters, printing one line per
   notebook with its wall time; source notebooks are only read, never written;
4. renders ``_build/executed/`` with jupyter-book, notebook execution switched off, into
   ``_build/html/``; warnings and broken references fail the build.

``jupyter-book build book`` (run from the repository root) is the other way to build: it
uses the same ``_config.yml`` and executes the notebooks itself, with their defaults.

Every function takes its folders as arguments so that the tests can build a small book
from fixture notebooks in a temporary folder (see :func:`build_book`).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TextIO

import yaml

from helpers.config import ON_BAD_IMAGE, STRATEGIES

#: The repository root (the folder holding ``helpers/``, ``_config.yml`` and ``_toc.yml``).
REPO_ROOT = Path(__file__).resolve().parent.parent
#: The book's source folder: pages and notebooks.
SOURCE_DIR = REPO_ROOT / "book"
#: jupyter-book configuration; its ``execute`` section is overridden when rendering.
CONFIG_PATH = REPO_ROOT / "_config.yml"
#: Table of contents; entries are relative to :data:`SOURCE_DIR`.
TOC_PATH = REPO_ROOT / "_toc.yml"
#: The folder that receives ``_build/`` (like ``jupyter-book build --path-output``).
OUTPUT_DIR = REPO_ROOT
#: The venv's own kernelspec, so the notebooks run with the packages the runner sees.
KERNEL_NAME = "python3"

#: Command-line options that are shorthands for notebook parameters.
PATH_OPTIONS: dict[str, str] = {"data_dir": "--data-dir", "results_dir": "--results-dir"}

# Where, inside ``<output>/_build/``, the executed copy of the source and the HTML go.
EXECUTED_SUBDIR = "executed"
HTML_SUBDIR = "html"
# Records, per notebook, the inputs and outcome of its last run (beside executed/, which
# is recreated by every build), so that unchanged chapters are re-used.
STATE_FILE = "runner-state.json"

# Folders and files never copied from the source (jupyter-book excludes the same ones).
_IGNORED = shutil.ignore_patterns("_build", ".ipynb_checkpoints", "Thumbs.db", ".DS_Store")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# --------------------------------------------------------------------------------------
# Errors


class BookError(Exception):
    """A build failure, with a message meant for the person running the build."""

    exit_code = 1


class ParameterError(BookError):
    """Bad parameters or chapter names: reported before any notebook runs."""

    exit_code = 2


class NotebookFailed(BookError):
    """A notebook raised; the message names the notebook and the failing cell."""


class RenderFailed(BookError):
    """jupyter-book reported warnings, broken references or errors."""


# --------------------------------------------------------------------------------------
# Chapters and parameters


@dataclass(frozen=True)
class Chapter:
    """One entry of the table of contents.

    Attributes
    ----------
    name : str
        The docname, relative to the source folder and without suffix (``"model_1"``).
    path : Path
        The source file (``.ipynb`` or ``.md``).
    """

    name: str
    path: Path

    @property
    def is_notebook(self) -> bool:
        """Whether the chapter is a notebook (and so is executed)."""
        return self.path.suffix == ".ipynb"


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


def read_toc(toc_path: Path) -> list[str]:
    """Return the docnames of a jupyter-book table of contents, in reading order.

    Parameters
    ----------
    toc_path : Path
        A ``_toc.yml`` in the ``jb-book`` or ``jb-article`` format.

    Returns
    -------
    list of str
        Docnames relative to the source folder, root first.
    """
    from sphinx_external_toc.api import FileItem, GlobItem
    from sphinx_external_toc.parsing import MalformedError, parse_toc_yaml

    try:
        site_map = parse_toc_yaml(toc_path)
    except (OSError, MalformedError) as exc:
        raise BookError(f"cannot read the table of contents {toc_path}: {exc}") from exc

    names: list[str] = []

    def walk(docname: str) -> None:
        names.append(docname)
        for subtree in site_map[docname].subtrees:
            for item in subtree.items:
                if isinstance(item, GlobItem):
                    # A glob would let a stray notebook into the book unnoticed.
                    raise BookError(f"{toc_path}: glob entries are not supported: {item}")
                if isinstance(item, FileItem):
                    walk(str(item))

    walk(site_map.root.docname)
    return names


def find_chapters(source_dir: Path, toc_path: Path) -> list[Chapter]:
    """Map the table of contents to source files.

    Parameters
    ----------
    source_dir : Path
        The book's source folder; toc entries are relative to it.
    toc_path : Path
        The table of contents.

    Returns
    -------
    list of Chapter
        One per toc entry, in order.

    Raises
    ------
    BookError
        If an entry has no ``.ipynb`` or ``.md`` file.
    """
    chapters = []
    for name in read_toc(toc_path):
        for suffix in (".ipynb", ".md"):
            path = source_dir / f"{name}{suffix}"
            if path.is_file():
                chapters.append(Chapter(name, path))
                break
        else:
            raise BookError(
                f"{toc_path} lists '{name}' but neither {name}.ipynb nor {name}.md "
                f"exists in {source_dir}"
            )
    return chapters


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
                pass  # an expression such as config.EPOCHS: type unknown
            else:
                type_name = "None" if literal is None else type(literal).__name__
        found[name] = Parameter(name, default, type_name, str(info.get("help") or ""))
    return found


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


def _positive_int(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return "a whole number of at least 1"
    return None


def _non_negative_int(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return "a whole number of at least 0"
    return None


def _fraction(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        return "a number strictly between 0 and 1"
    return None


def _rate(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        return "a number above 0 and at most 1"
    return None


def _existing_dir(value: Any) -> str | None:
    if value is None or not Path(str(value)).is_dir():
        return "an existing folder"
    return None


def _data_folder(value: Any) -> str | None:
    problem = _existing_dir(value)
    if problem:
        return problem + " in the Kaggle layout (train/, val/, test/, each with NORMAL/ and PNEUMONIA/)"
    from helpers.data import DataError, check_data_dir

    try:
        check_data_dir(value)
    except DataError as error:
        return f"a folder in the Kaggle layout ({error})"
    return None


def _weights(value: Any) -> str | None:
    if value in (None, "imagenet", "none") or Path(str(value)).expanduser().is_file():
        return None
    return "'imagenet', None, or an existing MobileNetV2 weights file"


def _not_a_file(value: Any) -> str | None:
    if value is None or Path(str(value)).is_file():
        return "a folder path (it need not exist yet), not a file"
    return None


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in choices else "one of " + ", ".join(map(repr, choices))

    return check


#: Value rules for parameter names the course uses; a rule applies only where a notebook
#: declares the name. Each returns None when the value is fine, else what is expected.
RULES: dict[str, Callable[[Any], str | None]] = {
    "data_dir": _data_folder,
    "results_dir": _not_a_file,
    "epochs": _positive_int,
    "batch_size": _positive_int,
    "image_size": _positive_int,
    "seed": _non_negative_int,
    "val_fraction": _fraction,
    "target_sensitivity": _rate,
    "color_mode": _one_of("rgb", "grayscale"),
    "on_bad_image": _one_of(*ON_BAD_IMAGE),
    "strategy": _one_of(*STRATEGIES),
    "base_weights": _weights,
    "ablation_epochs": _non_negative_int,
    "ablation_image_size": _positive_int,
}


def check_value(parameter: Parameter, value: Any) -> tuple[Any, str | None]:
    """Check a value against a declared parameter's type and the value rules.

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
    if problem is None and parameter.name in RULES:
        problem = RULES[parameter.name](value)
    return value, problem


def _describe_allowed(declared: Mapping[str, Mapping[str, Parameter]]) -> str:
    """A table of allowed parameter names, their defaults and who declares them."""
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
        lines.append(
            f"  {name}{option}: {first.type_name}, default {first.default}"
            f"  [{', '.join(names[name])}]"
        )
    return "\n".join(lines)


def plan_build(
    chapters: Sequence[Chapter],
    only: Sequence[str] | None = None,
    params: Mapping[str, Any] | None = None,
) -> Plan:
    """Select the notebooks and check every parameter, before anything runs.

    Parameters
    ----------
    chapters : sequence of Chapter
        The book's chapters (:func:`find_chapters`).
    only : sequence of str, optional
        Notebook names to execute (``"model_1"``; a ``.ipynb`` suffix or folder prefix is
        ignored). All notebooks when None.
    params : mapping, optional
        Parameter name to value (already parsed). Each notebook is passed the ones its
        ``parameters`` cell declares; every name must be declared by at least one
        selected notebook.

    Returns
    -------
    Plan

    Raises
    ------
    ParameterError
        Unknown chapter or parameter names, or impossible values; the message lists
        what is allowed.
    """
    params = dict(params or {})
    notebooks = [c for c in chapters if c.is_notebook]
    if only:
        by_name = {c.name: c for c in notebooks}
        by_stem = {Path(c.name).name: c for c in notebooks}
        selected = []
        unknown = []
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
        selected = [c for c in notebooks if c in selected]
    else:
        selected = notebooks

    declared = {c.name: declared_parameters(c.path) for c in selected}
    known = {name for found in declared.values() for name in found}
    unknown_params = sorted(set(params) - known)
    if unknown_params:
        raise ParameterError(
            f"unknown parameter{'s' if len(unknown_params) > 1 else ''} "
            f"{', '.join(unknown_params)}: no selected notebook declares "
            f"{'them' if len(unknown_params) > 1 else 'it'}.\n"
            f"Allowed parameters:\n{_describe_allowed(declared)}"
        )

    problems = []
    per_notebook: dict[str, dict[str, Any]] = {}
    for chapter in selected:
        passed = {}
        for name, value in params.items():
            if name in declared[chapter.name]:
                value, problem = check_value(declared[chapter.name][name], value)
                if problem and not any(p.startswith(f"  {name} ") for p in problems):
                    option = PATH_OPTIONS.get(name, f"-p {name}")
                    problems.append(f"  {name} = {value!r} ({option}): expected {problem}")
                passed[name] = value
        per_notebook[chapter.name] = passed
    if problems:
        raise ParameterError(
            "impossible parameter values:\n"
            + "\n".join(problems)
            + f"\nAllowed parameters:\n{_describe_allowed(declared)}"
        )
    return Plan(list(chapters), selected, per_notebook)


# --------------------------------------------------------------------------------------
# Execution


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _load_state(state_path: Path) -> dict[str, Any]:
    try:
        state = json.loads(state_path.read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _save_state(state_path: Path, state: Mapping[str, Any]) -> None:
    from helpers.results import atomic_write_text

    atomic_write_text(state_path, json.dumps(state, indent=1, default=str, sort_keys=True))


#: The package whose code the notebooks run; a change to it makes every chapter stale.
CODE_DIR = REPO_ROOT / "helpers"
#: Environment variables that change what a notebook computes.
_ENV_INPUTS = ("TF_ENABLE_ONEDNN_OPTS", "CHEST_XRAY_DATA_DIR", "KERAS_BACKEND")


def code_fingerprint(code_dir: Path = CODE_DIR) -> str:
    """SHA-256 of every ``.py`` file of a package (names and contents)."""
    digest = hashlib.sha256()
    for path in sorted(Path(code_dir).rglob("*.py")):
        digest.update(path.relative_to(code_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def environment_fingerprint() -> str:
    """SHA-256 of the environment variables that change what the notebooks compute."""
    from helpers.chapter import OTHER_BOOK_VARIABLES

    names = sorted(
        n for n in os.environ
        if n in _ENV_INPUTS or (n.startswith("BOOK_") and n not in OTHER_BOOK_VARIABLES)
    )
    return _sha256_text(json.dumps({n: os.environ[n] for n in names}, sort_keys=True))


def uses_results_of(chapter: Chapter) -> list[str]:
    """The chapters whose results a notebook reads (its metadata ``book.uses_results_of``)."""
    if not chapter.is_notebook:
        return []
    metadata = json.loads(chapter.path.read_text(encoding="utf-8")).get("metadata", {})
    return list(metadata.get("book", {}).get("uses_results_of", []))


def _declared_value(chapter: Chapter, name: str, parameters: Mapping[str, Any]) -> Any:
    if name in parameters:
        return parameters[name]
    declared = declared_parameters(chapter.path).get(name)
    if declared is None:
        return None
    try:
        return ast.literal_eval(declared.default)
    except (ValueError, SyntaxError):
        return None


def _notebook_path(chapter: Chapter, value: Any, default: Path) -> Path:
    if value in (None, ""):
        return default
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else (chapter.path.parent / path).resolve()


def result_files(chapter: Chapter, parameters: Mapping[str, Any]) -> list[Path]:
    """Files a chapter leaves for later chapters: ``<results_dir>/<name>/metrics.json``."""
    from helpers import config

    if "results_dir" not in declared_parameters(chapter.path):
        return []
    value = os.environ.get("BOOK_RESULTS_DIR") or _declared_value(chapter, "results_dir", parameters)
    folder = _notebook_path(chapter, value, config.DEFAULT_RESULTS_DIR)
    return [folder / Path(chapter.name).name / "metrics.json"]


@dataclass
class Decision:
    """What the build does with one notebook, and why.

    Attributes
    ----------
    action : {"execute", "reuse", "leave out"}
    reason : str
        For the progress line (``"notebook changed"``, ``"unchanged since ..."``).
    inputs : dict
        Fingerprints of everything the notebook's output depends on.
    """

    action: str
    reason: str
    inputs: dict[str, str]


_INPUT_NAMES = {
    "notebook": "notebook changed",
    "parameters": "parameters changed",
    "data": "data changed",
    "code": "helpers code changed",
    "environment": "environment changed",
    "upstream": "a chapter it reads results of changed",
}


def chapter_inputs(
    chapter: Chapter,
    parameters: Mapping[str, Any],
    *,
    code_hash: str,
    env_hash: str,
    upstream_keys: Mapping[str, str],
    data_cache: dict[str, str],
) -> dict[str, str]:
    """Fingerprints of what a notebook's executed copy depends on (like jupyter-cache's key).

    The notebook's source, the parameters it is passed, the data folder it reads (file
    names, sizes and times), the ``helpers`` code, the environment variables that change
    results, and the keys of the chapters whose results it reads.
    """
    from helpers import config
    from helpers.data import data_fingerprint

    inputs = {
        "notebook": _sha256(chapter.path),
        "parameters": _sha256_text(json.dumps(dict(parameters), sort_keys=True, default=str)),
        "code": code_hash,
        "environment": env_hash,
        "upstream": _sha256_text(json.dumps(
            {name: upstream_keys.get(name, "missing") for name in uses_results_of(chapter)},
            sort_keys=True,
        )),
    }
    if "data_dir" in declared_parameters(chapter.path):
        value = os.environ.get("BOOK_DATA_DIR") or _declared_value(chapter, "data_dir", parameters)
        folder = str(_notebook_path(chapter, value, config.data_dir_from_env()))
        if folder not in data_cache:
            data_cache[folder] = data_fingerprint(folder)
        inputs["data"] = data_cache[folder]
    return inputs


def _key(inputs: Mapping[str, str]) -> str:
    return _sha256_text(json.dumps(dict(inputs), sort_keys=True))


def decide(
    plan: Plan,
    state: Mapping[str, Any],
    executed_dir: Path,
    source_dir: Path,
    *,
    force: bool = False,
    code_dir: Path = CODE_DIR,
) -> dict[str, Decision]:
    """Decide, for every notebook of the book, whether to execute, re-use or leave it out.

    A notebook is re-used when its last run completed, its executed copy is still there,
    its result files are as that run left them, and none of its inputs
    (:func:`chapter_inputs`) changed; otherwise it is stale. Selected stale notebooks are
    executed (all selected ones with ``force``); a stale notebook that is not selected
    (``--only``) is left out of the rendered book rather than shown with old numbers.
    """
    code_hash, env_hash = code_fingerprint(code_dir), environment_fingerprint()
    selected = {c.name for c in plan.selected}
    keys: dict[str, str] = {}
    runs_again: set[str] = set()
    data_cache: dict[str, str] = {}
    decisions: dict[str, Decision] = {}
    for chapter in plan.chapters:
        if not chapter.is_notebook:
            continue
        # A chapter outside --only keeps the parameters of its last run; a selected one gets
        # this build's (an empty set means the notebook's defaults, which differ from -p ...).
        params = (
            plan.parameters[chapter.name] if chapter.name in selected
            else state.get(chapter.name, {}).get("parameters", {})
        )
        inputs = chapter_inputs(
            chapter, params, code_hash=code_hash, env_hash=env_hash, upstream_keys=keys,
            data_cache=data_cache,
        )
        keys[chapter.name] = _key(inputs)
        record = state.get(chapter.name, {})
        executed = executed_dir / chapter.path.relative_to(source_dir)
        stale = _staleness(record, inputs, executed)
        upstream_again = [n for n in uses_results_of(chapter) if n in runs_again]
        if upstream_again and (stale is None or stale.startswith(_INPUT_NAMES["upstream"])):
            stale = f"{', '.join(upstream_again)} runs again"
        if chapter.name in selected:
            if force:
                action, reason = "execute", "--force"
            elif stale is None:
                action, reason = "reuse", f"unchanged since {record.get('finished', '?')}"
            else:
                action, reason = "execute", stale
        else:
            action = "reuse" if stale is None else "leave out"
            reason = (
                f"kept from the run of {record.get('finished', '?')}" if stale is None
                else f"stale ({stale}): left out of this build"
            )
        if action == "execute":
            runs_again.add(chapter.name)
        decisions[chapter.name] = Decision(action, reason, inputs)
    return decisions


def _staleness(record: Mapping[str, Any], inputs: Mapping[str, str], executed: Path) -> str | None:
    """Why an earlier run of a notebook can't be re-used, or None if it can."""
    if not record:
        return "never executed"
    if record.get("status") == "running":
        return f"its run of {record.get('started', '?')} was interrupted"
    if record.get("status") != "complete":
        return f"its last run {record.get('status', 'did not finish')}"
    changed = [text for name, text in _INPUT_NAMES.items()
               if record.get("inputs", {}).get(name) != inputs.get(name)]
    if changed:
        return ", ".join(changed)
    if not executed.is_file():
        return "its executed copy is missing"
    for path, digest in record.get("outputs", {}).items():
        if not Path(path).is_file() or _sha256(Path(path)) != digest:
            return f"its results file {path} changed or is missing"
    return None


def prepare_executed_dir(source_dir: Path, executed_dir: Path, keep: set[str], chapters: Sequence[Chapter]) -> None:
    """Copy the source to the executed folder, keeping the executed copies named in ``keep``."""
    kept: dict[str, bytes] = {}
    for chapter in chapters:
        if chapter.name in keep:
            kept[chapter.name] = (executed_dir / chapter.path.relative_to(source_dir)).read_bytes()
    if executed_dir.exists():
        shutil.rmtree(executed_dir)
    # symlinks=False: a linked _toc.yml or data file becomes a plain copy in the build.
    shutil.copytree(source_dir, executed_dir, ignore=_IGNORED, symlinks=False)
    for chapter in chapters:
        if chapter.name in kept:
            (executed_dir / chapter.path.relative_to(source_dir)).write_bytes(kept[chapter.name])


def _toc_without(toc: Any, names: set[str]) -> Any:
    """The toc with the entries ``file: <name>`` (with or without suffix) removed."""
    if isinstance(toc, list):
        kept = [_toc_without(entry, names) for entry in toc]
        return [entry for entry in kept if entry is not None]
    if isinstance(toc, dict):
        file = toc.get("file")
        if file is not None and Path(str(file)).with_suffix("").name in names and "sections" not in toc:
            return None
        return {key: _toc_without(value, names) for key, value in toc.items()}
    return toc


def _strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def _failure_message(name: str, source: Path, executed: Path, exc: BaseException) -> str:
    """Describe a failed notebook: which cell (numbered as in the source), what raised."""
    import nbformat
    from papermill.exceptions import PapermillExecutionError

    cells = []
    try:
        cells = nbformat.read(str(executed), as_version=4).cells
    except Exception:  # noqa: BLE001 - the notebook may not have been written at all
        pass
    # papermill adds red "an exception was raised" cells after the failure; the cell index
    # of its error counts the cells as they were while executing.
    cells = [c for c in cells if "papermill-error-cell-tag" not in c.metadata.get("tags", [])]
    injected = [
        i for i, c in enumerate(cells) if "injected-parameters" in c.metadata.get("tags", [])
    ]

    index = getattr(exc, "cell_index", None)
    if index is None:
        # Timeouts and dead kernels carry no cell index: papermill marks the cell it was
        # running in the output notebook.
        for i, cell in enumerate(cells):
            if cell.metadata.get("papermill", {}).get("status") in ("running", "failed"):
                index = i
                break
    cell_source = getattr(exc, "source", None)
    if not cell_source and index is not None and 0 <= index < len(cells):
        cell_source = cells[index].source
    cell_source = cell_source or ""
    if isinstance(exc, PapermillExecutionError):
        error = f"{exc.ename}: {_strip_ansi(str(exc.evalue))}"
    else:
        error = f"{type(exc).__name__}: {_strip_ansi(str(exc)).strip()}"

    lines = [f"notebook {name} ({source}) failed"]
    if index is not None:
        # Number the cell as the source notebook does: papermill inserted a cell.
        source_index = index - sum(1 for i in injected if i < index)
        total = len(cells) - len(injected) if cells else None
        of = f" of {total}" if total else ""
        count = getattr(exc, "exec_count", None)
        run = f", In [{count}]" if count else ""
        lines.append(f"  failing cell: cell {source_index + 1}{of} (index {source_index}{run})")
        snippet = cell_source.splitlines()
        for line in snippet[:6]:
            lines.append(f"    | {line}")
        if len(snippet) > 6:
            lines.append(f"    | ... ({len(snippet) - 6} more lines)")
    lines.append(f"  error: {error.splitlines()[0] if error else type(exc).__name__}")
    for extra in error.splitlines()[1:4]:
        lines.append(f"         {extra}")
    lines.append(f"  executed copy with the full traceback: {executed}")
    return "\n".join(lines)


def _quiet_kernel_manager(log_path: Path) -> type:
    """A kernel manager class whose kernel writes its own stderr to ``log_path``.

    The kernel process (not the notebook) logs start-up notices such as ipykernel's
    "Kernel is running over TCP without encryption" to the terminal, between the progress
    lines; the log file keeps them for a failure report instead.
    """
    from jupyter_client.manager import AsyncKernelManager

    class LoggedKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kwargs: Any) -> None:  # type: ignore[override]
            with open(log_path, "ab") as log:
                # Popen duplicates the descriptor, so closing ours afterwards is safe.
                kwargs.setdefault("stderr", log)
                await super().start_kernel(**kwargs)

    return LoggedKernelManager


def execute_notebook(
    chapter: Chapter,
    source_dir: Path,
    executed_dir: Path,
    parameters: Mapping[str, Any],
    kernel_name: str = KERNEL_NAME,
) -> Path:
    """Execute one notebook with papermill into the executed folder.

    Parameters
    ----------
    chapter : Chapter
        The notebook (read only).
    source_dir, executed_dir : Path
        The source folder and its executed copy.
    parameters : mapping
        Values for (a subset of) the notebook's declared parameters.
    kernel_name : str
        The Jupyter kernel to run it with.

    Returns
    -------
    Path
        The executed notebook.

    Raises
    ------
    NotebookFailed
        With the notebook's name, the failing cell and the error.
    """
    import papermill

    output = executed_dir / chapter.path.relative_to(source_dir)
    kernel_log = output.with_suffix(".kernel.log")
    try:
        papermill.execute_notebook(
            str(chapter.path),
            str(output),
            parameters=dict(parameters),
            kernel_name=kernel_name,
            # The source folder, not the copy: relative paths then resolve as they do in
            # Jupyter, nbval and `jupyter-book build book`.
            cwd=str(chapter.path.parent),
            progress_bar=False,
            log_output=False,
            kernel_manager_class=_quiet_kernel_manager(kernel_log),
        )
    except Exception as exc:  # noqa: BLE001 - every failure becomes a named report
        message = _failure_message(chapter.name, chapter.path, output, exc)
        if kernel_log.is_file() and kernel_log.stat().st_size:
            message += f"\n  the kernel's own log: {kernel_log}"
        raise NotebookFailed(message) from exc
    return output


# --------------------------------------------------------------------------------------
# Rendering


def write_render_config(config_path: Path, destination: Path) -> Path:
    """Write a copy of the jupyter-book config with notebook execution switched off.

    Parameters
    ----------
    config_path : Path
        The book's ``_config.yml``.
    destination : Path
        Where to write the copy.

    Returns
    -------
    Path
        ``destination``.
    """
    config = yaml.safe_load(config_path.read_text()) or {}
    execute = config.setdefault("execute", {}) or {}
    config["execute"] = execute
    # The notebooks were executed by papermill: jupyter-book must only render them.
    execute["execute_notebooks"] = "off"
    destination.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return destination


def render(
    executed_dir: Path,
    output_dir: Path,
    config_path: Path,
    toc_path: Path,
    verbose: bool = False,
) -> Path:
    """Render the executed copy with jupyter-book into ``<output_dir>/_build/html``.

    Runs ``jupyter-book build`` in a subprocess with ``-W -n --keep-going --all``, so that
    every warning and broken reference fails the build and no page is left from an
    earlier build.

    Parameters
    ----------
    executed_dir : Path
        The executed copy of the source.
    output_dir : Path
        The folder that receives ``_build/html``.
    config_path, toc_path : Path
        The book's config and table of contents.
    verbose : bool
        Print jupyter-book's whole output.

    Returns
    -------
    Path
        The HTML folder.

    Raises
    ------
    RenderFailed
        With jupyter-book's warnings and errors.
    """
    html_dir = output_dir / "_build" / HTML_SUBDIR
    # Stale pages (a chapter since removed from the toc) must not survive in the HTML.
    for stale in (html_dir, output_dir / "_build" / ".doctrees"):
        if stale.exists():
            shutil.rmtree(stale)
    render_config = write_render_config(config_path, executed_dir / "_config.yml")
    render_toc = executed_dir / "_toc.yml"
    if render_toc.resolve() != toc_path.resolve():
        shutil.copyfile(toc_path, render_toc)
    command = [
        sys.executable,
        "-c",
        "from jupyter_book.cli.main import main; main()",
        "build",
        str(executed_dir),
        "--path-output",
        str(output_dir),
        "--config",
        str(render_config),
        "--toc",
        str(render_toc),
        "--builder",
        "html",
        "-W",
        "-n",
        "--keep-going",
        "--all",
    ]
    result = subprocess.run(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False
    )
    log = _strip_ansi(result.stdout)
    if verbose:
        print(log)
    problems = [
        line for line in log.splitlines() if re.search(r"\b(WARNING|ERROR|CRITICAL)\b", line)
    ]
    if result.returncode != 0 or problems:
        detail = "\n".join(f"  {line}" for line in problems) or "\n".join(
            f"  {line}" for line in log.splitlines()[-30:]
        )
        raise RenderFailed(
            f"jupyter-book failed to render {executed_dir} (exit {result.returncode}); "
            f"warnings and broken references count as failures:\n{detail}"
        )
    if not (html_dir / "index.html").is_file():
        raise RenderFailed(f"jupyter-book wrote no {html_dir / 'index.html'}")
    return html_dir


# --------------------------------------------------------------------------------------
# The whole build


def build_book(
    source_dir: Path = SOURCE_DIR,
    output_dir: Path = OUTPUT_DIR,
    config_path: Path = CONFIG_PATH,
    toc_path: Path = TOC_PATH,
    only: Sequence[str] | None = None,
    params: Mapping[str, Any] | None = None,
    kernel_name: str = KERNEL_NAME,
    verbose: bool = False,
    out: TextIO | None = None,
    force: bool = False,
    code_dir: Path = CODE_DIR,
) -> Path:
    """Execute the book's stale notebooks with papermill, then render them with jupyter-book.

    Parameters
    ----------
    source_dir : Path
        The book's pages and notebooks (never modified).
    output_dir : Path
        Receives ``_build/executed/`` (the executed copy) and ``_build/html/``.
    config_path, toc_path : Path
        ``_config.yml`` and ``_toc.yml``; toc entries are relative to ``source_dir``.
    only : sequence of str, optional
        Consider only these notebooks (by name, ``"model_1"``) for execution. The others
        keep an earlier run's executed copy when still valid, else are left out.
    params : mapping, optional
        Parameter name to value, shared by all notebooks; each notebook gets those its
        ``parameters`` cell declares. Path parameters should be absolute: notebooks run
        in their own folder.
    kernel_name : str
        The Jupyter kernel.
    verbose : bool
        Print jupyter-book's whole output.
    out : text stream, optional
        Where progress lines go (standard output by default).
    force : bool
        Execute every selected notebook, even those whose inputs did not change.
    code_dir : Path
        The package whose code the notebooks run (its hash is one of their inputs).

    Returns
    -------
    Path
        ``<output_dir>/_build/html/index.html``.

    Raises
    ------
    ParameterError
        Before anything runs, for unknown names or impossible values.
    NotebookFailed
        When a notebook raises; nothing is rendered.
    RenderFailed
        When jupyter-book warns or fails.
    """
    out = out or sys.stdout
    source_dir, output_dir = Path(source_dir).resolve(), Path(output_dir).resolve()
    config_path, toc_path = Path(config_path).resolve(), Path(toc_path).resolve()
    chapters = find_chapters(source_dir, toc_path)
    plan = plan_build(chapters, only, params)

    executed_dir = output_dir / "_build" / EXECUTED_SUBDIR
    state_path = output_dir / "_build" / STATE_FILE
    state = _load_state(state_path)
    decisions = decide(plan, state, executed_dir, source_dir, force=force, code_dir=code_dir)
    prepare_executed_dir(
        source_dir, executed_dir, {n for n, d in decisions.items() if d.action == "reuse"}, chapters
    )
    # The kernels inherit this: it silences TensorFlow's C++ INFO and WARNING lines
    # (stderr is also removed from the HTML by the config, for the lines it misses).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    width = max((len(c.name) for c in chapters), default=10) + 2
    for chapter in plan.chapters:
        decision = decisions.get(chapter.name)
        if decision is None:
            continue
        if decision.action != "execute":
            word = "re-used" if decision.action == "reuse" else "left out"
            print(f"{chapter.name:<{width}} {word:<9} {'':>9}  {decision.reason}", file=out, flush=True)
            continue
        parameters = plan.parameters[chapter.name]
        state[chapter.name] = {
            "status": "running", "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "inputs": decision.inputs, "parameters": parameters,
        }
        _save_state(state_path, state)
        start = time.perf_counter()
        try:
            execute_notebook(chapter, source_dir, executed_dir, parameters, kernel_name)
        except NotebookFailed:
            state[chapter.name]["status"] = "failed"
            _save_state(state_path, state)
            print(
                f"{chapter.name:<{width}} FAILED    {time.perf_counter() - start:7.1f} s",
                file=out,
                flush=True,
            )
            raise
        seconds = time.perf_counter() - start
        state[chapter.name].update(
            status="complete",
            finished=time.strftime("%Y-%m-%d %H:%M:%S"),
            seconds=round(seconds, 1),
            outputs={str(f): _sha256(f) for f in result_files(chapter, parameters) if f.is_file()},
        )
        _save_state(state_path, state)
        print(
            f"{chapter.name:<{width}} executed  {seconds:7.1f} s  ({decision.reason})",
            file=out, flush=True,
        )

    start = time.perf_counter()
    left_out = {name for name, d in decisions.items() if d.action == "leave out"}
    render_toc = toc_path
    if left_out:
        render_toc = executed_dir / "_toc.render.yml"
        render_toc.write_text(yaml.safe_dump(_toc_without(yaml.safe_load(toc_path.read_text()), left_out), sort_keys=False))
    html_dir = render(executed_dir, output_dir, config_path, render_toc, verbose=verbose)
    pages = len(plan.chapters) - len(left_out)
    print(
        f"{'(rendering)':<{width}} rendered  {time.perf_counter() - start:7.1f} s"
        f"  {pages} page{'s' if pages != 1 else ''} -> {html_dir / 'index.html'}",
        file=out,
        flush=True,
    )
    return html_dir / "index.html"


def book_status(
    source_dir: Path = SOURCE_DIR,
    output_dir: Path = OUTPUT_DIR,
    toc_path: Path = TOC_PATH,
    params: Mapping[str, Any] | None = None,
    out: TextIO | None = None,
    code_dir: Path = CODE_DIR,
) -> dict[str, Decision]:
    """Print, for every notebook, whether its last run is up to date or stale, and why."""
    out = out or sys.stdout
    source_dir, output_dir = Path(source_dir).resolve(), Path(output_dir).resolve()
    chapters = find_chapters(source_dir, Path(toc_path).resolve())
    plan = plan_build(chapters, None, params)
    state = _load_state(output_dir / "_build" / STATE_FILE)
    decisions = decide(plan, state, output_dir / "_build" / EXECUTED_SUBDIR, source_dir, code_dir=code_dir)
    width = max((len(c.name) for c in chapters), default=10) + 2
    for name, decision in decisions.items():
        if decision.action == "reuse":
            seconds = state.get(name, {}).get("seconds", "?")
            line = f"up to date  ({decision.reason}, {seconds} s)"
        else:
            line = f"stale       ({decision.reason})"
        print(f"{name:<{width}} {line}", file=out)
    return decisions


def list_chapters(chapters: Sequence[Chapter], out: TextIO | None = None) -> None:
    """Print each chapter and the parameters its notebook declares."""
    out = out or sys.stdout
    for chapter in chapters:
        if not chapter.is_notebook:
            print(f"{chapter.name}  (page)", file=out)
            continue
        print(f"{chapter.name}  (notebook)", file=out)
        for p in declared_parameters(chapter.path).values():
            option = f"  [{PATH_OPTIONS[p.name]}]" if p.name in PATH_OPTIONS else ""
            print(f"    {p.name}: {p.type_name} = {p.default}{option}", file=out)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m helpers.book",
        description=(
            "Build the course book. Every notebook listed in _toc.yml is executed with "
            "papermill into _build/executed/ (a copy of book/; the source notebooks are "
            "never modified), with one shared set of parameters, then jupyter-book renders "
            "the executed copies, without executing them again, into _build/html/. "
            "Open _build/html/index.html in a browser; no server or network is needed."
        ),
        epilog=(
            "Parameters: each notebook is passed only the parameters its cell tagged "
            "'parameters' declares. A name that no selected notebook declares, or an "
            "impossible value (a missing --data-dir, epochs 0, ...), is rejected before any "
            "notebook runs, with the list of allowed names (see --list). "
            "Exit status: 0 built; 1 a notebook failed (its name and failing cell are "
            "printed) or rendering reported a warning or broken reference; 2 bad arguments. "
            "`jupyter-book build book` from the repository root also builds the book; it "
            "executes the notebooks itself with their defaults."
        ),
    )
    parser.add_argument(
        "--data-dir",
        metavar="PATH",
        help="the chest X-ray data folder; passed as the parameter data_dir "
        "(default: each notebook's own default)",
    )
    parser.add_argument(
        "--results-dir",
        metavar="PATH",
        help="where models write their results; passed as the parameter results_dir "
        "(default: each notebook's own default)",
    )
    parser.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="set a notebook parameter; VALUE is parsed like papermill -p: True/False/None, "
        "an int, a float, else a string. Repeatable",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="execute only these notebooks (by name, e.g. model_1); the other chapters keep "
        "the executed copy of an earlier run if their source is unchanged, else are "
        "left out of this build",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="execute every selected notebook, even those whose notebook, parameters, data, "
        "helpers code and upstream results are unchanged since their last complete run "
        "(those are re-used otherwise)",
    )
    parser.add_argument(
        "--status",
        action="store_true",
        help="say which chapters are up to date and which are stale (and why), then exit",
    )
    parser.add_argument(
        "--list",
        action="store_true",
        help="list the chapters and the parameters each notebook declares, then exit",
    )
    parser.add_argument(
        "--kernel", default=KERNEL_NAME, help=f"Jupyter kernel name (default: {KERNEL_NAME})"
    )
    parser.add_argument(
        "--source-dir",
        type=Path,
        default=SOURCE_DIR,
        help="the book's source folder (default: book/)",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=OUTPUT_DIR,
        help="the folder that receives _build/ (default: the repository root)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=CONFIG_PATH,
        help="jupyter-book config (default: _config.yml)",
    )
    parser.add_argument(
        "--toc",
        type=Path,
        default=TOC_PATH,
        help="table of contents, entries relative to the source folder (default: _toc.yml)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="print jupyter-book's whole output"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (``sys.argv[1:]`` by default).

    Returns
    -------
    int
        0 on success, 1 for a failed notebook or render, 2 for bad arguments.
    """
    args = _parser().parse_args(argv)
    params: dict[str, Any] = {name: parse_value(value) for name, value in args.parameter}
    for name, option in PATH_OPTIONS.items():
        given = getattr(args, name)
        if given is not None:
            if name in params:
                print(f"error: give {name} either as {option} or -p {name}, not both",
                      file=sys.stderr)
                return 2
            # Absolute: the notebooks run in book/, not where this command was typed.
            params[name] = str(Path(given).expanduser().resolve())
    try:
        if args.list:
            list_chapters(find_chapters(args.source_dir.resolve(), args.toc.resolve()))
            return 0
        if args.status:
            book_status(args.source_dir, args.output_dir, args.toc, params)
            return 0
        build_book(
            source_dir=args.source_dir,
            output_dir=args.output_dir,
            config_path=args.config,
            toc_path=args.toc,
            only=args.only,
            params=params,
            kernel_name=args.kernel,
            verbose=args.verbose,
            force=args.force,
        )
    except BookError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
