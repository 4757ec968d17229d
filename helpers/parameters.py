"""The book's parameters in one place: names, types, value rules, help, environment overrides.

Every chapter declares some of these in its cell tagged ``parameters``, with its defaults
(papermill's convention: the notebook is the one place a chapter's default lives; the runner
reads them from there), and calls :func:`check` right after it::

    params = parameters.check(data_dir=data_dir, results_dir=results_dir, epochs=epochs)
    params.epochs, params.data_dir          # checked values; paths are absolute Paths
    params                                   # shows a two-column table

The runner (``python -m helpers.book``) checks ``-p`` values with the same table and the
same rules before any notebook runs, so both say the same words about a bad value.

Values come from three places, in this order of precedence:

1. a value papermill injected (``-p NAME VALUE``, or the runner): always kept;
2. an environment variable ``BOOK_<NAME>`` (``BOOK_EPOCHS=1``), for CI runs under nbval,
   which cannot pass parameters: it replaces the value of the parameters cell;
3. the value written in the notebook's parameters cell.

Paths: ``data_dir=None`` is the embedded data (:data:`helpers.config.DEFAULT_DATA_DIR`),
``results_dir=None`` is :data:`helpers.config.DEFAULT_RESULTS_DIR`. A *relative* path is
relative to the repository root (:data:`helpers.config.REPO_ROOT`), not to the folder the
kernel runs in, so ``data/chest_xray`` means the same folder in Jupyter, under nbval, under
papermill and in the runner. ``base_weights`` is ``"imagenet"``, ``"random"`` (no
pretrained weights) or the path of a Keras weights file (``.h5``); there is no ``None``.
"""

from __future__ import annotations

import ast
import html
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers import config

#: Prefix of the environment variables that override parameters (``BOOK_EPOCHS``).
ENV_PREFIX = "BOOK_"
#: ``BOOK_*`` variables that are not parameter overrides (the built-book and browser tests').
OTHER_BOOK_VARIABLES = frozenset({"BOOK_HTML_DIR", "BOOK_REQUIRE_BROWSER", "BOOK_SAVE_EXECUTED"})
#: What ``base_weights`` may be besides the path of a weights file.
BASE_WEIGHTS = ("imagenet", "random")
#: Suffix of the Keras weights files ``base_weights`` may name.
WEIGHTS_SUFFIX = ".h5"


class ParameterError(ValueError):
    """A parameter name or value a chapter cannot take; the message says what is allowed."""


# --------------------------------------------------------------------------------------
# Paths


def resolve_path(path: str | os.PathLike) -> Path:
    """An absolute path; a relative one is taken relative to the repository root.

    Parameters
    ----------
    path : str or path-like
        ``~`` is expanded.

    Returns
    -------
    Path
        Absolute and normalised (``..`` removed); symbolic links are not followed.
    """
    given = Path(path).expanduser()
    if not given.is_absolute():
        given = config.REPO_ROOT / given
    return Path(os.path.normpath(given))


def display_path(path: str | os.PathLike) -> str:
    """A path as the book shows it: relative to the repository when inside it.

    Parameters
    ----------
    path : str or path-like
        Absolute, or relative to the repository root (see :func:`resolve_path`).

    Returns
    -------
    str
        ``"data/chest_xray"`` for the embedded data, never the build machine's absolute
        folder; the absolute path for a folder outside the repository.
    """
    full = resolve_path(path)
    for candidate, root in ((full, config.REPO_ROOT), (full.resolve(), config.REPO_ROOT.resolve())):
        try:
            return candidate.relative_to(root).as_posix()
        except ValueError:
            continue
    return str(full)


# --------------------------------------------------------------------------------------
# Value rules: each returns None when a value is fine, else what is expected.


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(value: Any) -> str | None:
    return None if _is_int(value) and value >= 1 else "a whole number of at least 1"


def _non_negative_int(value: Any) -> str | None:
    return None if _is_int(value) and value >= 0 else "a whole number of at least 0"


def _rate(value: Any) -> str | None:
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return None if is_number and 0 < value <= 1 else "a number above 0 and at most 1"


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    def rule(value: Any) -> str | None:
        return None if value in choices else "one of " + ", ".join(map(repr, choices))

    return rule


def _data_folder(value: Any) -> str | None:
    from helpers.data import DataError, check_data_dir

    folder = config.DEFAULT_DATA_DIR if value is None else resolve_path(value)
    if not folder.is_dir():
        return (
            "an existing folder in the Kaggle layout (train/, test/ and optionally val/, each with "
            "NORMAL/ and PNEUMONIA/)"
        )
    try:
        check_data_dir(folder)
    except DataError as error:
        return f"a folder in the Kaggle layout ({error})"
    return None


def _results_folder(value: Any) -> str | None:
    if value is not None and resolve_path(value).is_file():
        return "a folder path (it need not exist yet), not a file"
    return None


def _weights(value: Any) -> str | None:
    if value in BASE_WEIGHTS:
        return None
    if isinstance(value, (str, os.PathLike)) and str(value):
        path = resolve_path(value)
        if path.is_file() and path.name.endswith(WEIGHTS_SUFFIX):
            return None
    return f"'imagenet', 'random', or an existing Keras weights file ({WEIGHTS_SUFFIX})"


# --------------------------------------------------------------------------------------
# The table


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter a chapter may declare (its default is in each chapter's parameters cell).

    Attributes
    ----------
    name : str
        The variable name in the parameters cell.
    kind : {"int", "float", "str", "path"}
        The type; ``"path"`` is a ``str`` or path-like, or None for the parameter's default
        folder.
    rule : callable
        Value to None when fine, else a phrase saying what is expected.
    help : str
        One line for ``--list`` and error messages.
    """

    name: str
    kind: str
    rule: Callable[[Any], str | None]
    help: str

    @property
    def env_name(self) -> str:
        """The environment variable that overrides this parameter (``BOOK_EPOCHS``)."""
        return ENV_PREFIX + self.name.upper()

    @property
    def type_name(self) -> str:
        """The type, as a person reads it."""
        return "path or None" if self.kind == "path" else self.kind

    def coerce(self, value: Any) -> tuple[Any, str | None]:
        """Check a value's type, converting where that loses nothing.

        Parameters
        ----------
        value : Any
            A value from a parameters cell, papermill or the runner's ``-p``.

        Returns
        -------
        value : Any
            An int given for a float parameter becomes a float, a number given for a
            string parameter a string (``-p`` parses ``2024`` as an int).
        problem : str or None
            What was expected, if the type is wrong.
        """
        if self.kind == "int":
            return value, None if _is_int(value) else "a whole number"
        if self.kind == "float":
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value), None
            return value, "a number"
        if self.kind == "path":
            if value is None or isinstance(value, os.PathLike):
                return value, None
            if isinstance(value, str):
                return value, None if value else "a folder path or None"
            return value, "a folder path or None"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value), None
        # None goes on to the rule, which says which strings are allowed.
        return value, None if value is None or isinstance(value, str) else "a string"

    def check(self, value: Any) -> tuple[Any, str | None]:
        """Check type and rule: the value to use and what was expected, as :meth:`coerce`."""
        value, problem = self.coerce(value)
        return value, problem or self.rule(value)

    def parse_env(self, text: str) -> tuple[Any, str | None]:
        """Parse an environment variable's text into this parameter's type.

        Parameters
        ----------
        text : str
            The variable's value (``"3"``).

        Returns
        -------
        value : Any
            An int or float for numeric parameters, else the text.
        problem : str or None
            What was expected, if the text is not a number where one is needed.
        """
        if self.kind in ("int", "float"):
            try:
                return (int(text) if self.kind == "int" else float(text)), None
            except ValueError:
                return text, "a whole number" if self.kind == "int" else "a number"
        return text, None


#: Every parameter a chapter may declare, in the order the chapters declare them.
PARAMETERS: dict[str, ParameterSpec] = {
    spec.name: spec
    for spec in (
        ParameterSpec(
            "data_dir",
            "path",
            _data_folder,
            "the data folder in the Kaggle layout; None: the embedded data/chest_xray",
        ),
        ParameterSpec(
            "results_dir",
            "path",
            _results_folder,
            "where results are written; None: results/ at the repository root",
        ),
        ParameterSpec(
            "image_size",
            "int",
            _positive_int,
            "images are resized to image_size x image_size pixels",
        ),
        ParameterSpec("epochs", "int", _positive_int, "training epochs"),
        ParameterSpec(
            "batch_size",
            "int",
            _positive_int,
            "images per training step (per replica under a distribution strategy)",
        ),
        ParameterSpec(
            "seed", "int", _non_negative_int, "seed of the split, the weights and the shuffling"
        ),
        ParameterSpec(
            "base_weights",
            "str",
            _weights,
            "'imagenet', 'random' (no pretrained weights) or a Keras weights file (.h5)",
        ),
        ParameterSpec(
            "target_sensitivity",
            "float",
            _rate,
            "sensitivity the validation-chosen threshold must reach",
        ),
        ParameterSpec(
            "on_bad_image",
            "str",
            _one_of(*config.ON_BAD_IMAGE),
            "'stop' at an unreadable image, or 'skip' it (counted, named)",
        ),
        ParameterSpec(
            "strategy",
            "str",
            _one_of(*config.STRATEGIES),
            "tf.distribute strategy: 'default', 'mirrored' or 'multi_worker'",
        ),
        ParameterSpec(
            "ablation_epochs",
            "int",
            _non_negative_int,
            "epochs per ablation variant (0: no ablation)",
        ),
        ParameterSpec(
            "ablation_image_size",
            "int",
            _positive_int,
            "image size of the ablation (never more than image_size)",
        ),
        ParameterSpec(
            "head_epochs",
            "int",
            _positive_int,
            "model_7, stage 1: epochs of the head on the frozen base",
        ),
        ParameterSpec(
            "search_epochs",
            "int",
            _non_negative_int,
            "model_7: fine-tuning epochs per row of the validation search (0: no search)",
        ),
        ParameterSpec(
            "frozen_image_size",
            "int",
            _positive_int,
            "model_8: input size of the frozen multi-block MobileNetV2 member",
        ),
        ParameterSpec(
            "on_leak",
            "str",
            _one_of(*config.ON_LEAK),
            "when partitions overlap: 'warn', 'stop', or 'ignore'",
        ),
    )
}


def check_value(name: str, value: Any) -> tuple[Any, str | None]:
    """Check one value of a known parameter by its type and rule.

    Parameters
    ----------
    name : str
        A name of :data:`PARAMETERS`.
    value : Any
        The value.

    Returns
    -------
    value : Any
        The value to use (see :meth:`ParameterSpec.coerce`).
    problem : str or None
        What was expected (``"a whole number of at least 1"``), if the value is impossible.

    Raises
    ------
    ParameterError
        If ``name`` is not a parameter of the book.
    """
    if name not in PARAMETERS:
        raise ParameterError(f"unknown parameter {name!r}; allowed: {', '.join(PARAMETERS)}")
    return PARAMETERS[name].check(value)


def describe_problem(name: str, value: Any, source: str, problem: str) -> str:
    """The one wording of a bad value, shared by the runner and :func:`check`.

    Parameters
    ----------
    name : str
        The parameter.
    value : Any
        The value refused.
    source : str
        Where it came from (``"-p epochs"``, ``"environment variable BOOK_EPOCHS"``).
    problem : str
        What was expected (a rule's answer).

    Returns
    -------
    str
        ``"epochs = 0 (-p epochs): expected a whole number of at least 1"``.
    """
    return f"{name} = {value!r} ({source}): expected {problem}"


def unknown_book_variables(environ: Mapping[str, str]) -> list[str]:
    """``BOOK_*`` variables that are neither a parameter override nor a known setting.

    Parameters
    ----------
    environ : mapping
        An environment (``os.environ``).

    Returns
    -------
    list of str
        Sorted names; a misspelt override (``BOOK_EPOCH``) would otherwise be ignored.
    """
    allowed = {spec.env_name for spec in PARAMETERS.values()} | OTHER_BOOK_VARIABLES
    return sorted(n for n in environ if n.startswith(ENV_PREFIX) and n not in allowed)


def papermill_injected_names() -> set[str]:
    """Names papermill assigned in this kernel (its injected cell starts with ``# Parameters``).

    Returns
    -------
    set of str
        Empty outside IPython, or when papermill injected nothing.
    """
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with the notebook stack
        return set()
    shell = get_ipython()
    if shell is None:
        return set()
    names: set[str] = set()
    for source in shell.user_ns.get("In", []):
        if source.splitlines()[:1] != ["# Parameters"]:
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.Assign):
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


# --------------------------------------------------------------------------------------
# A chapter's checked parameters


class ChapterParameters(Mapping[str, Any]):
    """A chapter's checked parameters: read-only, by attribute or by name.

    ``params.image_size``, ``params["image_size"]``, ``params.as_dict()``. ``data_dir`` and
    ``results_dir`` are absolute :class:`~pathlib.Path` objects, a ``base_weights`` file an
    absolute path string; the display (a two-column table) shows paths relative to the
    repository when inside it (:func:`display_path`).
    """

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(
                f"this chapter declares no parameter {name!r}; it declares: "
                f"{', '.join(self._values) or '(none)'}"
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("ChapterParameters are read-only: change the parameters cell")

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def as_dict(self) -> dict[str, Any]:
        """A plain (mutable) copy of the values."""
        return dict(self._values)

    def rows(self) -> list[tuple[str, str]]:
        """(name, value as shown) pairs; paths relative to the repository when inside it."""
        return [(name, _shown(name, value)) for name, value in self._values.items()]

    def __repr__(self) -> str:
        rows = [("parameter", "value"), *self.rows()]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)

    def _repr_html_(self) -> str:
        body = "".join(
            f"<tr><td>{html.escape(name)}</td><td><code>{html.escape(value)}</code></td></tr>"
            for name, value in self.rows()
        )
        return (
            '<table class="chapter-parameters"><thead><tr><th>parameter</th><th>value</th>'
            f"</tr></thead><tbody>{body}</tbody></table>"
        )


def _shown(name: str, value: Any) -> str:
    is_weights_file = name == "base_weights" and value not in BASE_WEIGHTS
    if isinstance(value, Path) or (is_weights_file and isinstance(value, str)):
        return display_path(value)
    return str(value)


def check_values(
    values: Mapping[str, Any],
    *,
    environ: Mapping[str, str] | None = None,
    injected: Iterable[str] = (),
) -> ChapterParameters:
    """Check a chapter's parameters; the work behind :func:`check`, with its inputs explicit.

    Parameters
    ----------
    values : mapping
        Name to value as the notebook holds them after its parameters cell (and after
        papermill's injected cell, if any).
    environ : mapping, optional
        The environment (``os.environ`` by default); ``BOOK_<NAME>`` overrides a value
        unless papermill injected that name.
    injected : iterable of str
        Names papermill injected explicitly.

    Returns
    -------
    ChapterParameters

    Raises
    ------
    ParameterError
        For an unknown name, a name papermill injected that the notebook does not pass
        here, an unknown ``BOOK_*`` variable, or any impossible value (all of them listed).
    """
    environ = os.environ if environ is None else environ
    injected = set(injected)
    unknown = [n for n in values if n not in PARAMETERS]
    if unknown:
        raise ParameterError(
            f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"allowed: {', '.join(PARAMETERS)}"
        )
    undeclared = sorted(injected - set(values))
    if undeclared:
        raise ParameterError(
            f"papermill passed {', '.join(undeclared)}, which this notebook does not declare; "
            f"it declares: {', '.join(values) or '(nothing)'}"
        )
    unknown_env = unknown_book_variables(environ)
    if unknown_env:
        raise ParameterError(
            f"unknown environment variable{'s' if len(unknown_env) > 1 else ''} "
            f"{', '.join(unknown_env)}; the overrides are "
            f"{', '.join(s.env_name for s in PARAMETERS.values())}"
        )
    checked: dict[str, Any] = {}
    problems = []
    for name, value in values.items():
        spec = PARAMETERS[name]
        source = f"papermill -p {name}" if name in injected else "parameters cell"
        if name not in injected and spec.env_name in environ:
            # CI: nbval cannot pass parameters; an explicit -p always wins over the variable.
            value, problem = spec.parse_env(environ[spec.env_name])
            source = f"environment variable {spec.env_name}"
            if problem:
                problems.append(describe_problem(name, value, source, problem))
                continue
        value, problem = spec.check(value)
        if problem:
            problems.append(describe_problem(name, value, source, problem))
        checked[name] = value
    if problems:
        raise ParameterError("impossible parameter values:\n  " + "\n  ".join(problems))
    return ChapterParameters(_resolved(checked))


def _resolved(values: Mapping[str, Any]) -> dict[str, Any]:
    """Paths made absolute: None to the default folders, relative ones to the repository."""
    out = dict(values)
    if "data_dir" in out:
        from helpers.data import check_data_dir

        given = out["data_dir"]
        # The folder holding train/val/test may sit below the one named (Kaggle's archive).
        out["data_dir"] = check_data_dir(None if given is None else resolve_path(given))
    if "results_dir" in out:
        given = out["results_dir"]
        out["results_dir"] = config.DEFAULT_RESULTS_DIR if given is None else resolve_path(given)
    if out.get("base_weights") not in (None, *BASE_WEIGHTS):
        # Still a str, like "imagenet": code that takes base_weights takes either.
        out["base_weights"] = str(resolve_path(out["base_weights"]))
    return out


def check(**values: Any) -> ChapterParameters:
    """Check the parameters of the chapter calling it, right after its parameters cell.

    Parameters
    ----------
    **values
        Each parameter the notebook declares, by name (``epochs=epochs``); every name must
        be one of :data:`PARAMETERS`.

    Returns
    -------
    ChapterParameters
        ``BOOK_<NAME>`` environment variables applied (except to names papermill injected),
        values checked, paths absolute.

    Raises
    ------
    ParameterError
        Unknown names, names papermill injected that are not passed here, unknown
        ``BOOK_*`` variables, impossible values; before any work starts.
    """
    return check_values(values, environ=os.environ, injected=papermill_injected_names())
