"""Staleness: which notebooks must run again, from fingerprints of their inputs and a state file.

A notebook's executed copy is re-used when its last run completed, the copy is still there,
the results files it left are as it left them, and none of its inputs changed: the
notebook, the parameters it is passed, the data folder it reads, the modules of ``helpers``
it runs (those its code cells import, directly or through other ``helpers`` modules: see
:mod:`~helpers.book.imports`; the runner's own modules run no chapter), the environment
variables that change results, and the chapters whose results it reads
(``book.uses_results_of``) with, for a notebook that reads them (``book.uses_replicates``:
the comparison), those chapters' replicates. The record of each run is
``_build/runner-state.json``; it keeps the SHA-256 of each module the chapter ran, so
that a stale chapter is reported with the file that changed (``helpers/ablation.py changed``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers import config
from helpers import parameters as book_parameters

from .imports import CodeGraph, changed_modules, modules_run_by
from .plan import Plan, declared_default, declared_parameters
from .toc import Chapter, uses_replicates, uses_results_of

#: Records, per notebook, the inputs and outcome of its last run (beside executed/, which
#: is recreated by every build), so that unchanged chapters are re-used.
STATE_FILE = "runner-state.json"
#: The package whose code the notebooks run; a change to a module makes the chapters that
#: run it stale.
CODE_DIR = config.REPO_ROOT / "helpers"
#: Environment variables that change what a notebook computes (besides ``BOOK_*``).
ENV_INPUTS = ("TF_ENABLE_ONEDNN_OPTS", "KERAS_BACKEND")

_INPUT_NAMES = {
    "notebook": "notebook changed",
    "parameters": "parameters changed",
    "data": "data changed",
    "code": "helpers code changed",
    "environment": "environment changed",
    "upstream": "a chapter it reads results of changed",
}


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's bytes.

    Parameters
    ----------
    path : Path
        The file.

    Returns
    -------
    str
        Hex digest.
    """
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def load_state(state_path: Path) -> dict[str, Any]:
    """Read the state file.

    Parameters
    ----------
    state_path : Path
        ``_build/runner-state.json``.

    Returns
    -------
    dict
        Records by notebook name; empty when the file is missing or unreadable (every
        chapter is then stale, which is safe).
    """
    try:
        state = json.loads(Path(state_path).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def save_state(state_path: Path, state: Mapping[str, Any]) -> None:
    """Write the state file atomically (an interrupted build leaves the previous one).

    Parameters
    ----------
    state_path : Path
        ``_build/runner-state.json``.
    state : mapping
        Records by notebook name.
    """
    from helpers.files import atomic_write_text

    atomic_write_text(state_path, json.dumps(state, indent=1, default=str, sort_keys=True))


def code_fingerprint(code_files: Mapping[str, str]) -> str:
    """One SHA-256 for the modules a notebook runs.

    Parameters
    ----------
    code_files : mapping
        File label (``helpers/ablation.py``) to SHA-256
        (:meth:`~helpers.book.imports.CodeGraph.fingerprints`).

    Returns
    -------
    str
        Hex digest of the names and contents.
    """
    return _sha256_text(json.dumps(dict(code_files), sort_keys=True))


def environment_fingerprint(environ: Mapping[str, str] | None = None) -> str:
    """SHA-256 of the environment variables that change what the notebooks compute.

    Parameters
    ----------
    environ : mapping, optional
        The environment (``os.environ`` by default): ``BOOK_*`` overrides and
        :data:`ENV_INPUTS`.

    Returns
    -------
    str
        Hex digest.
    """
    environ = os.environ if environ is None else environ
    prefix, others = book_parameters.ENV_PREFIX, book_parameters.OTHER_BOOK_VARIABLES
    names = sorted(
        n for n in environ if n in ENV_INPUTS or (n.startswith(prefix) and n not in others)
    )
    return _sha256_text(json.dumps({n: environ[n] for n in names}, sort_keys=True))


def effective_value(chapter: Chapter, name: str, passed: Mapping[str, Any]) -> Any:
    """The value a notebook will use: passed with ``-p``, else ``BOOK_<NAME>``, else its default.

    The same precedence as :func:`helpers.parameters.check`: an explicit value is never
    replaced by an environment variable.

    Parameters
    ----------
    chapter : Chapter
        The notebook.
    name : str
        A parameter it declares.
    passed : mapping
        The parameters it is passed.

    Returns
    -------
    Any
        None when the default is not a literal (the notebook's default folder then applies).
    """
    if name in passed:
        return passed[name]
    spec = book_parameters.PARAMETERS.get(name)
    if spec is not None and spec.env_name in os.environ:
        return spec.parse_env(os.environ[spec.env_name])[0]
    return declared_default(chapter.path, name)


def _folder(value: Any, default: Path) -> Path:
    if value in (None, ""):
        return default
    return book_parameters.resolve_path(str(value))


def result_files(chapter: Chapter, parameters: Mapping[str, Any]) -> list[Path]:
    """Files a chapter leaves for later chapters: ``<results_dir>/<name>/metrics.json``.

    Parameters
    ----------
    chapter : Chapter
        A notebook; one that declares no ``results_dir`` leaves none.
    parameters : mapping
        The parameters it is passed.

    Returns
    -------
    list of Path
    """
    if "results_dir" not in declared_parameters(chapter.path):
        return []
    value = effective_value(chapter, "results_dir", parameters)
    folder = _folder(value, config.DEFAULT_RESULTS_DIR)
    return [folder / Path(chapter.name).name / "metrics.json"]


@dataclass
class Decision:
    """What the build does with one notebook, and why.

    Attributes
    ----------
    action : {"execute", "reuse", "adopt", "leave out"}
        ``"adopt"``: render a notebook executed elsewhere (``--executed-from``).
    reason : str
        For the progress line (``"notebook changed"``, ``"unchanged since ..."``).
    inputs : dict
        Fingerprints of everything the notebook's output depends on.
    code_files : dict
        The ``helpers`` modules it runs: file label (``helpers/ablation.py``) to SHA-256,
        recorded with its run so that a later status names the file that changed.
    """

    action: str
    reason: str
    inputs: dict[str, str]
    code_files: dict[str, str] = field(default_factory=dict)


def chapter_inputs(
    chapter: Chapter,
    parameters: Mapping[str, Any],
    *,
    code_files: Mapping[str, str],
    env_hash: str,
    upstream_keys: Mapping[str, str],
    data_cache: dict[str, str],
    replicate_names: Sequence[str] = (),
) -> dict[str, str]:
    """Fingerprints of what a notebook's executed copy depends on (like jupyter-cache's key).

    Parameters
    ----------
    chapter : Chapter
        The notebook.
    parameters : mapping
        The parameters it is passed.
    code_files : mapping
        The ``helpers`` modules it runs, file label to SHA-256
        (:meth:`~helpers.book.imports.CodeGraph.fingerprints`).
    env_hash : str
        :func:`environment_fingerprint`.
    upstream_keys : mapping
        Keys (:func:`input_key`) of the chapters decided so far.
    data_cache : dict
        Data folder to fingerprint, filled as folders are met (each is listed once).
    replicate_names : sequence of str
        The replicates whose results the notebook reads besides its chapters'
        (``model_1/seed_43``): their keys join the upstream fingerprint, so one more, one
        fewer or one run again makes the notebook stale.

    Returns
    -------
    dict
        ``notebook``, ``parameters``, ``code``, ``environment``, ``upstream`` and, for a
        notebook that declares ``data_dir``, ``data`` (file names, sizes and times; for a
        folder holding DICOM files, the person salt's hash too, the salt made if missing).
    """
    from helpers.data import data_fingerprint

    inputs = {
        "notebook": sha256_file(chapter.path),
        "parameters": _sha256_text(json.dumps(dict(parameters), sort_keys=True, default=str)),
        "code": code_fingerprint(code_files),
        "environment": env_hash,
        "upstream": _sha256_text(
            json.dumps(
                {
                    name: upstream_keys.get(name, "missing")
                    for name in [*uses_results_of(chapter), *replicate_names]
                },
                sort_keys=True,
            )
        ),
    }
    if "data_dir" in declared_parameters(chapter.path):
        value = effective_value(chapter, "data_dir", parameters)
        folder = str(_folder(value, config.DEFAULT_DATA_DIR))
        if folder not in data_cache:
            # make_salt: the record must hold the salt the chapters are about to use.
            data_cache[folder] = data_fingerprint(folder, make_salt=True)
        inputs["data"] = data_cache[folder]
    return inputs


def input_key(inputs: Mapping[str, str]) -> str:
    """One key for a set of input fingerprints.

    Parameters
    ----------
    inputs : mapping
        :func:`chapter_inputs`.

    Returns
    -------
    str
        Hex digest; a chapter that reads another's results includes that chapter's key.
    """
    return _sha256_text(json.dumps(dict(inputs), sort_keys=True))


def staleness(
    record: Mapping[str, Any],
    inputs: Mapping[str, str],
    executed: Path,
    code_files: Mapping[str, str] | None = None,
) -> str | None:
    """Why an earlier run of a notebook can't be re-used, or None if it can.

    Parameters
    ----------
    record : mapping
        The notebook's entry of the state file (empty if it never ran).
    inputs : mapping
        Its inputs now (:func:`chapter_inputs`).
    executed : Path
        Its executed copy.
    code_files : mapping, optional
        The ``helpers`` modules it runs now (file label to SHA-256); the changed ones are
        named when the record has them (a record of an older runner says "helpers code
        changed").

    Returns
    -------
    str or None
        The reason, for the progress line.
    """
    if not record:
        return "never executed"
    if record.get("status") == "running":
        return f"its run of {record.get('started', '?')} was interrupted"
    if record.get("status") != "complete":
        return f"its last run {record.get('status', 'did not finish')}"
    changed = [
        text
        for name, text in _INPUT_NAMES.items()
        if record.get("inputs", {}).get(name) != inputs.get(name)
    ]
    if _INPUT_NAMES["code"] in changed and "code_files" in record and code_files is not None:
        which = changed_modules(record["code_files"], code_files)
        changed = [which or t if t == _INPUT_NAMES["code"] else t for t in changed]
    if changed:
        return ", ".join(changed)
    if not executed.is_file():
        return "its executed copy is missing"
    for path, digest in record.get("outputs", {}).items():
        if not Path(path).is_file() or sha256_file(Path(path)) != digest:
            return f"its results file {path} changed or is missing"
    return None


def decide(
    plan: Plan,
    state: Mapping[str, Any],
    executed_dir: Path,
    source_dir: Path,
    *,
    force: bool = False,
    code_dir: Path = CODE_DIR,
    replicates: Mapping[str, Sequence[Any]] | None = None,
) -> dict[str, Decision]:
    """Decide, for every notebook of the book, whether to execute, re-use or leave it out.

    Selected stale notebooks are executed (all selected ones with ``force``), and so are
    selected notebooks that read the results of one that runs again; a stale notebook
    that is not selected (``--only``) is left out of the rendered book rather than shown
    with old numbers.

    Parameters
    ----------
    plan : Plan
        The chapters, the selected notebooks and their parameters.
    state : mapping
        The state file's records.
    executed_dir, source_dir : Path
        The executed copy of the source, and the source.
    force : bool
        Execute every selected notebook.
    code_dir : Path
        The package whose modules the notebooks import (a chapter runs again when one it
        runs changed).
    replicates : mapping, optional
        Chapter name to its replicates (:func:`helpers.book.replicates.plan_replicates`):
        each is decided like its chapter, from the same inputs with its own parameters,
        its record in ``state`` under its name (``model_1/seed_43``) and its executed copy
        under ``_build/replicates/``: executed or re-used for a selected chapter, kept or
        left out for one outside ``--only``
        (:func:`helpers.book.replicates.kept_replicates`). A notebook that reads replicates
        (``book.uses_replicates``) depends on those of the chapters it reads, as on the
        chapters.

    Returns
    -------
    dict
        Notebook name to :class:`Decision`, in the book's order; each chapter's
        replicates (by their names) follow it.
    """
    graph, env_hash = CodeGraph.of(code_dir), environment_fingerprint()
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
            plan.parameters[chapter.name]
            if chapter.name in selected
            else state.get(chapter.name, {}).get("parameters", {})
        )
        code_files = graph.fingerprints(modules_run_by(chapter.path, graph))
        read_replicates = (
            [r.name for name in uses_results_of(chapter) for r in (replicates or {}).get(name, ())]
            if uses_replicates(chapter)
            else []
        )
        inputs = chapter_inputs(
            chapter,
            params,
            code_files=code_files,
            env_hash=env_hash,
            upstream_keys=keys,
            data_cache=data_cache,
            replicate_names=read_replicates,
        )
        keys[chapter.name] = input_key(inputs)
        record = state.get(chapter.name, {})
        executed = executed_dir / chapter.path.relative_to(source_dir)
        stale = staleness(record, inputs, executed, code_files)
        upstream_again = [
            n for n in [*uses_results_of(chapter), *read_replicates] if n in runs_again
        ]
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
            action, reason = _kept_or_left_out(record, stale)
        if action == "execute":
            runs_again.add(chapter.name)
        decisions[chapter.name] = Decision(action, reason, inputs, code_files)
        for replicate in (replicates or {}).get(chapter.name, ()):
            replicate_inputs = chapter_inputs(
                chapter,
                replicate.parameters,
                code_files=code_files,
                env_hash=env_hash,
                upstream_keys=keys,
                data_cache=data_cache,
            )
            keys[replicate.name] = input_key(replicate_inputs)
            decisions[replicate.name] = _decide_replicate(
                state.get(replicate.name, {}),
                replicate.executed_path(executed_dir.parent),
                replicate_inputs,
                code_files,
                upstream_again=upstream_again,
                force=force,
                selected=chapter.name in selected,
            )
            if decisions[replicate.name].action == "execute":
                runs_again.add(replicate.name)
    return decisions


def _kept_or_left_out(record: Mapping[str, Any], stale: str | None) -> tuple[str, str]:
    """The action and reason for a run outside ``--only``: kept when up to date, else left
    out (never run by this build)."""
    if stale is None:
        return "reuse", f"kept from the run of {record.get('finished', '?')}"
    return "leave out", f"stale ({stale}): left out of this build"


def _decide_replicate(
    record: Mapping[str, Any],
    executed: Path,
    inputs: dict[str, str],
    code_files: dict[str, str],
    *,
    upstream_again: Sequence[str],
    force: bool,
    selected: bool = True,
) -> Decision:
    """A replicate is executed, re-used or left out by the rules of its chapter: one
    outside ``--only`` (``selected`` False) is kept when up to date, never run."""
    stale = staleness(record, inputs, executed, code_files)
    if upstream_again and (stale is None or stale.startswith(_INPUT_NAMES["upstream"])):
        stale = f"{', '.join(upstream_again)} runs again"
    if not selected:
        return Decision(*_kept_or_left_out(record, stale), inputs, code_files)
    if force:
        action, reason = "execute", "--force"
    elif stale is None:
        action, reason = "reuse", f"unchanged since {record.get('finished', '?')}"
    else:
        action, reason = "execute", stale
    return Decision(action, reason, inputs, code_files)
