"""What keeps a few clients from taking the inspection server down: per-connection read deadlines,
a cap on open connections, rate-limited logging, and the listening socket bound before anything
says "serving".

uvicorn has no deadline for a request's headers (its keep-alive timer starts only after a first
response, and any byte cancels it), and it accepts every connection (``limit_concurrency`` answers
503 only once a request's headers have arrived). Its h11 protocol is extended here with both; the
body's deadline is the app's (``server.read_body``), which can answer 408.
"""

from __future__ import annotations

import logging
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any

from dualpatch.errors import ConfigError

LOG = logging.getLogger("dualpatch.serve")

#: sent to a connection over the cap when no idle connection can make room for it
_BUSY_BODY = b'{"error": "too many open connections; retry later"}'
BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"retry-after: 1\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
    % (len(_BUSY_BODY), _BUSY_BODY)
)


@dataclass(frozen=True)
class Guard:
    """Per-connection limits: a request's headers must arrive within ``header_timeout`` seconds
    of the connection opening or of the previous response; its body within ``body_timeout`` of
    the headers; at most ``max_connections`` are open at once."""

    header_timeout: float = 5.0
    body_timeout: float = 30.0
    max_connections: int = 512


class RateLimit(logging.Filter):
    """At most ``burst`` records of one message per ``window`` seconds, and ``total`` of all;
    the next record let through says how many were left out."""

    def __init__(self, burst: int = 5, total: int = 40, window: float = 10.0) -> None:
        super().__init__()
        self.burst, self.total, self.window = burst, total, window
        self.start = time.monotonic()
        self.counts: dict[str, int] = {}
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now - self.start > self.window:
            self.start, self.counts = now, {}
        key = f"{record.name}:{record.msg}"  # the template: one key per kind of message
        seen = self.counts[key] = self.counts.get(key, 0) + 1
        if seen > self.burst or sum(self.counts.values()) > self.total:
            self.dropped += 1
            return False
        if self.dropped:
            record.msg = f"{record.getMessage()} ({self.dropped} log lines left out before this)"
            record.args, self.dropped = None, 0
        record.exc_info = record.exc_text = None  # one line: no traceback in the log
        return True


class _Lower(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def quiet_logging() -> RateLimit:
    """One rate limit over the server's own log, uvicorn's and asyncio's (accept errors)."""
    limit = RateLimit()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Lower())
    LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)
    LOG.propagate = False
    for name in ("dualpatch.serve", "uvicorn.error", "asyncio"):
        logging.getLogger(name).addFilter(limit)
    return limit


def guarded_protocol(guard: Guard) -> type:
    """uvicorn's h11 protocol with the header deadline and the connection cap of ``guard``."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    # connections waiting for a request's headers, oldest first, in two groups: those that never
    # sent one give way before a client's keep-alive connection between two requests
    fresh: dict[Any, None] = {}
    between: dict[Any, None] = {}

    def make_room() -> bool:
        for group, kind in ((fresh, "a silent"), (between, "a keep-alive")):
            for idle in list(group):
                group.pop(idle)
                if not idle.transport.is_closing():
                    LOG.warning("closed %s connection from %s to make room", kind, _peer(idle))
                    idle.transport.close()
                    return True
        return False

    def open_count(connections: set) -> int:
        # connections already closing still count in uvicorn's set until the loop drops them
        return sum(not c.transport.is_closing() for c in connections)

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._deadline: Any = None
            full = open_count(self.connections) > guard.max_connections
            if full and not make_room():
                LOG.warning("refused a connection: %d open, none idle", guard.max_connections)
                transport.write(BUSY_RESPONSE)
                transport.close()
                return
            self._await_request()

        def _await_request(self) -> None:
            self._cancel()
            (fresh if self.cycle is None else between)[self] = None
            self._deadline = self.loop.call_later(guard.header_timeout, self._expire, self.cycle)

        def _cancel(self) -> None:
            fresh.pop(self, None)
            between.pop(self, None)
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self, cycle: Any) -> None:
            self._cancel()
            if self.cycle is cycle and not self.transport.is_closing():
                LOG.warning(
                    "closed a connection from %s: no request within %g s",
                    _peer(self),
                    guard.header_timeout,
                )
                self.transport.close()

        def handle_events(self) -> None:
            before = self.cycle
            super().handle_events()
            if self.cycle is not before:  # a request's headers arrived: the app takes over
                self._cancel()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # the next request on this connection gets the same deadline (a pipelined one that
            # already arrived is the app's)
            done = self.cycle is None or self.cycle.response_complete
            if done and not self.transport.is_closing():
                self._await_request()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel()
            super().connection_lost(exc)

        def shutdown(self) -> None:
            # on SIGTERM a client still sending its body is let go at once; a request whose
            # body has arrived is answered first
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete and cycle.more_body:
                self.transport.close()
                return
            super().shutdown()

    return GuardedH11Protocol


def _peer(protocol: Any) -> str:
    client = getattr(protocol, "client", None)
    return f"{client[0]}:{client[1]}" if client else "an unknown address"


def bind(host: str, port: int, backlog: int = 128) -> socket.socket:
    """A listening TCP socket on ``host``:``port``, or one error line (a busy port, say)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(f"--host {host}: cannot listen there ({exc.strerror or exc})") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"--port {port}: cannot listen on {host}:{port} ({exc.strerror or exc})"
        ) from exc
    sock.set_inheritable(True)
    return sock
