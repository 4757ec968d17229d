"""The chapters open in JupyterLab with the book's kernel, checked in a real browser.

``make setup`` registers the venv's kernel as ``chest-xray-book`` inside the venv and
``make lab`` starts JupyterLab in ``book/``. Here JupyterLab is started the same way, headless,
on 127.0.0.1 with a random token and a free port, in a temporary copy of ``book/`` (so no
checkpoint or workspace file lands in the repository) whose ``model_1.ipynb`` names the
``chest-xray-book`` kernel. Debian's headless Chromium (driven over the DevTools pipe, see
``tests/_chromium.py``) then opens ``lab/tree/model_1.ipynb`` and the test checks what a
student would see: every cell of the notebook rendered in order, the chapter's title, the
kernel started under the book's name without a kernel-selection dialog, no JavaScript
exception and no request leaving 127.0.0.1.

The kernel tests need no browser; the browser test is skipped only when ``chromium`` is
not installed *and* ``BOOK_REQUIRE_BROWSER`` is unset (as in ``tests/test_browser.py``).
Every wait is bounded: the whole module takes well under :data:`BUDGET_S` seconds.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from _chromium import Chromium, requires_chromium

REPO = Path(__file__).resolve().parent.parent
BOOK = REPO / "book"
NOTEBOOK = "model_1.ipynb"
KERNEL_NAME = "chest-xray-book"
KERNEL_DISPLAY_NAME = "Python (chest X-ray book)"
#: Seconds for everything that waits in this module: server start, page, kernel, shutdown.
BUDGET_S = 90.0
SETUP_HINT = "run `make setup` (it registers the kernel with ipykernel install --sys-prefix)"
# A kernel, a JupyterLab server and headless Chromium: the slow kind `make quick` leaves out.
pytestmark = pytest.mark.browser


class Budget:
    """One time budget shared by every wait of the module, so the total stays bounded."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self, at_most: float | None = None) -> float:
        """Seconds left (at least 0.1, so a last try is still made), capped at ``at_most``."""
        left = max(self.deadline - time.monotonic(), 0.1)
        return left if at_most is None else min(left, at_most)

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline


@pytest.fixture(scope="module")
def budget() -> Budget:
    return Budget(BUDGET_S)


def venv_kernel_json() -> Path:
    return Path(sys.prefix) / "share" / "jupyter" / "kernels" / KERNEL_NAME / "kernel.json"


#: Variables that add folders before the venv's to Jupyter's search paths.
JUPYTER_SEARCH_PATHS = ("JUPYTER_PATH", "JUPYTER_CONFIG_PATH")


def jupyter_user_dirs(home: Path) -> dict[str, str]:
    """Jupyter's and IPython's per-user folders, moved into ``home``.

    With these set (and :data:`JUPYTER_SEARCH_PATHS` unset) kernel specs are found only in
    the venv (``sys.prefix``), not in a user-wide ``~/.local/share/jupyter``, and settings,
    workspaces and runtime files are written under ``home``.
    """
    return {
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "lab-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "lab-workspaces"),
        "IPYTHONDIR": str(home / "ipython"),
    }


# ---------------------------------------------------------------------------------------
# The kernel (no server, no browser)
# ---------------------------------------------------------------------------------------


def test_kernelspec_is_registered_in_the_venv_with_its_python():
    path = venv_kernel_json()
    assert path.is_file(), f"no kernel {KERNEL_NAME!r} in {path.parent.parent}: {SETUP_HINT}"
    spec = json.loads(path.read_text())
    assert spec["display_name"] == KERNEL_DISPLAY_NAME
    assert spec["language"] == "python"
    python = Path(spec["argv"][0])
    # The venv's own interpreter (not a bare "python" looked up on the PATH at start).
    assert python.is_absolute(), spec["argv"]
    assert python.parent == Path(sys.prefix) / "bin", spec["argv"]
    assert os.path.samefile(python, sys.executable), (python, sys.executable)
    assert spec["argv"][-4:] == ["-m", "ipykernel_launcher", "-f", "{connection_file}"]


def test_kernel_starts_and_imports_helpers_and_tensorflow(tmp_path, monkeypatch):
    from jupyter_client.manager import start_new_kernel

    for name, value in jupyter_user_dirs(tmp_path).items():
        monkeypatch.setenv(name, value)
    for name in JUPYTER_SEARCH_PATHS:
        monkeypatch.delenv(name, raising=False)
    manager, client = start_new_kernel(
        kernel_name=KERNEL_NAME, startup_timeout=30, cwd=str(tmp_path)
    )
    try:
        printed: list[str] = []

        def keep_stdout(message: dict) -> None:
            if message["msg_type"] == "stream" and message["content"]["name"] == "stdout":
                printed.append(message["content"]["text"])

        code = (
            "import json, sys, helpers, tensorflow\n"
            "print(json.dumps({'python': sys.executable, 'helpers': helpers.__file__,"
            " 'tensorflow': tensorflow.__version__}))"
        )
        reply = client.execute_interactive(code, timeout=60, output_hook=keep_stdout)
        assert reply["content"]["status"] == "ok", reply["content"]
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    seen = json.loads("".join(printed))
    assert os.path.samefile(seen["python"], sys.executable), seen
    assert Path(seen["helpers"]).resolve().is_relative_to(REPO / "helpers"), seen
    assert seen["tensorflow"].startswith("2."), seen


# ---------------------------------------------------------------------------------------
# The JupyterLab server on a copy of book/
# ---------------------------------------------------------------------------------------


@dataclass
class LabServer:
    url: str  # http://127.0.0.1:<port>/ (no token)
    token: str
    root: Path  # the copy of book/ JupyterLab serves
    process: subprocess.Popen
    log: Path

    def api(self, path: str, method: str = "GET", timeout: float = 5.0) -> dict:
        """Call the server's REST API with the token; return the decoded JSON (or {})."""
        request = urllib.request.Request(
            self.url + path.lstrip("/"),
            method=method,
            headers={"Authorization": f"token {self.token}"},
            data=b"" if method == "POST" else None,
        )
        with NO_PROXY.open(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else {}


#: An opener that never goes through an http_proxy of the environment: only 127.0.0.1.
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_book_for_lab(destination: Path) -> Path:
    """Copy book/ (without build or checkpoint folders) and point the chapter at the kernel."""
    shutil.copytree(
        BOOK,
        destination,
        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", "_build"),
    )
    path = destination / NOTEBOOK
    notebook = json.loads(path.read_text())
    notebook["metadata"]["kernelspec"] = {
        "name": KERNEL_NAME,
        "display_name": KERNEL_DISPLAY_NAME,
        "language": "python",
    }
    path.write_text(json.dumps(notebook, indent=1))
    return destination


def book_entries() -> set[str]:
    """The paths of every file and folder under the repository's book/.

    Names only: what JupyterLab would leave (``.ipynb_checkpoints/``, ``.virtual_documents/``)
    are new entries, while the notebooks' contents may change meanwhile by other hands.
    """
    return {str(p.relative_to(BOOK)) for p in BOOK.rglob("*")}


def stop_server(server: LabServer, budget: Budget) -> None:
    """Ask the server to shut down (it stops its kernels), then terminate, then kill."""
    process = server.process
    if process.poll() is None:
        try:
            server.api("api/shutdown", method="POST", timeout=5)
        except (OSError, urllib.error.URLError):
            process.terminate()
        try:
            process.wait(timeout=budget.left(at_most=15))
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
    # The server ran in its own process group: whatever of it is left (a kernel it did not
    # get to stop) goes with it.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory, budget):
    home = tmp_path_factory.mktemp("lab-home")
    root = copy_book_for_lab(home / "book")
    port, token = free_port(), secrets.token_hex(24)
    log = home / "server.log"
    command = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",  # a taken port is an error, not another port
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        # Nothing off the machine: no news feed, no update check.
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",  # lists installed extensions, never asks PyPI
    ]
    if os.geteuid() == 0:  # CI containers run as root, which Jupyter refuses unless told
        command.append("--allow-root")
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            command,
            cwd=home,
            env={
                **{k: v for k, v in os.environ.items() if k not in JUPYTER_SEARCH_PATHS},
                **jupyter_user_dirs(home),
            },
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, kernels included
        )
    server = LabServer(f"http://127.0.0.1:{port}/", token, root, process, log)
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"jupyter lab exited with {process.returncode}:\n{log.read_text()[-3000:]}"
                )
            try:
                server.api("api/status", timeout=2)
                break
            except (OSError, urllib.error.URLError):
                if budget.expired():
                    pytest.fail(f"jupyter lab did not answer in time:\n{log.read_text()[-3000:]}")
                time.sleep(0.25)
        yield server
    finally:
        stop_server(server, budget)


def test_server_reports_the_book_kernel(lab_server):
    specs = lab_server.api("api/kernelspecs")
    assert KERNEL_NAME in specs["kernelspecs"], (
        f"the server knows {sorted(specs['kernelspecs'])}, not {KERNEL_NAME!r}: {SETUP_HINT}"
    )
    spec = specs["kernelspecs"][KERNEL_NAME]["spec"]
    assert spec["display_name"] == KERNEL_DISPLAY_NAME
    assert os.path.samefile(spec["argv"][0], sys.executable), spec["argv"]


# ---------------------------------------------------------------------------------------
# The chapter in a real browser
# ---------------------------------------------------------------------------------------

#: What the page shows, read from its DOM (one JSON string).
PAGE_STATE = """JSON.stringify({
    cells: Array.from(document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell'))
        .map(c => c.classList.contains('jp-MarkdownCell') ? 'markdown'
                : c.classList.contains('jp-CodeCell') ? 'code' : 'raw'),
    title: (document.querySelector('.jp-NotebookPanel .jp-MarkdownCell h1') || {}).textContent
        || null,
    code: Array.from(document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .cm-content'))
        .map(e => e.innerText),
    kernel: (document.querySelector('.jp-Toolbar-kernelName') || {}).textContent || null,
    status: Array.from(document.querySelectorAll('.jp-StatusBar-TextItem'))
        .map(e => e.textContent).filter(t => t.includes(' | ')),
    dialogs: Array.from(document.querySelectorAll('.jp-Dialog')).map(d => d.innerText),
})"""


def wait_for_page(browser: Chromium, session: str, ready, budget: Budget, what: str) -> dict:
    """Poll :data:`PAGE_STATE` until ``ready(state)``; fail with the last state on timeout."""
    while True:
        state = json.loads(browser.evaluate(PAGE_STATE, session, timeout=budget.left(at_most=10)))
        if ready(state):
            return state
        if budget.expired():
            pytest.fail(f"{what} not seen in time; the page shows {state}")
        time.sleep(0.25)


def wait_for_kernel_session(server: LabServer, budget: Budget) -> dict:
    """Wait until the server runs an idle kernel for the chapter; return its session."""
    while True:
        sessions = [s for s in server.api("api/sessions") if s["path"] == NOTEBOOK]
        if sessions and sessions[0]["kernel"]["execution_state"] == "idle":
            return sessions[0]
        if budget.expired():
            pytest.fail(f"no idle kernel for {NOTEBOOK} in time; sessions: {sessions}")
        time.sleep(0.25)


@requires_chromium
def test_chapter_opens_in_jupyterlab_with_the_book_kernel(lab_server, budget, tmp_path_factory):
    notebook = json.loads((lab_server.root / NOTEBOOK).read_text())
    expected_cells = [cell["cell_type"] for cell in notebook["cells"]]
    markdown = ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "markdown"]
    title = next(
        line[2:].strip() for text in markdown for line in text.splitlines() if line.startswith("# ")
    )
    code = ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]
    first_code_line = code[0].splitlines()[0].strip()
    before = book_entries()

    # A desktop-sized window: in a narrow one JupyterLab moves toolbar items into a menu.
    browser = Chromium(tmp_path_factory.mktemp("lab-chromium-profile"), ["--window-size=1280,1024"])
    try:
        target, session = browser.open_tab()
        url = f"{lab_server.url}lab/tree/{NOTEBOOK}?token={lab_server.token}"
        browser.send("Page.navigate", {"url": url}, session=session)
        wait_for_page(
            browser,
            session,
            lambda s: len(s["cells"]) >= len(expected_cells) and s["title"],
            budget,
            f"the {len(expected_cells)} cells of {NOTEBOOK}",
        )
        kernel_session = wait_for_kernel_session(lab_server, budget)
        # The page is connected to that kernel once its status bar reads "<name> | Idle".
        idle = f"{KERNEL_DISPLAY_NAME} | Idle"
        state = wait_for_page(
            browser, session, lambda s: idle in s["status"], budget, f"{idle!r} in the status bar"
        )
        exceptions = browser.events_of(session, "Runtime.exceptionThrown")
        console_errors = [
            e["args"]
            for e in browser.events_of(session, "Runtime.consoleAPICalled")
            if e["type"] in ("error", "assert")
        ] + [
            e["entry"]
            for e in browser.events_of(session, "Log.entryAdded")
            if e["entry"]["level"] == "error"
        ]
        requests = [
            e["request"]["url"] for e in browser.events_of(session, "Network.requestWillBeSent")
        ]
        browser.send("Target.closeTarget", {"targetId": target})
    finally:
        browser.close()

    print(
        f"JupyterLab page: {len(state['cells'])} cells, title {state['title']!r}, "
        f"kernel {state['kernel']!r}, {len(requests)} requests"
    )
    assert exceptions == [], exceptions
    assert console_errors == [], console_errors
    # Every cell, in the notebook's order and kind, and the chapter's own text.
    assert state["cells"] == expected_cells
    assert title in state["title"], (title, state["title"])
    assert first_code_line in state["code"][0], (first_code_line, state["code"][:1])
    # The notebook's kernelspec matched a registered kernel: no "Select Kernel" dialog.
    assert state["dialogs"] == [], state["dialogs"]
    assert kernel_session["kernel"]["name"] == KERNEL_NAME, kernel_session
    assert state["kernel"] == KERNEL_DISPLAY_NAME, state["kernel"]
    local = ("data:", "blob:", "about:", lab_server.url)
    assert [u for u in requests if not u.startswith(local)] == []
    assert book_entries() - before == set(), "JupyterLab wrote into the repository's book/"
