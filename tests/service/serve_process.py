"""A real `ynet-db serve` process on a free loopback port, and a small HTTP client for the tests.

The process runs in its own session and its whole group is killed at teardown. It serves the default
model on the eager torch runtime (exporting ONNX graphs into each test's data directory would add
seconds; the runtime has its own tests).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brokers import free_port

STARTUP_TIMEOUT_S = 180.0


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class ServeProcess:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> Reply:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            connection.request(method, path, body=body, headers=dict(headers or {}))
            response = connection.getresponse()
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            connection.close()

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def post_json(self, path: str, data: Any) -> Reply:
        return self.request("POST", path, json.dumps(data).encode(), {"Content-Type": "application/json"})

    def post_form(self, path: str, fields: Mapping[str, str], files: Mapping[str, bytes]) -> Reply:
        body, kind = multipart(fields, files)
        return self.request("POST", path, body, {"Content-Type": kind})

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)


def multipart(fields: Mapping[str, str], files: Mapping[str, bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts += [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.png"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + b"\r\n"
        for name, data in files.items()
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def start_serve(env: Mapping[str, str], log: Path, *options: str) -> ServeProcess:
    """`ynet-db serve` on a free port; returns once it answers /health (with any status)."""
    port = free_port()
    argv = [sys.executable, "-m", "ynet_db", "serve", "--host", "127.0.0.1", "--port", str(port), *options]
    full_env = {**os.environ, "YNET_DEVICE": "cpu", "YNET_RUNTIME": "torch", "OMP_NUM_THREADS": "1", **env}
    with log.open("wb") as sink:
        process = subprocess.Popen(argv, env=full_env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    served = ServeProcess(process, port, log)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"ynet-db serve exited ({process.returncode}):\n{served.output()[-4000:]}")
        try:
            served.get("/health")
            return served
        except OSError as error:
            if time.monotonic() > deadline:
                served.stop()
                log = served.output()[-4000:]
                raise RuntimeError(f"ynet-db serve did not answer in {STARTUP_TIMEOUT_S} s:\n{log}") from error
            time.sleep(0.2)
