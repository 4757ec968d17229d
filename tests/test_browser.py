"""Open the built book in a real browser (Debian's headless Chromium) from ``file://``.

Opens the fixture book (``tests/fixture_book.py``), built by the runner's command line (once
per session, ``cli_built_fixture_book`` in conftest.py), loads every chapter and
checks that every image decoded (``naturalWidth > 0``), that no JavaScript error was
raised, that no page asked for anything off the machine, that the navigation lists every
chapter and that the comparison table is an HTML table.

Chromium is driven through the DevTools protocol over ``--remote-debugging-pipe`` (file
descriptors 3 and 4, messages separated by NUL bytes), which needs no driver binary and
no Python package. Run alone with ``pytest tests/test_browser.py``.

The test is skipped only when ``chromium`` is not installed *and* ``BOOK_REQUIRE_BROWSER``
is unset: CI installs Chromium and sets it, so there the test fails rather than skips.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import _chromium
import pytest
from fixture_book import NOTEBOOK_LINE_LENGTH

CHROMIUM = _chromium.CHROMIUM
TIMEOUT = _chromium.TIMEOUT
REQUIRED = _chromium.REQUIRED
pytestmark = [pytest.mark.browser, _chromium.requires_chromium]


class Chromium(_chromium.Chromium):
    """The shared DevTools-pipe browser (``tests/_chromium.py``), with a page report."""

    def wait_for(self, method: str, session: str, timeout: float = TIMEOUT) -> dict:
        """Wait for an event (keeping the others)."""
        deadline = time.monotonic() + timeout
        for i, event in enumerate(self.events):
            if event.get("method") == method and event.get("sessionId") == session:
                return self.events.pop(i)
        while True:
            event = self._read_message(deadline)
            if event.get("method") == method and event.get("sessionId") == session:
                return event
            self.events.append(event)

    def open_page(self, url: str) -> dict:
        """Load ``url`` in a new tab; return what the page did and what it shows."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=session)
        self.events.clear()
        self.send("Page.navigate", {"url": url}, session=session)
        self.wait_for("Page.loadEventFired", session)
        # Let deferred scripts (the theme's) run and lazy images settle.
        self.send(
            "Runtime.evaluate",
            {"expression": "new Promise(r => setTimeout(r, 500))", "awaitPromise": True},
            session=session,
        )
        report = self.send(
            "Runtime.evaluate",
            {
                "expression": """JSON.stringify({
                    images: Array.from(document.images).map(i => ({
                        src: i.currentSrc || i.src, complete: i.complete,
                        width: i.naturalWidth})),
                    nav: Array.from(document.querySelectorAll('nav a.reference'))
                        .map(a => new URL(a.href).pathname.split('/').pop()),
                    tables: document.querySelectorAll('table.dataframe').length,
                    title: document.title})""",
                "returnByValue": True,
            },
            session=session,
        )["result"]["value"]
        page = json.loads(report)
        mine = [e for e in self.events if e.get("sessionId") == session]
        page["exceptions"] = [
            e["params"]["exceptionDetails"]
            for e in mine
            if e["method"] == "Runtime.exceptionThrown"
        ]
        page["console_errors"] = [
            e["params"]["args"]
            for e in mine
            if e["method"] == "Runtime.consoleAPICalled"
            and e["params"]["type"] in ("error", "assert")
        ] + [
            e["params"]["entry"]
            for e in mine
            if e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error"
        ]
        page["remote_requests"] = [
            e["params"]["request"]["url"]
            for e in mine
            if e["method"] == "Network.requestWillBeSent"
            and not e["params"]["request"]["url"].startswith(("file:", "data:", "about:", "blob:"))
        ]
        self.send("Target.closeTarget", {"targetId": target})
        self.events = [e for e in self.events if e.get("sessionId") != session]
        return page


@pytest.fixture(scope="module")
def built_book(cli_built_fixture_book) -> Path:
    result = cli_built_fixture_book["result"]
    assert result.returncode == 0, result.stdout + result.stderr
    return cli_built_fixture_book["html"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = Chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield chromium
    chromium.close()


# index.html is only a redirect to intro.html (checked in test_book.py).
@pytest.mark.parametrize("page_name", ["intro", "alpha", "beta"])
def test_page_loads_offline_with_images_and_no_errors(built_book, browser, page_name):
    page = browser.open_page((built_book / f"{page_name}.html").as_uri())
    assert page["exceptions"] == [], page["exceptions"]
    assert page["console_errors"] == [], page["console_errors"]
    assert page["remote_requests"] == [], page["remote_requests"]
    undecoded = [i for i in page["images"] if not i["complete"] or i["width"] <= 0]
    assert undecoded == [], undecoded
    # Every chapter in the navigation (index.html redirects to the first page).
    for chapter in ("alpha.html", "beta.html"):
        assert chapter in page["nav"], page["nav"]
    if page_name in ("alpha", "beta"):
        figures = [i for i in page["images"] if "_images/" in i["src"]]
        assert figures, f"{page_name}: no figure in the page"
    if page_name == "beta":
        assert page["tables"] == 1


#: What a page shows at a 1366 px window, folded cells opened first (see page_layout_at_1366_px).
PAGE_LAYOUT_JS = r"""(() => {
    document.querySelectorAll('details').forEach(d => { d.open = true; });
    const article = document.querySelector('article.bd-article') || document.body;
    const probe = document.createElement('pre');  // a code block at the theme's own size
    article.appendChild(probe);
    const themeFont = getComputedStyle(probe).fontSize;
    probe.remove();
    const code = Array.from(
        article.querySelectorAll('div.highlight pre, div.cell_output pre')).map(p => {
            const lines = p.textContent.replace(/\n$/, '').split('\n');
            const height = p.scrollHeight, scroll = p.scrollWidth, width = p.clientWidth;
            const style = p.style.whiteSpace;
            p.style.whiteSpace = 'pre';
            const unwrapped = p.scrollHeight;
            p.style.whiteSpace = style;
            const kind = p.closest('div.cell_output') ? 'output'
                : p.closest('div.literal-block-wrapper, div.doctest, dl.py') ? 'package code'
                : 'code';
            return {kind: kind,
                    font: getComputedStyle(p).fontSize,
                    longest: Math.max(...lines.map(l => l.length)), wraps: height > unwrapped,
                    scroll: scroll, width: width};
        });
    const right = article.getBoundingClientRect().right
        - parseFloat(getComputedStyle(article).paddingRight);
    // The lines a node's text takes: the tops of its text's boxes, apart by more
    // than half a line (a cell's paragraph box, a code span's box are not lines).
    const lineCount = node => {
        const walker = document.createTreeWalker(node, NodeFilter.SHOW_TEXT);
        const tops = [];
        for (let text = walker.nextNode(); text; text = walker.nextNode()) {
            const range = document.createRange();
            range.selectNodeContents(text);
            for (const r of range.getClientRects()) if (r.width > 0) tops.push(r.top);
        }
        tops.sort((a, b) => a - b);
        return tops.filter((top, i) => i === 0 || top - tops[i - 1] > 8).length;
    };
    // helpers.report.ESTIMATE_WITH_INTERVAL; its space is a line break when marked, a
    // no-break space in a table written in Markdown.
    const estimate = /(?<![\w.])[+-]?\d+\.\d+%?(?:-\d+\.\d+)?\s?\([^()<>]*\)/;
    const tables = Array.from(article.querySelectorAll('table')).map(t => {
        const cells = Array.from(t.querySelectorAll('td, th'))
            .filter(c => estimate.test(c.textContent));
        // A marked estimate: its value and its interval each on one line (the interval
        // may have a line of its own); an unmarked one: its whole cell on one line.
        const units = cells.flatMap(c => {
            const marked = Array.from(c.querySelectorAll('.estimate'));
            return marked.length ? marked : [c];
        });
        const broken = units.filter(u => u.classList.contains('estimate')
            ? Array.from(u.querySelectorAll('.value, .interval')).some(p => lineCount(p) > 1)
            : lineCount(u) > 1);
        return {head: t.textContent.trim().replace(/\s+/g, ' ').slice(0, 80),
                overflow: Math.round(t.getBoundingClientRect().right - right),
                estimates: units.length,
                split: broken.map(u => u.textContent)};
    });
    return JSON.stringify({theme_font: themeFont, code: code, tables: tables,
                           text: article.textContent});
})()"""


def page_layout_at_1366_px(browser: _chromium.Chromium, url: str) -> dict:
    """What the page at ``url`` shows in a 1366 x 768 window, its folded cells opened.

    Returns
    -------
    dict
        ``theme_font``: the theme's size of a code block; ``code``: per code block its kind
        (``code``, ``output``, or ``package code``: a literalinclude, a docstring's example), font
        size, longest line, whether it wraps, its scroll and visible widths; ``tables``:
        per table its first words, how far it reaches past the article's right edge (px),
        how many estimates with an interval it holds and the ones that a line breaks
        apart; ``text``: the article's text.
    """
    target, session = browser.open_tab()
    try:
        browser.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1366, "height": 768, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        browser.send("Page.navigate", {"url": url}, session=session)
        browser.wait_for("Page.loadEventFired", session)
        return json.loads(browser.evaluate(PAGE_LAYOUT_JS, session))
    finally:
        browser.send("Target.closeTarget", {"targetId": target})


def layout_problems(layout: dict) -> list[str]:
    """What does not read at the theme's size on a page (from page_layout_at_1366_px).

    Code smaller than the theme's; a code line wider than its block (it scrolls, or a
    source line wraps: only output lines may); a table wider than the article; an
    estimate and its interval broken over two lines; a figure whose labels overlap
    (the page's warning, :data:`helpers.report.FIGURE_LABELS_OVERLAP`).
    """
    from helpers.report import FIGURE_LABELS_OVERLAP

    problems = []
    for block in layout["code"]:
        kind = block["kind"]
        if block["font"] != layout["theme_font"]:
            problems.append(f"{kind} at {block['font']}, not the theme's {layout['theme_font']}")
        # Output lines, and the package's code included on a page (formatted at 100
        # columns, pyproject.toml), may wrap; the notebooks' code must fit.
        if block["scroll"] > block["width"] or (block["wraps"] and kind == "code"):
            problems.append(f"{kind} line of {block['longest']} characters wider than its block")
    for table in layout["tables"]:
        if table["overflow"] > 0:
            wider = f"{table['overflow']} px wider than the article"
            problems.append(f"table {table['head']!r} {wider}")
        problems += [f"estimate and interval wrap apart: {unit!r}" for unit in table["split"]]
    if FIGURE_LABELS_OVERLAP in layout["text"]:
        problems.append("a figure's labels overlap")
    return problems


def test_code_tables_and_figures_read_at_the_theme_s_size(built_book, browser):
    # ruff formats the book's notebook code at NOTEBOOK_LINE_LENGTH (book/ruff.toml); the
    # fixture's code line of that length is in a folded cell, the narrowest block.
    for name in ("alpha", "beta"):
        layout = page_layout_at_1366_px(browser, (built_book / f"{name}.html").as_uri())
        assert layout_problems(layout) == [], name
        if name == "alpha":
            assert any(b["longest"] == NOTEBOOK_LINE_LENGTH for b in layout["code"]), layout
            assert layout["theme_font"] == "14px"  # pydata-sphinx-theme's code size
        else:  # the table's intervals, marked by helpers.report.table_html
            assert [t["estimates"] for t in layout["tables"]] == [4], layout["tables"]


def test_layout_problems_are_found():
    fine = {"kind": "code", "font": "14px", "longest": 81, "wraps": False, "scroll": 700}
    layout = {
        "theme_font": "14px",
        "code": [
            {**fine, "width": 700},
            {**fine, "font": "11.5px", "width": 700},
            {**fine, "scroll": 760, "width": 700},
            {**fine, "kind": "output", "wraps": True, "width": 700},  # output lines may wrap
            {**fine, "kind": "package code", "wraps": True, "width": 700},  # so may these
        ],
        "tables": [{"head": "AUC", "overflow": 12, "estimates": 2, "split": ["0.9 (0.8-1.0)"]}],
        "text": "The labels of this figure run into each other: 'a' and 'b'.",
    }
    assert layout_problems(layout) == [
        "code at 11.5px, not the theme's 14px",
        "code line of 81 characters wider than its block",
        "table 'AUC' 12 px wider than the article",
        "estimate and interval wrap apart: '0.9 (0.8-1.0)'",
        "a figure's labels overlap",
    ]
