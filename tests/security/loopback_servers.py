"""Real HTTP servers on loopback for the fetch-policy tests, and a DNS resolver tests can script.

A server counts the requests each path receives, so a test can prove that a refused fetch never
reached it (not only that the fetch failed).
"""

from __future__ import annotations

import io
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from PIL import Image

from ynet_db.images.policy import system_resolver

TRICKLE_GAP_S = 0.25
"""The trickling server's pause between bytes: shorter than a fetch's timeout, so that no single read
times out (the issue's case: one byte every 2 s against a 4 s timeout kept a fetch for 120 s)."""


def png_bytes(colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(out, format="PNG")
    return out.getvalue()


class Loopback(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hits: Counter[str] = Counter()
        self.first_byte_sent = threading.Event()
        self.held = threading.Semaphore(0)
        """Released once for each held response whose first byte is out."""
        self.release = threading.Event()
        """Set by the test when the held response may finish (or give up)."""

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


class _Handler(BaseHTTPRequestHandler):
    server: Loopback
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        parts = urlsplit(self.path)
        self.server.hits[parts.path] += 1
        if parts.path in ("/ok.png", "/cdn/ok.png"):
            self._send(200, png_bytes())
        elif parts.path == "/secret":
            self._send(200, b"the secret")
        elif parts.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", parse_qs(parts.query)["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif parts.path == "/trickle":
            self._trickle_body()
        elif parts.path == "/trickle-headers":
            self._trickle(b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1000)
        elif parts.path == "/held":
            self._held()
        else:
            self._send(404, b"nope")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _trickle_body(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self._trickle(png_bytes() + b"\0" * 1000)

    def _trickle(self, data: bytes) -> None:
        try:
            for byte in data:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(TRICKLE_GAP_S)  # the server under test is slow on purpose
        except OSError:
            pass  # the client hung up: what the deadline is for

    def _held(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"x")
        self.wfile.flush()
        self.server.first_byte_sent.set()
        self.server.held.release()
        self.server.release.wait(120)

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


@contextmanager
def loopback() -> Iterator[Loopback]:
    server = Loopback()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()


class ScriptedResolver:
    """Answers each host from a list of answers, one per lookup (the last one repeats); counts lookups.
    Other names go to the system's resolver."""

    def __init__(self, answers: dict[str, Sequence[Sequence[str]]]) -> None:
        self.answers = answers
        self.lookups: Counter[str] = Counter()

    def __call__(self, host: str, port: int) -> list[str]:
        if host not in self.answers:
            return system_resolver(host, port)
        answers = self.answers[host]
        answer = answers[min(self.lookups[host], len(answers) - 1)]
        self.lookups[host] += 1
        return list(answer)
