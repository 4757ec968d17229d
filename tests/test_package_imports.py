"""The package's layers (:data:`helpers.LAYERS`): no module imports one above it, and no
modules import each other in a circle, read from the source of every module of ``helpers``
(imports inside functions and under ``if TYPE_CHECKING:`` included: an import placed inside
a function to break a circle still is a circle)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import helpers

PACKAGE = Path(helpers.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (``helpers.data.cache``; a package by its
    own name, ``helpers.data``)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The package module that importing ``name`` loads (``helpers.data.load_images`` ->
    ``helpers.data``), or None outside the package."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imported_names(module: str) -> set[str]:
    """Every ``helpers`` module that ``module`` imports, anywhere in its source."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, one level up per dot
                package = (
                    module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                )
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    resolved = {_resolve(name) for name in names}
    # A module's own package (its __init__) runs first whatever it imports: not an edge.
    return {r for r in resolved if r is not None and r != module and not module.startswith(r + ".")}


GRAPH = {module: imported_names(module) for module in MODULES}


def _layer_of(module: str) -> int:
    """The index in :data:`helpers.LAYERS` of ``module`` (its first name below
    ``helpers``); the package's ``__init__`` is below every layer."""
    if module == "helpers":
        return -1
    top = module.split(".")[1]
    for index, layer in enumerate(helpers.LAYERS):
        if top in layer:
            return index
    raise AssertionError(f"{module} is in no layer of helpers.LAYERS: give it a place there")


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_reader_sees_imports_inside_functions_and_relative_ones():
    assert "helpers.data" in GRAPH["helpers.leaks"]  # at the top
    assert "helpers.results" in GRAPH["helpers.ablation"]  # inside a function
    assert "helpers.book.plan" in GRAPH["helpers.book.staleness"]  # relative: from .plan
    assert "helpers.data.cache" in GRAPH["helpers.data.load"]


def test_the_circle_finder_finds_a_circle_through_a_function_level_import():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circles(graph) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []


def test_no_modules_of_the_package_import_each_other_in_a_circle():
    assert _circles(GRAPH) == []


def test_every_module_has_one_layer_and_layers_name_real_modules():
    placed = [name for layer in helpers.LAYERS for name in layer]
    assert len(placed) == len(set(placed)), "a module is in two layers"
    tops = {module.split(".")[1] for module in MODULES if module != "helpers"}
    assert set(placed) == tops
    for module in MODULES:
        _layer_of(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_one_above_it(module):
    above = {
        imported: helpers.LAYERS[_layer_of(imported)]
        for imported in GRAPH[module]
        if _layer_of(imported) > _layer_of(module)
    }
    assert not above, f"{module} (layer {_layer_of(module)}) imports modules above it: {above}"


def test_the_bottom_layer_imports_nothing_from_the_package():
    assert GRAPH["helpers"] == set()
    assert GRAPH["helpers.config"] == set()
    assert GRAPH["helpers.files"] == set()  # not even config: it stands alone


def test_every_atomic_write_and_disk_cache_goes_through_helpers_files():
    writers = ("os.replace(", "os.rename(", "mkstemp(", "NamedTemporaryFile(")
    for module, path in MODULES.items():
        if module == "helpers.files":
            continue
        text = path.read_text(encoding="utf-8")
        used = [w for w in writers if w in text]
        # results puts back a folder an interrupted writer left hidden (recover_interrupted).
        allowed = {"helpers.results": ["os.replace("]}.get(module, [])
        assert [w for w in used if w not in allowed] == [], (module, used)
