"""What the search benchmarks share: a fresh embedded PostgreSQL, a catalogue of given vectors loaded
into it (binary COPY, the model's HNSW index built after, as a bulk import would), the filter tags, and
the latency measures (the prefilter's statistics, end-to-end in-process search)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import click
import numpy as np
from PIL import Image
from sqlalchemy import URL, Connection, Engine, text
from tqdm import tqdm

K = 20
CANDIDATES = 256

FILTER_SHARES = {"10%": 10, "1%": 100, "0.1%": 1000}
"""Tag 'fN' is on every N-th product (product p<i> when i % N == 0)."""


Photo = Image.Image | bytes
"""A query photo: a picture, or a file's bytes as a shopper uploads it."""


shared_buffers_option = click.option(
    "--shared-buffers",
    default="4GB",
    show_default=True,
    help="The server's shared_buffers: enough to hold the HNSW index, as a search server is configured.",
)
"""The search benchmarks' server memory option: one default, so their latencies compare."""


class IndexLinks(NamedTuple):
    """The model index's graph (`ynet.build_model_index`): pgvector's defaults unless asked, and its element type
    (None: chosen by the catalogue's size, `ynet_db.search.index_links`)."""

    m: int = 16
    ef_construction: int = 64
    element: str | None = None


class Database(NamedTuple):
    engine: Engine
    url: URL
    data_dir: Path


@contextmanager
def fresh_database(shared_buffers: str | None = None) -> Iterator[Database]:
    """An embedded PostgreSQL in a temporary directory, migrated; stopped and removed afterwards.

    `shared_buffers` (e.g. '4GB'), as a server that searches a large catalogue is given: PostgreSQL's
    default (128MB) holds a fraction of a 1280-d HNSW index, and every page an index scan visits beyond
    it is copied in from the operating system's cache, evicting another
    (docs/operations.md#a-growing-catalogue-the-models-index).
    """
    from ynet_db.db import migrate
    from ynet_db.db.engine import make_engine
    from ynet_db.db.server import libpq_dsn, restart_embedded, start_embedded, stop_embedded

    data_dir = Path(tempfile.mkdtemp(prefix="ynet-bench-"))
    server = start_embedded(data_dir / "pgdata")
    if shared_buffers:
        import psycopg

        with psycopg.connect(libpq_dsn(server.url("postgres")), autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET shared_buffers = '{shared_buffers}'")
        server = restart_embedded(data_dir / "pgdata")  # shared_buffers is read at start only
    engine = make_engine(server.url(), pool_size=20, max_overflow=0)
    try:
        migrate.upgrade(engine)
        yield Database(engine, server.url(), data_dir)
    finally:
        engine.dispose()
        stop_embedded(data_dir / "pgdata")
        shutil.rmtree(data_dir, ignore_errors=True)


def stats(samples_s: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(samples_s) * 1000
    return {"median_ms": round(float(np.median(ms)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2)}


def timed(run: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = run()
    return value, time.perf_counter() - started


def filter_rows(n: int, every: int) -> np.ndarray:
    """The rows (product p<i> is row i) that carry tag f<every>."""
    return np.arange(0, n, every)


def load_catalogue(engine: Engine, version: str, vectors: np.ndarray, links: IndexLinks) -> dict[str, Any]:
    """Model row, products (with the filter tags), embeddings by binary COPY; the HNSW index built after."""
    n, dim = vectors.shape
    with engine.begin() as conn:
        model_id = conn.execute(
            text(
                "INSERT INTO ynet.models (name, version, embedding_dim, weights_sha256) "
                "VALUES ('bench', :v, :d, :s) RETURNING id"
            ),
            {"v": version, "d": dim, "s": "0" * 64},
        ).scalar_one()
        index = conn.execute(text("SELECT ynet.model_index_name(:id)"), {"id": model_id}).scalar_one()
        conn.execute(text(f'DROP INDEX ynet."{index}"'))
        conn.execute(
            text(
                "INSERT INTO ynet.products (external_id, category, tags, image_uri) "
                "SELECT 'p' || i, 'c' || (i % 20), "
                "  array_remove(ARRAY[CASE WHEN i % 10 = 0 THEN 'f10' END, CASE WHEN i % 100 = 0 THEN 'f100' END, "
                "                     CASE WHEN i % 1000 = 0 THEN 'f1000' END, 'all'], NULL), '/img/' || i "
                "FROM generate_series(0, :n - 1) i"
            ),
            {"n": n},
        )
    started = time.perf_counter()
    copy_embeddings(engine, model_id, vectors)
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    with engine.begin() as conn:
        build_index(conn, model_id, links, n, dim)
        conn.execute(
            text("UPDATE ynet.models SET state = 'active', activated_at = now() WHERE id = :id"), {"id": model_id}
        )
    index_s = time.perf_counter() - started
    with engine.begin() as conn:
        conn.execute(text("ANALYZE ynet.products"))
        conn.execute(text("ANALYZE ynet.embeddings"))
    return {
        "model_id": model_id,
        "load_s": round(load_s, 1),
        "index_build_s": round(index_s, 1),
        "index": links._asdict(),
    }


def build_index(conn: Connection, model_id: int, links: IndexLinks, n: int, dim: int) -> None:
    """The model's index, built as the trigger builds it with the links asked, with the memory the build wants."""
    conn.execute(text(f"SET LOCAL maintenance_work_mem = '{build_memory_mb(n, dim, links.m)}MB'"))
    build = text("SELECT ynet.build_model_index(:id, :m, :ef, :element)")
    conn.execute(build, {"id": model_id, "m": links.m, "ef": links.ef_construction, "element": links.element})


def build_memory_mb(n: int, dim: int, m: int, bytes_per_dim: float = 4) -> int:
    """maintenance_work_mem for an HNSW build of n vectors: enough for the whole graph, or the build slows
    down on disk. Per vector its elements, and up to 3m links (2m on the ground layer, m above) of 12
    bytes with their tuple headers."""
    return max(1024, int(n * (dim * bytes_per_dim + 36 * m + 50) * 1.5 / 2**20))


def copy_embeddings(engine: Engine, model_id: int, vectors: np.ndarray) -> None:
    """Product p<i> gets vectors[i], through COPY in pgvector's binary form (no text round trip)."""
    from pgvector.psycopg import register_vector

    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        register_vector(raw)
        ids = dict(raw.execute("SELECT external_id, id FROM ynet.products").fetchall())
        columns = "product_id, model_id, image_sha256, embedding"
        with (
            raw.cursor() as cursor,
            cursor.copy(f"COPY ynet.embeddings ({columns}) FROM STDIN (FORMAT BINARY)") as copy,
        ):
            copy.set_types(["int4", "int4", "text", "vector"])
            for i in tqdm(range(len(vectors)), desc="embeddings", unit="row", mininterval=5, leave=False):
                copy.write_row((ids[f"p{i}"], model_id, "0" * 64, vectors[i]))
        raw.commit()


def end_to_end(engine: Engine, model: Any, images: Sequence[Photo], via: Any = None) -> dict[str, Any]:
    """In-process (or through `via`) search latency of each photo: decode, encode, prefilter, re-rank; and
    the median of each stage the search itself timed, with the rest (decode, reading the active model,
    building rows and statements, a worker's messaging) as `other`."""
    from ynet_db.search.query import search

    latencies, stages = [], []
    for image in tqdm(images, desc="end to end", unit="query", mininterval=5, leave=False):
        result, seconds = timed(
            lambda i=image: search(
                engine, i, k=K, candidates=CANDIDATES, rerank=True, model=model if via is None else None, via=via
            )
        )
        latencies.append(seconds)
        stages.append({**result.timings_ms, "other": 1000 * seconds - sum(result.timings_ms.values())})
    medians = {name: round(float(np.median([s[name] for s in stages])), 2) for name in stages[0]}
    return {**stats(latencies), "stages_median_ms": medians}


def throughput(engine: Engine, model: Any, images: Sequence[Photo], clients: int, seconds: float) -> float:
    """Queries/s that `clients` threads searching in-process sustain for `seconds`."""
    from ynet_db.search.query import search

    deadline = time.monotonic() + seconds

    def client(offset: int) -> int:
        done = 0
        while time.monotonic() < deadline:
            search(engine, images[(offset + done) % len(images)], k=K, candidates=CANDIDATES, rerank=True, model=model)
            done += 1
        return done

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        total = sum(pool.map(client, range(clients)))
    return round(total / (time.perf_counter() - started), 2)


def start_search_worker(url: str, broker: str, data_dir: Path) -> subprocess.Popen[bytes]:
    """A `ynet-db worker` process for search tasks on this database and broker (CPU, one solo process, no
    dispatcher: nothing to embed); in a session of its own, so `os.killpg` stops it with its children."""
    env = {**os.environ, "YNET_DATABASE_URL": url, "YNET_BROKER_URL": broker, "YNET_DATA_DIR": str(data_dir)}
    env["YNET_DEVICE"] = "cpu"
    argv = [sys.executable, "-m", "ynet_db", "worker", "--pool", "solo", "--no-dispatcher", "--queues", "search"]
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
