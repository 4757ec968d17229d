"""Sphinx extension for a partial render: references into left-out chapters become plain text.

When ``python -m helpers.book --only model_1`` renders a book in which other chapters were
never executed, those chapters are left out of the render, and a page such as the
reporting checklist still refers to their sections (``{ref}`data-counts```). Sphinx
would call each such reference broken, and ``-W`` would stop the render. The runner adds
this extension to the render's configuration only then, with the labels and documents of
the chapters left out; each reference to one of those becomes its text followed by
"(not in this build)". Any other broken reference is still a warning, and a full build
never loads this extension.
"""

from __future__ import annotations

import posixpath
from typing import Any

from docutils import nodes

#: The CSS class of a reference shown as plain text.
LEFT_OUT_CLASS = "left-out-reference"
#: What follows the reference's text.
LEFT_OUT_NOTE = " (not in this build)"


def target_docname(refdoc: str, target: str) -> str:
    """The docname a ``{doc}`` target names, from the document that refers to it.

    Parameters
    ----------
    refdoc : str
        The referring document (``"part/page"``).
    target : str
        The target as written: relative to the referring document, or from the source
        folder when it starts with ``/``; a suffix is ignored.

    Returns
    -------
    str
    """
    if target.startswith("/"):
        name = target.lstrip("/")
    else:
        name = posixpath.join(posixpath.dirname(refdoc), target)
    name = posixpath.normpath(name)
    root, suffix = posixpath.splitext(name)
    return root if suffix in (".md", ".ipynb", ".rst") else name


def degrade_reference(app: Any, env: Any, node: Any, contnode: nodes.Node) -> nodes.Node | None:
    """``missing-reference`` handler: plain text for a reference into a left-out chapter.

    Parameters
    ----------
    app, env : Sphinx application and environment
        As Sphinx passes them.
    node : pending_xref
        The unresolved reference.
    contnode : Node
        Its content (the text that would have been the link).

    Returns
    -------
    Node or None
        ``<span class="left-out-reference">text (not in this build)</span>``; None for any
        other missing reference, which Sphinx then reports as usual.
    """
    if node.get("refdomain") != "std":
        return None
    reftype, target = node.get("reftype"), str(node.get("reftarget", ""))
    if reftype in ("ref", "numref"):
        left_out = target.lower() in set(app.config.book_left_out_labels)
    elif reftype == "doc":
        left_out = target_docname(node.get("refdoc", ""), target) in set(
            app.config.book_left_out_docs
        )
    else:
        left_out = False
    if not left_out:
        return None
    text = contnode.astext() + LEFT_OUT_NOTE
    return nodes.inline(text, text, classes=[LEFT_OUT_CLASS])


def setup(app: Any) -> dict[str, Any]:
    """Register the configuration values and the handler (Sphinx's extension entry point).

    Parameters
    ----------
    app : Sphinx
        The application.

    Returns
    -------
    dict
        Extension metadata: safe for parallel reading and writing.
    """
    app.add_config_value("book_left_out_labels", [], "env")
    app.add_config_value("book_left_out_docs", [], "env")
    app.connect("missing-reference", degrade_reference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
