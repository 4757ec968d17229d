"""Which modules of the ``helpers`` package a notebook runs: a static import graph.

A chapter is stale when code it executes changed, not when any file of the package did:
a comment in the runner (``helpers/book/cli.py``) changes no chapter, and neither does a
docstring or comment in a module it runs (:func:`code_hash`). The graph is read
with :mod:`ast`, nothing is imported: every ``import`` statement of every module counts,
including those inside functions and ``if TYPE_CHECKING:`` blocks (a module that *might*
run counts, which errs on the safe side). ``from helpers import data, evaluate`` imports
the modules ``helpers.data`` and ``helpers.evaluate``; a package is its ``__init__.py``;
relative imports are resolved; importing ``helpers.data.load`` also runs
``helpers/__init__.py`` and ``helpers/data/__init__.py``. A notebook's own imports are
read from its code cells (IPython magics removed first); the modules it runs are their
closure under the graph.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import nbformat


def _module_name(path: Path, code_dir: Path) -> str:
    """``helpers/data/load.py`` -> ``helpers.data.load``; a package's ``__init__.py``: its name."""
    parts = [code_dir.name, *path.relative_to(code_dir).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _with_parents(name: str) -> list[str]:
    """``a.b.c`` -> ``a``, ``a.b``, ``a.b.c``: importing a module runs its packages first."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def imported_names(tree: ast.AST, module: str | None, is_package: bool) -> set[str]:
    """Every module name an import statement of ``tree`` may import, resolved.

    Parameters
    ----------
    tree : ast.AST
        A parsed module or notebook cell.
    module : str or None
        The module's dotted name (for relative imports); None for a notebook.
    is_package : bool
        Whether ``module`` is a package's ``__init__.py`` (``from . import x`` then means
        ``module.x``, not a sibling).

    Returns
    -------
    set of str
        Absolute dotted names: for ``from a import b``, both ``a`` and ``a.b`` (``b`` may
        be a module or a name defined in ``a``; the caller keeps the names that are modules).
    """
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                if module is None:
                    continue  # a relative import outside a package fails when it runs
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, node.module] if node.module else package)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def code_hash(tree: ast.Module) -> str:
    """SHA-256 of what a module runs: its syntax tree without docstrings, line numbers or
    comments (which :mod:`ast` drops), so that an edit to the documentation of a module
    leaves the chapters that run it up to date. A string a module reads from its own
    docstring (``__doc__``) only ever feeds a command's help, never a chapter's output.

    Parameters
    ----------
    tree : ast.Module
        The parsed module; it is not modified.

    Returns
    -------
    str
        64 hexadecimal digits.
    """
    documented = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    stripped = []
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, documented)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            stripped.append((node, body))
    try:
        for node, body in stripped:
            node.body = body[1:] or [ast.Pass()]
        return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()
    finally:
        for node, body in stripped:
            node.body = body


@dataclass
class CodeGraph:
    """The modules of a package, what each imports of it, and each file's SHA-256.

    Attributes
    ----------
    code_dir : Path
        The package folder (``helpers/``); its name is the package's name.
    files : dict
        Module name to file.
    imports : dict
        Module name to the package's modules it imports (directly).
    hashes : dict
        Module name to the SHA-256 of its code (:func:`code_hash`; of its bytes when it
        cannot be parsed).
    """

    code_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    imports: dict[str, set[str]] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, code_dir: Path) -> CodeGraph:
        """Read every ``.py`` file of the package ``code_dir``.

        Parameters
        ----------
        code_dir : Path
            The package folder; a missing folder gives an empty graph.

        Returns
        -------
        CodeGraph
        """
        code_dir = Path(code_dir)
        graph = cls(code_dir)
        for path in sorted(code_dir.rglob("*.py")):
            graph.files[_module_name(path, code_dir)] = path
        for name, path in graph.files.items():
            data = path.read_bytes()
            try:
                tree = ast.parse(data, filename=str(path))
            except SyntaxError:
                # It fails when imported; whoever imports it must run again once it's fixed.
                graph.hashes[name] = hashlib.sha256(data).hexdigest()
                graph.imports[name] = set()
                continue
            graph.hashes[name] = code_hash(tree)
            found = imported_names(tree, name, path.name == "__init__.py")
            graph.imports[name] = graph.modules_among(found) - {name}
        return graph

    def modules_among(self, names: Iterable[str]) -> set[str]:
        """The package's modules that importing ``names`` runs (with their packages)."""
        return {p for n in names for p in _with_parents(n) if p in self.files}

    def closure(self, modules: Iterable[str]) -> set[str]:
        """``modules`` and every module of the package they import, directly or not."""
        reached: set[str] = set()
        todo = [m for m in modules if m in self.files]
        while todo:
            name = todo.pop()
            if name not in reached:
                reached.add(name)
                todo.extend(self.imports.get(name, ()))
        return reached

    def label(self, module: str) -> str:
        """A module as a person finds it: its file relative to the package's parent folder."""
        return self.files[module].relative_to(self.code_dir.parent).as_posix()

    def fingerprints(self, modules: Iterable[str]) -> dict[str, str]:
        """File label (``helpers/ablation.py``) to SHA-256, for ``modules``, sorted by label."""
        return dict(sorted((self.label(m), self.hashes[m]) for m in modules))


def notebook_imports(notebook: Path) -> set[str] | None:
    """The module names a notebook's code cells import (dotted, absolute).

    Parameters
    ----------
    notebook : Path
        A notebook file.

    Returns
    -------
    set of str or None
        None when a code cell can't be parsed even with IPython's magics removed (the
        caller then counts the whole package, which is safe).
    """
    from IPython.core.inputtransformer2 import TransformerManager

    transformer = TransformerManager()
    names: set[str] = set()
    for cell in nbformat.read(str(notebook), as_version=4).cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(transformer.transform_cell(cell.source))
        except SyntaxError:
            return None
        names |= imported_names(tree, None, False)
    return names


def modules_run_by(notebook: Path, graph: CodeGraph) -> set[str]:
    """The package's modules a notebook runs: its imports and everything they import.

    Parameters
    ----------
    notebook : Path
        A notebook file.
    graph : CodeGraph
        The package's import graph.

    Returns
    -------
    set of str
        Dotted module names; every module of the package if a cell can't be parsed.
    """
    direct = notebook_imports(notebook)
    if direct is None:
        return set(graph.files)
    return graph.closure(graph.modules_among(direct))


def changed_modules(before: Mapping[str, str], now: Mapping[str, str]) -> str:
    """Say which files of a chapter's code changed between two runs.

    Parameters
    ----------
    before, now : mapping
        File label to SHA-256 (:meth:`CodeGraph.fingerprints`), at the last run and now.

    Returns
    -------
    str
        ``"helpers/ablation.py changed"``, ``"helpers/a.py, helpers/b.py changed"``,
        ``"now imports helpers/x.py"``, ``"no longer imports helpers/y.py"``, joined by
        ``"; "``; empty when nothing differs.
    """
    edited = [f for f in now if f in before and before[f] != now[f]]
    added = [f for f in now if f not in before]
    removed = [f for f in before if f not in now]
    parts = []
    if edited:
        parts.append(f"{', '.join(edited)} changed")
    if added:
        parts.append(f"now imports {', '.join(added)}")
    if removed:
        parts.append(f"no longer imports {', '.join(removed)}")
    return "; ".join(parts)
