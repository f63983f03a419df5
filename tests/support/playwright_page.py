"""Playwright against the system Chromium, and a real ``serve`` app on a loopback port.

The browser tests use pytest-playwright's fixtures (``page``); ``launch_args`` points them at
``/usr/bin/chromium`` (the one CI installs; ``playwright install`` is never run), and
``unavailable_reason`` says why they skip where it is missing.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

#: the system Chromium (Debian's package; scripts/install_chromium.sh in CI)
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
#: root in containers needs --no-sandbox; a small /dev/shm crashes renderers
ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]


def unavailable_reason() -> str | None:
    """Why Playwright cannot drive Chromium here, or None when it can."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM} (run scripts/install_chromium.sh, or set $CHROMIUM)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright not installed (pip install -e .[dev])"
    return None


def launch_args(defaults: dict[str, Any]) -> dict[str, Any]:
    """pytest-playwright's ``browser_type_launch_args``, on the system Chromium."""
    return {**defaults, "executable_path": CHROMIUM, "args": [*defaults.get("args", []), *ARGS]}


@contextlib.contextmanager
def live_server(config: Any) -> Iterator[str]:
    """``create_app(config)`` served by uvicorn on a free 127.0.0.1 port from a thread, as
    ``dualpatch serve`` serves it; yields the base URL (no trailing slash)."""
    import uvicorn

    from dualpatch.serving.guard import bind
    from dualpatch.serving.server import create_app

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(config), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
