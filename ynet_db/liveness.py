"""Liveness of a loop process that serves no HTTP of its own (the search worker, the dispatcher).

The loop calls `beat()` each time it goes round with the database answering; `GET /health` on the
`--health-port` answers 200 while the last beat is recent and 503 once it is not, so a container's
health check sees a loop that hangs or has lost its database, not only a process that exists.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HEALTH_PATH = "/health"


class Liveness:
    """The time of the loop's last good round; `stale_after_s` is how long a round may take at most."""

    def __init__(self, stale_after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stale_after_s = stale_after_s
        self._clock = clock
        self._last = clock()
        self._lock = threading.Lock()

    def beat(self) -> None:
        with self._lock:
            self._last = self._clock()

    def age_s(self) -> float:
        with self._lock:
            return self._clock() - self._last

    def healthy(self) -> bool:
        return self.age_s() <= self.stale_after_s


def serve_health(liveness: Liveness, port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Answer `GET /health` on `port` from a daemon thread; the caller shuts the server down."""
    server = ThreadingHTTPServer((host, port), _handler(liveness))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="ynet-health", daemon=True).start()
    return server


def _handler(liveness: Liveness) -> type[BaseHTTPRequestHandler]:
    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
            if self.path.split("?", 1)[0] != HEALTH_PATH:
                self._answer(404, {"error": "not found", "field": "path"})
                return
            age = round(liveness.age_s(), 3)
            healthy = liveness.healthy()
            self._answer(200 if healthy else 503, {"healthy": healthy, "last_round_s_ago": age})

        def _answer(self, status: int, body: dict[str, object]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # a probe every few seconds is no news
            pass

    return Health
