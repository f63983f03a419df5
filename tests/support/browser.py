"""Drive Debian's headless chromium over the DevTools protocol (stdlib + ``websocket-client``).

Used by the report test (load a page, collect errors, read values) and to take screenshots:

    python tests/support/browser.py results/report.html docs/report.png
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # we run as root in CI containers
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # small /dev/shm in containers crashes renderers
    "--hide-scrollbars",
    "--remote-debugging-port=0",  # chromium picks a free port and writes it to DevToolsActivePort
]


def find_chromium() -> str | None:
    """Path of the chromium binary ($CHROMIUM, else /usr/bin/chromium or chromium on PATH)."""
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def unavailable_reason() -> str | None:
    """Why the browser cannot be driven here, or None when it can."""
    if find_chromium() is None:
        return "chromium not installed (run scripts/install_chromium.sh, or set $CHROMIUM)"
    try:
        import websocket  # noqa: F401
    except ImportError:
        return "websocket-client not installed (pip install websocket-client)"
    return None


class Page:
    """One tab, attached with a flat session; ``events`` collects everything the tab reports."""

    def __init__(self, browser: Browser, session_id: str):
        self.browser, self.session_id = browser, session_id
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        return self.browser.send(method, session_id=self.session_id, **params)

    def goto(self, url: str, timeout: float = 30.0) -> None:
        """Navigate and wait for the load event (all images loaded or failed)."""
        self.browser.loaded.discard(self.session_id)
        self.send("Page.navigate", url=url)
        self.browser.pump(lambda: self.session_id in self.browser.loaded, timeout)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page (DevTools, not page script)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"evaluate failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions, failed loads and error log entries so far."""
        out = []
        for e in self.events:
            m, p = e["method"], e.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append(f"exception: {p['exceptionDetails'].get('text')}")
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(f"console.{p['type']}: {[a.get('value') for a in p.get('args', [])]}")
            elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
                out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
            elif m == "Network.loadingFailed":
                out.append(f"load failed: {p.get('errorText')} ({p.get('requestId')})")
        return out

    def requested_urls(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events
                if e["method"] == "Network.requestWillBeSent"]

    def screenshot(self, width: int = 1280) -> bytes:
        """A PNG of the whole page (not only the viewport) at ``width`` CSS pixels."""
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=800,
                  deviceScaleFactor=1, mobile=False)
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": width, "height": max(1, int(size["height"])), "scale": 1}
        shot = self.send("Page.captureScreenshot", format="png", clip=clip,
                         captureBeyondViewport=True)
        return base64.b64decode(shot["data"])


class Browser:
    """A headless chromium process and its browser-level DevTools websocket."""

    def __init__(self, executable: str | None = None, timeout: float = 30.0):
        import websocket

        exe = executable or find_chromium()
        if exe is None:
            raise RuntimeError(unavailable_reason())
        self.profile = Path(tempfile.mkdtemp(prefix="dualpatch-chromium-"))
        # a file, not a pipe: chromium's chatter must never block it
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [exe, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=self.log,
        )
        self.timeout = timeout
        self._id = 0
        self.pages: dict[str, Page] = {}
        self.loaded: set[str] = set()
        try:
            port, path = self._devtools_address(timeout)
            # suppress_origin: chromium refuses websocket handshakes that carry an Origin header
            self.ws = websocket.create_connection(
                f"ws://127.0.0.1:{port}{path}", timeout=timeout, suppress_origin=True
            )
        except BaseException:
            self.close()
            raise

    def _devtools_address(self, timeout: float) -> tuple[int, str]:
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                err = self.log.read().decode(errors="replace")
                raise RuntimeError(f"chromium exited with {self.proc.returncode}: {err[-2000:]}")
            lines = port_file.read_text().split("\n") if port_file.exists() else []
            if len(lines) >= 2 and lines[0].strip() and lines[1].strip():
                return int(lines[0]), lines[1].strip()
            time.sleep(0.05)
        raise TimeoutError(f"chromium wrote no {port_file.name} within {timeout:.0f} s")

    def send(self, method: str, session_id: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its reply, filing events that arrive meanwhile."""
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session_id:
            msg["sessionId"] = session_id
        self.ws.send(json.dumps(msg))
        reply: dict[str, Any] = {}
        self.pump(lambda: bool(reply), self.timeout, want=self._id, into=reply)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def pump(self, done, timeout: float, want: int | None = None, into: dict | None = None) -> None:
        """Read messages until ``done()``; events go to their page's ``events``."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer from chromium within {timeout:.0f} s")
            msg = json.loads(self.ws.recv())
            if "id" in msg:
                if msg["id"] == want and into is not None:
                    into.update(msg)
                continue
            page = self.pages.get(msg.get("sessionId", ""))
            if page is not None:
                page.events.append(msg)
                if msg["method"] == "Page.loadEventFired":
                    self.loaded.add(page.session_id)

    def new_page(self) -> Page:
        """A fresh tab with Page, Runtime, Log and Network events on."""
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        page = self.pages[session] = Page(self, session)
        for domain in ("Page", "Runtime", "Log", "Network"):
            page.send(f"{domain}.enable")
        return page

    def close(self) -> None:
        """Close the browser (politely, then by force) and remove its profile."""
        ws = getattr(self, "ws", None)
        if ws is None:
            self.proc.terminate()
        else:
            try:
                self._id += 1
                ws.send(json.dumps({"id": self._id, "method": "Browser.close"}))
            except Exception:  # already gone: fall through to terminate
                pass
            ws.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


@contextmanager
def browser(timeout: float = 30.0) -> Iterator[Browser]:
    b = Browser(timeout=timeout)
    try:
        yield b
    finally:
        b.close()


def screenshot(html_path: str | os.PathLike[str], png_path: str | os.PathLike[str],
               width: int = 1280) -> Path:
    """Render ``html_path`` in headless chromium and write a full-page PNG to ``png_path``."""
    from dualpatch.fileio import write_bytes

    with browser() as b:
        page = b.new_page()
        page.goto(Path(html_path).resolve().as_uri())
        write_bytes(png_path, page.screenshot(width))
    return Path(png_path)


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: python tests/support/browser.py PAGE.html OUT.png [WIDTH]")
    print(screenshot(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:])))
