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


#: Per code block of the page (folded cells opened first): its longest line, whether it wraps
#: (it is taller than with wrapping switched off), its scroll width and its visible width.
CODE_BLOCKS_JS = """(() => {
    document.querySelectorAll('details').forEach(d => { d.open = true; });
    return JSON.stringify(Array.from(
        document.querySelectorAll('div.highlight pre, div.cell_output pre')).map(p => {
            const lines = p.textContent.replace(/\\n$/, '').split('\\n');
            const height = p.scrollHeight, scroll = p.scrollWidth, width = p.clientWidth;
            const style = p.style.whiteSpace;
            p.style.whiteSpace = 'pre';
            const unwrapped = p.scrollHeight;
            p.style.whiteSpace = style;
            return {longest: Math.max(...lines.map(l => l.length)), wraps: height > unwrapped,
                    scroll: scroll, width: width};
        }));
})()"""


def code_blocks_at_1366_px(browser: _chromium.Chromium, url: str) -> list[dict]:
    """The code blocks of the page at ``url`` in a 1366 x 768 window (see CODE_BLOCKS_JS)."""
    target, session = browser.open_tab()
    try:
        browser.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1366, "height": 768, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        browser.send("Page.navigate", {"url": url}, session=session)
        browser.wait_for("Page.loadEventFired", session)
        return json.loads(browser.evaluate(CODE_BLOCKS_JS, session))
    finally:
        browser.send("Target.closeTarget", {"targetId": target})


def code_blocks_that_do_not_fit(blocks: list[dict]) -> list[dict]:
    """Blocks that scroll sideways, and blocks of lines of <= 100 characters that wrap."""
    return [b for b in blocks if b["scroll"] > b["width"] or (b["longest"] <= 100 and b["wraps"])]


def test_code_lines_of_100_characters_fit_a_1366_px_window(built_book, browser):
    # ruff formats the book's code at 100 characters; book/_static/code.css makes such a line
    # fit the theme's code blocks at a 1366 px window, and wraps a longer one (never cut).
    blocks = code_blocks_at_1366_px(browser, (built_book / "alpha.html").as_uri())
    assert any(b["longest"] == 100 for b in blocks), blocks  # the fixture's 100-character lines
    assert code_blocks_that_do_not_fit(blocks) == []
