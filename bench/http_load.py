"""The HTTP load test of issue 14 (a benchmark command, not a test): `ynet-db serve` on loopback, searched
by 1, 4 and 16 concurrent clients uploading photos.

    python bench/http_load.py                                  # 10,000 products, >= 200 queries per level
    python bench/http_load.py --products 2000 --samples 20     # a quick check that it works (not for the README)
    python bench/http_load.py --via worker --out bench/results/http-worker.json   # queries to a search worker

A fresh embedded PostgreSQL in a temporary directory gets the default model (active) and generated
catalogue vectors, as bench/search.py makes them. The service runs as `ynet-db serve` with its default
settings (the model in its process, YNET_MAX_CONCURRENT_SEARCHES=4, YNET_SEARCH_WAIT_S=2) unless told
otherwise; with `--via worker` it hands the queries through `--broker` to one `ynet-db worker --queues search`
process (solo pool), started first, as `ynet-db serve --via worker` is deployed. Each client is a thread
with one keep-alive connection that posts 224x224 photos as
multipart uploads, one after another. A level ends when it has `--samples` answers or after
`--max-seconds`, whichever comes first (so the run is bounded in count and time); it reports queries/s
(answered 200 per second of wall time), p50 and p99 latency of the 200 answers, and every other status
it met (429 when the slots stayed busy past the wait). The machine's load average is recorded beside
the numbers: on a busy machine they mean little.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np
from bench_db import IndexLinks, load_catalogue, start_search_worker
from search import clustered_vectors, photos

SETTINGS = ("YNET_MAX_CONCURRENT_SEARCHES", "YNET_SEARCH_WAIT_S", "YNET_RUNTIME", "YNET_DEVICE")
"""The environment's settings that shape the numbers, recorded beside them."""
STARTUP_TIMEOUT_S = 900.0
"""The first start exports the ONNX graphs of the default model (minutes on a busy machine)."""


@dataclass
class Level:
    clients: int
    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    wall_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, status: int, seconds: float) -> None:
        with self.lock:
            self.statuses[status] += 1
            if status == 200:
                self.latencies_s.append(seconds)

    def report(self) -> dict[str, Any]:
        ms = np.asarray(self.latencies_s) * 1000
        return {
            "clients": self.clients,
            "answered": len(self.latencies_s),
            "queries_per_s": round(len(self.latencies_s) / self.wall_s, 2) if self.wall_s else 0.0,
            "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None,
            "statuses": {str(status): n for status, n in sorted(self.statuses.items())},
            "wall_s": round(self.wall_s, 1),
        }


def multipart(image: bytes, k: int) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="k"\r\n\r\n{k}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="q.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def jpeg_bodies(count: int, k: int) -> list[tuple[bytes, str]]:
    bodies = []
    for picture in photos(count, seed=3):
        out = io.BytesIO()
        picture.save(out, format="JPEG", quality=90)
        bodies.append(multipart(out.getvalue(), k))
    return bodies


def client(port: int, level: Level, bodies: list[tuple[bytes, str]], stop: threading.Event, offset: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    i = offset
    try:
        while not stop.is_set():
            body, kind = bodies[i % len(bodies)]
            i += 1
            started = time.perf_counter()
            connection.request("POST", "/search", body=body, headers={"Content-Type": kind})
            response = connection.getresponse()
            response.read()
            level.record(response.status, time.perf_counter() - started)
    finally:
        connection.close()


def run_level(port: int, clients: int, samples: int, max_seconds: float, bodies: list[tuple[bytes, str]]) -> Level:
    level, stop = Level(clients), threading.Event()
    threads = [
        threading.Thread(target=client, args=(port, level, bodies, stop, n * 7), daemon=True) for n in range(clients)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    while time.perf_counter() - started < max_seconds:
        with level.lock:
            if sum(level.statuses.values()) >= samples:
                break
        time.sleep(0.05)
    stop.set()
    for thread in threads:  # each finishes the request in hand; the wall time includes it
        thread.join(180)
    level.wall_s = time.perf_counter() - started
    return level


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_serve(url: str, data_dir: Path, port: int, via: str, broker: str) -> subprocess.Popen[bytes]:
    """`ynet-db serve`, the model in its process or in search workers, with the settings of the environment."""
    env = {**os.environ, "YNET_DATABASE_URL": url, "YNET_DATA_DIR": str(data_dir), "YNET_BROKER_URL": broker}
    argv = [sys.executable, "-m", "ynet_db", "serve", "--port", str(port), "--via", via, "--log-level", "warning"]
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=sys.stderr, start_new_session=True)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise click.ClickException(f"ynet-db serve exited with {process.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            pass
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    raise click.ClickException(f"ynet-db serve was not healthy within {STARTUP_TIMEOUT_S:g} s")


@click.command()
@click.option("--products", type=click.IntRange(100, 10_000_000), default=10_000, show_default=True)
@click.option("--levels", default="1,4,16", show_default=True, help="Concurrent clients per level, comma-separated.")
@click.option("--samples", type=click.IntRange(1), default=200, show_default=True, help="Queries per level (at least).")
@click.option("--max-seconds", type=click.FloatRange(1), default=300.0, show_default=True, help="Time bound per level.")
@click.option("--k", type=click.IntRange(1, 200), default=20, show_default=True)
@click.option(
    "--via",
    type=click.Choice(["process", "worker"]),
    default="process",
    show_default=True,
    help="The model in the service's process, or in a search worker it hands queries to through --broker.",
)
@click.option("--broker", default="redis://127.0.0.1:6379/14", show_default=True, help="The broker for --via worker.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench/results/http.json"))
def main(
    products: int, levels: str, samples: int, max_seconds: float, k: int, via: str, broker: str, out: Path
) -> None:
    from ynet_db.db import migrate
    from ynet_db.db.engine import make_engine
    from ynet_db.db.server import start_embedded, stop_embedded
    from ynet_db.nn.model import RetrievalModel

    load_before = round(os.getloadavg()[0], 2)
    version = RetrievalModel.load_default().version
    data_dir = Path(tempfile.mkdtemp(prefix="ynet-bench-http-"))
    server = start_embedded(data_dir / "pgdata")
    engine = make_engine(server.url())
    process = worker = None
    try:
        migrate.upgrade(engine)
        click.echo(f"loading {products} products ...", err=True)
        load_catalogue(engine, version, clustered_vectors(products, 1280, seed=products), IndexLinks())
        port = free_port()
        click.echo("starting ynet-db serve (the first start exports the model's ONNX graphs) ...", err=True)
        url = server.url().render_as_string(hide_password=False)
        if via == "worker":  # first: the service is healthy only once a search worker answers
            worker = start_search_worker(url, broker, data_dir)
        process = start_serve(url, data_dir, port, via, broker)
        bodies = jpeg_bodies(30, k)
        run_level(port, 1, 5, 60.0, bodies)  # warm-up: first queries pay for lazy initialisation
        results = []
        for clients in (int(n) for n in levels.split(",")):
            click.echo(f"{clients} concurrent clients ...", err=True)
            results.append(run_level(port, clients, samples, max_seconds, bodies).report())
            click.echo(json.dumps(results[-1]), err=True)
    finally:
        for started in (process, worker):
            if started is not None:
                os.killpg(started.pid, signal.SIGTERM)
                started.wait(30)
        engine.dispose()
        stop_embedded(data_dir / "pgdata")
        shutil.rmtree(data_dir, ignore_errors=True)
    report = {
        "products": products,
        "k": k,
        "via": via,
        "samples_per_level": samples,
        "settings": {name: os.environ.get(name, "default") for name in SETTINGS},
        "cpu_count": os.cpu_count(),
        "load_average_1m": {"before": load_before, "after": round(os.getloadavg()[0], 2)},
        "levels": results,
    }
    text_out = json.dumps(report, indent=2)
    click.echo(text_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text_out + "\n")


if __name__ == "__main__":
    main()
