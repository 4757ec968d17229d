"""pytest --nbval-lax over book/: run the notebooks in the order of _toc.yml.

Chapters read the results of earlier chapters (the comparison reads every model's), so the
alphabetical order pytest would use is wrong.
"""

from pathlib import Path

import yaml

_TOC = Path(__file__).resolve().parent.parent / "_toc.yml"


def _toc_order() -> list[str]:
    names: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            for key in ("root", "file"):
                if key in node:
                    names.append(Path(str(node[key])).with_suffix("").name)
            for value in node.values():
                if isinstance(value, (list, dict)):
                    walk(value)
        elif isinstance(node, list):
            for entry in node:
                walk(entry)

    walk(yaml.safe_load(_TOC.read_text()))
    return names


def pytest_collection_modifyitems(session, config, items):
    order = {name: i for i, name in enumerate(_toc_order())}
    # sort is stable: the cells of one notebook keep their order.
    items.sort(key=lambda item: order.get(Path(str(item.fspath)).stem, len(order)))
