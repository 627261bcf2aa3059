"""The ingestion pipeline end to end, against the encoder alone (a benchmark command, not a test).

    python bench/pipeline.py [--products 10000] [--workers 1 --workers 2] [--images DIR] [--out FILE]
    python bench/pipeline.py --products 300            # a quick run

1. Draws N shop photos with the generated benchmark's garments (or reuses a folder of them).
2. The encoder alone: fetch, decode, preprocess and encode_shop in batches in this process, with as
   many torch threads as one worker process gets; embeddings/s is the ceiling a worker can reach.
3. For each worker count: a real `ynet-db worker` (prefork, its dispatcher) is started and waited for
   (its heartbeat means the model is loaded), then the N products are inserted in one transaction
   (import -> triggers -> jobs -> NOTIFY -> dispatcher -> Celery -> worker -> embeddings); the rate is
   N over the time from the insert to the last embedding.
   While it runs, the CPU seconds of the worker's processes, of PostgreSQL's and of everything else on
   the machine are counted (psutil), per embedding: where the cores went when the pipeline falls short
   of the encoder alone.
4. Light load, with one worker: products are inserted one at a time at a low rate and each is polled
   until its embedding is committed (HNSW is updated in the same statement: committed = searchable);
   median and p99 of insert-to-searchable.
A fresh database is used: YNET_DATABASE_URL's server when set, else an embedded one in a temporary
folder. YNET_BROKER_URL (or --broker) picks the broker, as for the worker itself.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import psutil
import psycopg
import torch
from psycopg import sql
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL, make_url

from ynet_db.config import Settings
from ynet_db.data.garments import sample_garment
from ynet_db.data.scenes import shop_photo
from ynet_db.data.synth import SynthConfig, product_garment
from ynet_db.db import migrate
from ynet_db.db.engine import make_engine
from ynet_db.db.server import libpq_dsn, start_embedded, stop_embedded
from ynet_db.images.decode import decode_image
from ynet_db.ingestion import jobs
from ynet_db.models.registry import ModelIdentity, activate, register
from ynet_db.models.serving import load_serving
from ynet_db.nn.model import RetrievalModel

POLL_S = 0.01
"""Polling for one product's embedding (light load): cheap, and the latency's resolution."""
RATE_POLL_S = 0.5
"""Polling for the whole catalogue's count: rarely, as a count over thousands of rows every 10 ms would
take CPU from the worker being measured (0.5 s on a run of minutes is well under 1%)."""


@dataclass(frozen=True)
class Item:
    path: Path
    tags: list[str]
    category: str


def draw_images(folder: Path, count: int) -> list[Item]:
    """Shop photos of generated garments, one per product; files already drawn are reused."""
    folder.mkdir(parents=True, exist_ok=True)
    config, items = SynthConfig(seed=7), []
    for index in range(count):
        garment = product_garment(config, index)
        path = folder / f"{index:06d}.jpg"
        if not path.exists():
            rng = np.random.default_rng([7, index, 1])
            photo = shop_photo(garment, [sample_garment(rng)], 224, rng)  # shop photos show a second garment
            photo.image.save(path, "JPEG", quality=92)
        items.append(Item(path, list(garment.tags), garment.category))
    return items


def encoder_alone(model: RetrievalModel, items: list[Item], batch_size: int) -> float:
    """Embeddings/s of fetch + decode + preprocess + encode_shop, the work a worker does per item."""
    start = time.perf_counter()
    for offset in range(0, len(items), batch_size):
        batch = items[offset : offset + batch_size]
        pixels = [model.preprocess(decode_image(item.path.read_bytes(), source=str(item.path))) for item in batch]
        model.encode_shop(torch.stack(pixels), [item.tags for item in batch])
    return len(items) / (time.perf_counter() - start)


@contextmanager
def fresh_database() -> Iterator[URL]:
    external = Settings.from_env().database_url
    folder = None
    if external:
        server = make_url(external).set(drivername="postgresql+psycopg")
    else:
        folder = Path(tempfile.mkdtemp(prefix="ynet-bench-"))
        server = start_embedded(folder).url("postgres")
    name = f"ynet_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(libpq_dsn(server), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield server.set(database=name)
    finally:
        with psycopg.connect(libpq_dsn(server), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if folder is not None:
            stop_embedded(folder)


@contextmanager
def running_worker(
    url: URL, processes: int, batch_size: int, broker: str | None, log: Path, images: Path
) -> Iterator[psutil.Process]:
    env = {**os.environ, "YNET_DATABASE_URL": url.render_as_string(hide_password=False), "YNET_DEVICE": "cpu"}
    env["YNET_IMAGE_ROOTS"] = str(images.resolve())  # the fetch policy reads local images only under it
    if broker:
        env["YNET_BROKER_URL"] = broker
    argv = [sys.executable, "-m", "ynet_db", "worker", "--pool", "prefork", "--concurrency", str(processes)]
    argv += ["--batch-size", str(batch_size), "--tick", "2"]
    with log.open("ab") as sink:
        process = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield psutil.Process(process.pid)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def wait_until(
    engine: Engine, query: str, at_least: int, timeout_s: float, poll_s: float = POLL_S, **params: object
) -> float:
    """Poll `query` (a count) until it reaches `at_least`; returns the perf_counter time it did."""
    deadline = time.perf_counter() + timeout_s
    with engine.connect() as conn:
        while time.perf_counter() < deadline:
            if int(conn.execute(text(query), params).scalar_one()) >= at_least:
                conn.rollback()
                return time.perf_counter()
            conn.rollback()  # a fresh snapshot for the next poll
            time.sleep(poll_s)
    raise TimeoutError(f"{query} did not reach {at_least} in {timeout_s:g} s")


INSERT = text(
    "INSERT INTO ynet.products (external_id, category, tags, image_uri) VALUES (:sku, :category, :tags, :uri)"
)
LIVE_WORKERS = "SELECT count(*) FROM ynet.workers WHERE stopped_at IS NULL"
EMBEDDED = (
    "SELECT count(*) FROM ynet.embeddings e JOIN ynet.products p ON p.id = e.product_id WHERE p.external_id = :sku"
)


def row(sku: str, item: Item) -> dict[str, object]:
    return {"sku": sku, "category": item.category, "tags": item.tags, "uri": str(item.path)}


def reset(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM ynet.products"))
        conn.execute(text("DELETE FROM ynet.workers"))


def tree_cpu_s(root: psutil.Process) -> float:
    """CPU seconds of a process, its live descendants, and the children it has already reaped (PostgreSQL's
    backends that ended, a worker's replaced pool processes)."""
    times = root.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for process in root.children(recursive=True):
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:  # ended between the listing and the reading
            continue
        total += times.user + times.system
    return total


def postmaster(engine: Engine) -> psutil.Process | None:
    """The PostgreSQL server's main process when it runs on this machine (its backends are its children)."""
    with engine.connect() as conn:
        backend = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
    try:
        return psutil.Process(backend).parent()
    except psutil.Error:  # another machine's server
        return None


def machine_busy_s() -> float:
    times = psutil.cpu_times()
    return times.user + times.system + times.nice + getattr(times, "irq", 0.0) + getattr(times, "softirq", 0.0)


def cpu_counts(worker: psutil.Process, server: psutil.Process | None) -> dict[str, float]:
    return {
        "worker": tree_cpu_s(worker),
        "postgres": tree_cpu_s(server) if server else float("nan"),
        "machine": machine_busy_s(),
    }


def cpu_per_embedding(before: dict[str, float], after: dict[str, float], embeddings: int) -> dict[str, float]:
    """CPU milliseconds per embedding: the worker's processes, PostgreSQL's, and the rest of the machine
    (this process's polling, the broker, any other job)."""
    spent = {name: after[name] - before[name] for name in before}
    spent["other"] = spent.pop("machine") - spent["worker"] - spent["postgres"]
    return {f"{name}_ms": 1000 * seconds / embeddings for name, seconds in spent.items()}


def pipeline_rate(
    engine: Engine, items: list[Item], timeout_s: float, worker: psutil.Process, server: psutil.Process | None
) -> dict[str, Any]:
    rows = [
        {"sku": f"p{i}", "category": it.category, "tags": it.tags, "uri": str(it.path)} for i, it in enumerate(items)
    ]
    before = cpu_counts(worker, server)
    start = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(INSERT, rows)
    committed = time.perf_counter()
    done = wait_until(engine, "SELECT count(*) FROM ynet.embeddings", len(items), timeout_s, RATE_POLL_S)
    return {
        "insert_s": committed - start,
        "total_s": done - start,
        "embeddings_per_s": len(items) / (done - start),
        "cpu_per_embedding": cpu_per_embedding(before, cpu_counts(worker, server), len(items)),
    }


def latency(engine: Engine, items: list[Item], samples: int, interval_s: float) -> dict[str, float]:
    seconds = []
    for i in range(samples):
        item = items[i % len(items)]
        start = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(INSERT, row(f"lat{i}", item))
        found = wait_until(engine, EMBEDDED, 1, 60, sku=f"lat{i}")
        seconds.append(found - start)
        time.sleep(interval_s)
    return {"samples": samples, "median_s": statistics.median(seconds), "p99_s": float(np.percentile(seconds, 99))}


@click.command()
@click.option("--products", type=click.IntRange(min=1), default=10_000, show_default=True)
@click.option(
    "--workers", "worker_counts", type=click.IntRange(min=1), multiple=True, default=(1, 2), show_default=True
)
@click.option("--batch-size", type=click.IntRange(min=1), default=jobs.DEFAULT_BATCH_SIZE, show_default=True)
@click.option("--images", type=click.Path(file_okay=False, path_type=Path), help="Folder to draw into or reuse.")
@click.option("--latency-samples", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--latency-interval", type=click.FloatRange(min=0), default=1.0, show_default=True)
@click.option("--broker", help="A Celery broker URL (default: YNET_BROKER_URL, else the database).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench/pipeline.json"))
def main(
    products: int,
    worker_counts: tuple[int, ...],
    batch_size: int,
    images: Path | None,
    latency_samples: int,
    latency_interval: float,
    broker: str | None,
    out: Path,
) -> None:
    folder = images or Path(tempfile.gettempdir()) / "ynet-bench-images"
    out.parent.mkdir(parents=True, exist_ok=True)
    click.echo(f"drawing {products} shop photos into {folder} ...")
    items = draw_images(folder, products)
    threads = os.cpu_count() or 1  # what one prefork worker process gets (ynet-db worker: cores / processes)
    torch.set_num_threads(threads)
    model = load_serving(Settings.from_env())  # on the runtime YNET_RUNTIME picks, as the workers' will be
    encoder_alone(model, items[:batch_size], batch_size)  # warm-up
    here = psutil.Process()
    before = sum(here.cpu_times()[:2])
    alone = encoder_alone(model, items, batch_size)
    cpu_alone_ms = 1000 * (sum(here.cpu_times()[:2]) - before) / len(items)
    click.echo(f"encoder alone ({threads} threads, {model.runtime}): {alone:.1f} embeddings/s")
    click.echo(f"load average before the runs: {os.getloadavg()}")
    broker = broker or Settings.from_env().broker_url
    results: dict[str, Any] = {"products": products, "batch_size": batch_size, "broker": broker or "database"}
    results["encoder_alone_per_s"] = alone
    results["runtime"] = model.runtime
    results["encoder_alone_cpu_ms_per_embedding"] = cpu_alone_ms
    results["load_average_at_start"] = os.getloadavg()
    results["runs"] = []
    timeout = max(600.0, 20 * products / alone)
    with fresh_database() as url:
        engine = make_engine(url)
        migrate.upgrade(engine)
        register(engine, ModelIdentity.of(model))
        activate(engine, model.version)
        del model  # the workers load their own
        for count in worker_counts:
            reset(engine)
            log = out.with_suffix(f".worker{count}.log")
            with running_worker(url, count, batch_size, broker, log, folder) as worker:
                wait_until(engine, LIVE_WORKERS, count, 300)
                rate = pipeline_rate(engine, items, timeout, worker, postmaster(engine))
                run: dict[str, Any] = {"worker_processes": count, **rate}
                run["vs_encoder_alone"] = run["embeddings_per_s"] / alone
                if count == 1:
                    run["insert_to_searchable"] = latency(engine, items, latency_samples, latency_interval)
            results["runs"].append(run)
            click.echo(f"{count} worker process(es): {run['embeddings_per_s']:.1f} embeddings/s")
        engine.dispose()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    click.echo(f"written to {out}")


def print_table(results: dict[str, Any]) -> None:
    click.echo(f"\n{results['products']} products, batch {results['batch_size']}, broker {results['broker']}")
    click.echo(f"{'pipeline':<26}{'embeddings/s':>14}{'vs encoder':>12}{'median s':>10}{'p99 s':>8}")
    click.echo(f"{'encoder alone':<26}{results['encoder_alone_per_s']:>14.1f}{1.0:>12.2f}")
    for run in results["runs"]:
        lat = run.get("insert_to_searchable")
        tail = f"{lat['median_s']:>10.2f}{lat['p99_s']:>8.2f}" if lat else ""
        name = f"{run['worker_processes']} worker process(es)"
        click.echo(f"{name:<26}{run['embeddings_per_s']:>14.1f}{run['vs_encoder_alone']:>12.2f}{tail}")
    alone_ms = results["encoder_alone_cpu_ms_per_embedding"]
    click.echo(f"CPU ms per embedding: encoder alone {alone_ms:.1f}; worker / PostgreSQL / other:")
    for run in results["runs"]:
        cpu = run["cpu_per_embedding"]
        spent = " / ".join(f"{cpu[name]:.1f}" for name in ("worker_ms", "postgres_ms", "other_ms"))
        click.echo(f"  {run['worker_processes']} worker process(es): {spent}")


if __name__ == "__main__":
    main()
