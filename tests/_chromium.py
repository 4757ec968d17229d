"""Drive Debian's headless Chromium over the DevTools protocol, for tests that open pages.

Chromium is started with ``--remote-debugging-pipe``: it reads commands on file descriptor
3 and writes replies and events on 4, each a JSON message ended by a NUL byte. That needs
no driver binary and no Python package. The protocol is the one ``tests/test_browser.py``
speaks (its own copy of this client predates this module); this one adds what an
application page needs: a tab kept open while the page builds itself, JavaScript
evaluated in it, and the events of that tab.

Browser tests are skipped only when ``chromium`` is not installed *and*
``BOOK_REQUIRE_BROWSER`` is unset (:data:`requires_chromium`): CI installs Chromium and sets
the variable, so there a missing browser is a failure.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium")
REQUIRED = bool(os.environ.get("BOOK_REQUIRE_BROWSER"))

#: Skip a test only when Chromium is missing and CI did not ask for it.
requires_chromium = pytest.mark.skipif(
    CHROMIUM is None and not REQUIRED,
    reason="chromium is not installed (apt-get install chromium); "
    "set BOOK_REQUIRE_BROWSER=1 to make this a failure",
)

#: The flags of tests/test_browser.py (the project's design card), plus what keeps a browser
#: talking to a local server from reaching anything else; a fresh --user-data-dir is added.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
    "--no-proxy-server",  # an http_proxy in the environment must not see 127.0.0.1 traffic
]
TIMEOUT = 30.0


class Chromium:
    """A headless Chromium driven over the DevTools pipe.

    Parameters
    ----------
    user_data_dir : Path
        An empty folder for the browser's profile (a temporary one per test module).
    extra_flags : sequence of str
        Flags added to :data:`FLAGS`, e.g. ``["--window-size=1280,1024"]``.

    Raises
    ------
    pytest.fail.Exception
        When ``BOOK_REQUIRE_BROWSER`` is set but ``chromium`` is not on the PATH.
    """

    def __init__(self, user_data_dir: Path, extra_flags: Sequence[str] = ()) -> None:
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
            [
                CHROMIUM,
                *FLAGS,
                *extra_flags,
                f"--user-data-dir={user_data_dir}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=wire_fds,
            close_fds=False,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        #: Events received while waiting for replies, oldest first.
        self.events: list[dict] = []

    def close(self) -> None:
        """Close the browser (killed when it does not exit within 10 s)."""
        try:
            self.send("Browser.close", timeout=5)
        except Exception:  # it is going away anyway
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

    def send(
        self,
        method: str,
        params: dict | None = None,
        session: str | None = None,
        timeout: float = TIMEOUT,
    ) -> dict:
        """Send a DevTools command and return its result.

        Parameters
        ----------
        method : str
            The protocol method, e.g. ``"Page.navigate"``.
        params : dict, optional
            Its parameters.
        session : str, optional
            The tab's session id (from :meth:`open_tab`); none for browser commands.
        timeout : float
            Seconds to wait for the reply.

        Returns
        -------
        dict
            The reply's ``result``. Events that arrive meanwhile are kept in :attr:`events`.

        Raises
        ------
        RuntimeError
            When Chromium answers with an error or exits.
        TimeoutError
            When no reply comes within ``timeout``.
        """
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

    def open_tab(self) -> tuple[str, str]:
        """Open a blank tab with its Page, Runtime, Log and Network events on.

        Returns
        -------
        tuple of str
            ``(target_id, session_id)``: close the tab with
            ``send("Target.closeTarget", {"targetId": target_id})``.
        """
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=session)
        return target, session

    def evaluate(self, expression: str, session: str, timeout: float = TIMEOUT) -> Any:
        """Evaluate a JavaScript expression in a tab and return its value.

        Parameters
        ----------
        expression : str
            JavaScript; a promise is awaited. The value must be JSON-serialisable.
        session : str
            The tab's session id.
        timeout : float
            Seconds to wait.

        Returns
        -------
        Any
            The value, converted from JSON.

        Raises
        ------
        RuntimeError
            When the expression throws (the exception's text is in the message).
        """
        reply = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            session=session,
            timeout=timeout,
        )
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression[:80]!r} threw: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def events_of(self, session: str, method: str) -> list[dict]:
        """The ``params`` of every kept event ``method`` of one tab, oldest first."""
        return [
            e["params"]
            for e in self.events
            if e.get("sessionId") == session and e.get("method") == method
        ]
