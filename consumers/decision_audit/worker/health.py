"""Liveness of the worker loop, and the HTTP endpoint serving ``/metrics`` and ``/healthz``."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app


@dataclass
class Health:
    """What the loop last did, stamped with ``time.monotonic()``; read by ``/healthz``.

    The worker is *stuck* when its loop has not turned for ``stall_after`` seconds (blocked
    in a call), or when messages are waiting and nothing was stored for that long (the store
    keeps failing, so the loop only retries).
    """

    stall_after: float
    last_loop: float = 0.0
    last_progress: float = 0.0
    pending: int = 0
    retrying_since: float | None = None
    last_error: str | None = None

    def __post_init__(self) -> None:
        self.last_loop = self.last_progress = time.monotonic()

    def looped(self, pending: int) -> None:
        """The loop turned; ``pending`` messages wait to be stored."""
        now = time.monotonic()
        self.last_loop = now
        self.pending = pending
        if pending == 0 and self.retrying_since is None:
            self.last_progress = now

    def stored(self) -> None:
        """A batch was stored and committed."""
        self.last_progress = time.monotonic()
        self.retrying_since = None
        self.last_error = None

    def failing(self, error: str) -> None:
        """A store attempt failed and will be retried."""
        if self.retrying_since is None:
            self.retrying_since = time.monotonic()
        self.last_error = error

    def report(self) -> tuple[bool, dict[str, Any]]:
        """``(healthy, details)`` as served by ``/healthz``."""
        now = time.monotonic()
        loop_age = now - self.last_loop
        progress_age = now - self.last_progress
        problems = []
        if loop_age > self.stall_after:
            problems.append(f"worker loop has not turned for {loop_age:.0f}s")
        if (self.pending or self.retrying_since is not None) and progress_age > self.stall_after:
            problems.append(
                f"{self.pending} message(s) waiting, nothing stored for {progress_age:.0f}s"
            )
        details: dict[str, Any] = {
            "status": "stuck" if problems else "ok",
            "problems": problems,
            "pending": self.pending,
            "seconds_since_loop": round(loop_age, 3),
            "seconds_since_progress": round(progress_age, 3),
            "retrying_for": None
            if self.retrying_since is None
            else round(now - self.retrying_since, 3),
            "last_error": self.last_error,
        }
        return not problems, details


_WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def make_app(registry: CollectorRegistry, health: Health) -> _WsgiApp:
    """WSGI app: ``/healthz`` (200 ok, 503 stuck, JSON body); anything else is ``/metrics``."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            ok, details = health.report()
            body = json.dumps(details).encode()
            start_response(
                "200 OK" if ok else "503 Service Unavailable",
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
            )
            return [body]
        result: Iterable[bytes] = metrics(environ, start_response)
        return result

    return app


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line each."""


class MetricsServer:
    """Serves ``/metrics`` and ``/healthz`` from a background thread."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, health: Health) -> None:
        self._httpd = make_server(
            host,
            port,
            make_app(registry, health),
            server_class=_ThreadingServer,
            handler_class=_QuietHandler,
        )
        self.port: int = self._httpd.server_port
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="decision-audit-metrics", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)
