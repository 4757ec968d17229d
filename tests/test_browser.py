"""Open the built book in a real browser (Debian's headless Chromium) from ``file://``.

Builds the fixture book of ``test_book.py`` with the runner, then loads every chapter and
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

import fcntl
import io
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from helpers import book
from test_book import make_fixture_book

CHROMIUM = shutil.which("chromium")
REQUIRED = bool(os.environ.get("BOOK_REQUIRE_BROWSER"))

pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None and not REQUIRED,
        reason="chromium is not installed (apt-get install chromium); "
        "set BOOK_REQUIRE_BROWSER=1 to make this a failure",
    ),
]

#: The flags the project's design card fixes; a fresh --user-data-dir is added per run.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
TIMEOUT = 30.0


class Chromium:
    """A headless Chromium driven over the DevTools pipe."""

    def __init__(self, user_data_dir: Path) -> None:
        if CHROMIUM is None:
            pytest.fail("BOOK_REQUIRE_BROWSER is set but chromium is not installed")
        # Chromium reads commands from fd 3 and writes replies to fd 4.
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_fds() -> None:
            # Copy both ends above 10 first: a pipe end may itself be fd 3 or 4, and
            # dup2 onto itself would leave it close-on-exec.
            high_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
            high_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)  # os.dup2 makes the copies inheritable
            os.dup2(high_w, 4)

        self.process = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={user_data_dir}", "--remote-debugging-pipe",
             "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=wire_fds,
            close_fds=False,
        )  # fmt: skip
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001 - it is going away anyway
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from chromium")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium exited (status {self.process.poll()})")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = TIMEOUT) -> dict:  # fmt: skip
        """Send a command and return its result; events that arrive meanwhile are kept."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

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
            e["params"]["exceptionDetails"] for e in mine if e["method"] == "Runtime.exceptionThrown"
        ]
        page["console_errors"] = [
            e["params"]["args"] for e in mine
            if e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert")
        ] + [
            e["params"]["entry"] for e in mine
            if e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error"
        ]  # fmt: skip
        page["remote_requests"] = [
            e["params"]["request"]["url"] for e in mine
            if e["method"] == "Network.requestWillBeSent"
            and not e["params"]["request"]["url"].startswith(("file:", "data:", "about:", "blob:"))
        ]  # fmt: skip
        self.send("Target.closeTarget", {"targetId": target})
        self.events = [e for e in self.events if e.get("sessionId") != session]
        return page


@pytest.fixture(scope="module")
def built_book(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser-book")
    layout = make_fixture_book(root)
    return book.build_book(**layout, output_dir=root, out=io.StringIO()).parent


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
