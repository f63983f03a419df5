"""A local HTTP server for download tests: no network needed."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@contextlib.contextmanager
def local_server(
    handler: type[BaseHTTPRequestHandler], name: str, **state: object
) -> Iterator[ThreadingHTTPServer]:
    """Serve ``handler`` on 127.0.0.1 from a thread while the block runs; ``state`` becomes
    attributes of the server (the handler reads them), ``server.url`` the URL of file ``name``."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    for key, value in state.items():
        setattr(srv, key, value)
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/{name}"  # type: ignore[attr-defined]
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
