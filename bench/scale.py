"""The scale benchmark of issue 13: search measured on the model's own embeddings (a benchmark command).

    ynet-db dataset synth bench-data/synth-seed13-20000x2 --seed 13 --train-products 0 --test-products 20000
    python bench/scale.py bench-data/synth-seed13-20000x2 --size 100000     # bench/results/scale-100000.json

The catalogue and the queries come from the serving model (`bench/encoded.py`): every shop photo of the
generated DATASET encoded as a worker embeds it, every street photo as a query is encoded, cached under the
model's version. A catalogue larger than the dataset keeps every encoded product and adds mixtures of two
encoded products of one category (`bench/grown.py`). Queries are encoded street photos of encoded products,
drawn at random. Ground truth is NumPy brute force over exactly the vectors loaded (`bench/truth.py`), and the
project's exact path is itself checked against it.

The server gets `--shared-buffers` (4GB, as `bench/search.py` gives it): a search server holds its HNSW index in
memory (docs/operations.md), and PostgreSQL's default 128MB would time copies from the operating system's cache.

Measured, with the machine's load average beside each figure:
- the shipped defaults (`ynet_db.search.prefilter`, the model's index as `ynet.build_model_index` builds it):
  recall of the 256 candidates, the true top 20 among them, the first 20 against the true first 20, and the
  prefilter's latency;
- the exact path against the NumPy truth (agreement, latency);
- filters matching 10%, 1% and 0.1%: recall, rows and latency on the policy's path, the index path
  (iterative scans, forced) and the exact path;
- storage (`bench/storage.py`): the `vector`, `halfvec` and binary-quantized HNSW indexes on the same rows:
  size, build time, recall of the 256 candidates, latency;
- end-to-end in-process search of street photos (decode, encode, prefilter, re-rank) and the searches/s of
  as many in-process clients as the machine has cores.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import numpy as np
from bench_db import (
    CANDIDATES,
    FILTER_SHARES,
    Database,
    IndexLinks,
    K,
    build_memory_mb,
    end_to_end,
    filter_rows,
    fresh_database,
    load_catalogue,
    shared_buffers_option,
    stats,
    throughput,
)
from encoded import CACHE, EncodedCatalogue, encoded, serving_model
from grown import grown
from sqlalchemy import Engine, text
from storage import BIT, HALFVEC, VECTOR, Storage, centred_bit, inspect, nearest, shipped
from tqdm import tqdm
from truth import nearest_rows, ranks, recall

from ynet_db.models import registry
from ynet_db.search.index_links import BY_SIZE

RESULTS = Path(__file__).parent / "results"


def load() -> list[float]:
    """The load average (1, 5, 15 minutes), recorded beside every figure: the machine is shared."""
    return [round(value, 2) for value in os.getloadavg()]


def measured(what: str, queries: np.ndarray, run: Callable[[np.ndarray], Any]) -> tuple[list[Any], list[float]]:
    """Each query's answer and seconds, after one warm-up query that is not counted."""
    run(queries[0])
    answers, seconds = [], []
    for query in tqdm(queries, desc=what, unit="query", mininterval=5, leave=False):
        started = time.perf_counter()
        answers.append(run(query))
        seconds.append(time.perf_counter() - started)
    return answers, seconds


def summary(found: Sequence[Sequence[int]], truth: np.ndarray, seconds: Sequence[float]) -> dict[str, Any]:
    recalls = recall([list(f) for f in found], truth)
    return {
        "recall": round(float(recalls.mean()), 4),
        "recall_min": round(float(recalls.min()), 4),
        "rows_min": min(len(f) for f in found),
        **stats(seconds),
        "load": load(),
    }


SORT_PRICED_OUT = {"enable_sort": "off", "enable_incremental_sort": "off"}
"""The planner settings of the forced index path. Asked for the index's order (exact=False), the planner may
still answer a filtered search through the tags' index and a sort: at 100,000 products it did so under every
filter, and the 'index' figures were the exact path's. With sorts priced out, only the HNSW index scan gives
the order asked, so the index path measures the index (hnsw_index_scanned says whether it did)."""


class Bench:
    """One loaded catalogue: its engine, its model row, its size and mean vector (the catalogue's vectors
    themselves are not kept: at a million products they are 5 GB the server's cache wants), and the mapping
    from product ids to catalogue rows."""

    def __init__(self, engine: Engine, model_id: int, size: int, mean: np.ndarray) -> None:
        self.engine, self.model_id, self.size, self.mean = engine, model_id, size, mean
        with engine.connect() as conn:
            self.row_of = {
                pid: int(ext[1:]) for pid, ext in conn.execute(text("SELECT id, external_id FROM ynet.products"))
            }

    def prefilter(self, query: np.ndarray, **options: Any) -> Any:
        from ynet_db.search.prefilter import prefilter

        return prefilter(self.engine, query, candidates=CANDIDATES, **options)

    def index_path(self, query: np.ndarray, filters: dict[str, Any]) -> Any:
        """The filtered search on the model's HNSW index (iterative scans), never a sort of the filter's rows."""
        from ynet_db.search.filters import CompiledFilters
        from ynet_db.search.prefilter import active_model, nearest, set_local

        with self.engine.begin() as conn:  # nearest keeps the caller's transaction, and so these settings
            set_local(conn, SORT_PRICED_OUT)
            return nearest(conn, active_model(conn), query, CompiledFilters.of(filters), CANDIDATES, exact=False)

    def rows(self, found: Any) -> list[int]:
        return [self.row_of[c.product_id] for c in found.candidates]


def shipped_defaults(bench: Bench, queries: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """The 256 candidates of the shipped prefilter (no filter: the model's HNSW index) against the truth."""
    answers, seconds = measured("prefilter", queries, bench.prefilter)
    found = [bench.rows(a) for a in answers]
    recalls = recall(found, truth)
    return {
        "recall_at_256": round(float(recalls.mean()), 4),
        "recall_at_256_min": round(float(recalls.min()), 4),
        # What the re-rank can still put first: the true top 20 among the candidates.
        "top_20_among_candidates": round(float(recall(found, truth[:, :K]).mean()), 4),
        # The candidates' own first 20 (by distance) against the true first 20.
        "top_20_overlap": round(float(recall([f[:K] for f in found], truth[:, :K]).mean()), 4),
        "paths": sorted({a.path for a in answers}),
        "hnsw_index_scanned": sorted({str(a.index_scanned) for a in answers}),
        "prefilter": {**stats(seconds), "load": load()},
    }


def exact_check(bench: Bench, queries: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """The project's exact path against NumPy: the same 256 rows, in the same order?"""
    answers, seconds = measured("exact path", queries, lambda q: bench.prefilter(q, exact=True))
    found = [bench.rows(a) for a in answers]
    return {
        "queries": len(queries),
        "agreement": round(float(recall(found, truth).mean()), 6),
        "same_rows": sum(set(f) == set(t.tolist()) for f, t in zip(found, truth, strict=True)),
        "same_order": sum(f == t.tolist() for f, t in zip(found, truth, strict=True)),
        **stats(seconds),
        "load": load(),
    }


def filter_truths(vectors: np.ndarray, queries: np.ndarray) -> dict[str, np.ndarray]:
    """Per filter share, each query's 256 nearest rows among those the filter keeps (NumPy)."""
    truths = {}
    for share, every in FILTER_SHARES.items():
        rows = filter_rows(len(vectors), every)
        truths[share] = rows[nearest_rows(vectors[rows], queries, CANDIDATES)]
    return truths


def filtered(bench: Bench, queries: np.ndarray, truths: dict[str, np.ndarray], path_queries: int) -> dict[str, Any]:
    """Per filter share: the policy's path (every query), the index path (iterative scans, forced) and the
    exact path (the first `path_queries`: at a million products an exact search under a 10% filter reads
    most of the table)."""
    from ynet_db.search import policy

    out: dict[str, Any] = {}
    for share, every in FILTER_SHARES.items():
        rows, truth = filter_rows(bench.size, every), truths[share]
        filters = {"tags": [f"f{every}"]}
        result: dict[str, Any] = {
            "matching": len(rows),
            "policy_path": "exact" if policy.exact_first(len(rows)) else "ann",
        }
        paths: dict[str, Callable[[np.ndarray], Any]] = {
            "policy": lambda q, f=filters: bench.prefilter(q, filters=f),
            "index": lambda q, f=filters: bench.index_path(q, f),
            "exact": lambda q, f=filters: bench.prefilter(q, filters=f, exact=True),
        }
        for path, run in paths.items():
            count = len(queries) if path == "policy" else path_queries
            answers, seconds = measured(f"{share} {path}", queries[:count], run)
            result[path] = {
                "queries": count,
                **summary([bench.rows(a) for a in answers], truth[:count], seconds),
                "paths": sorted({a.path for a in answers}),
                "hnsw_index_scanned": sorted({str(a.index_scanned) for a in answers}),
            }
        result["recall"] = result["policy"]["recall"]  # what a shop gets: the shipped defaults
        out[share] = result
    return out


def storage_choices(
    bench: Bench,
    queries: np.ndarray,
    truth: np.ndarray,
    links: IndexLinks,
    shipped_build_s: float,
    overfetch: Sequence[int],
) -> dict[str, Any]:
    """Each index on the same rows: its size, build time, recall of the 256 candidates, latency. The model's own
    index (`links.element`) is one of `vector` and `halfvec`; the other is built beside it."""
    n, dim = bench.size, len(bench.mean)
    out: dict[str, Any] = {}
    out["table_bytes"] = table = sizes(bench)["table_bytes"]
    out["table_bytes_per_product"] = round(table / n)
    builds = {links.element: shipped_build_s}  # the model's own index: the other element type is built beside it
    dense = [shipped(s) if s.name == links.element else s for s in (VECTOR, HALFVEC)]
    centred = centred_bit(bench.mean)
    for storage in [s for s in dense if s.name != links.element] + [BIT, centred]:
        started = time.perf_counter()
        with bench.engine.begin() as conn:
            conn.execute(text(f"SET LOCAL maintenance_work_mem = '{build_memory_mb(n, dim, links.m)}MB'"))
            conn.execute(text(storage.create_index(bench.model_id, dim, links.m, links.ef_construction)))
        builds[storage.name] = round(time.perf_counter() - started, 1)
    with bench.engine.begin() as conn:
        conn.execute(text("ANALYZE ynet.embeddings"))
    bits = [replace(bit, overfetch=factor) for bit in (BIT, centred) for factor in overfetch]
    variants = [*dense, *bits]
    for storage in variants:
        out[storage.label] = measure_storage(bench, storage, queries, truth, builds[storage.name])
    return out


def measure_storage(
    bench: Bench, storage: Storage, queries: np.ndarray, truth: np.ndarray, build_s: float
) -> dict[str, Any]:
    with bench.engine.connect() as conn:
        size = conn.execute(
            text("SELECT pg_relation_size(to_regclass('ynet.' || :name))"), {"name": storage.index_name(bench.model_id)}
        ).scalar_one()
    answers, seconds = measured(
        storage.label, queries, lambda q: nearest(bench.engine, storage, bench.model_id, q, CANDIDATES)
    )
    found = [[bench.row_of[p] for p in a] for a in answers]
    return {
        "index_bytes": size,
        "index_bytes_per_product": round(size / bench.size),
        "build_s": build_s,
        "overfetch": storage.overfetch,
        **inspect(bench.engine, storage, bench.model_id, queries[0], CANDIDATES),
        **summary(found, truth, seconds),
        "top_20_among_candidates": round(float(recall(found, truth[:, :K]).mean()), 4),
    }


def street_photos(root: Path, catalogue: EncodedCatalogue, picks: np.ndarray) -> list[bytes]:
    """The picked street photos' files, as a shopper uploads them."""
    return [(root / str(catalogue.street_paths[i])).read_bytes() for i in picks]


def in_process(bench: Bench, model: Any, photos: list[bytes]) -> dict[str, Any]:
    end_to_end(bench.engine, model, photos[:3])  # warm-up: the runtime's first runs, the caches
    cores = os.cpu_count() or 1
    result: dict[str, Any] = {"queries": len(photos), **end_to_end(bench.engine, model, photos), "load": load()}
    qps = throughput(bench.engine, model, photos, cores, 20.0)
    return {"end_to_end_in_process": result, "throughput": {"clients": cores, "queries_per_s": qps, "load": load()}}


def query_picks(catalogue: EncodedCatalogue, count: int, seed: int) -> np.ndarray:
    """Street photos drawn at random, at most one per product."""
    rng = np.random.default_rng(seed)
    first = np.unique(catalogue.street_product, return_index=True)[1]
    return np.sort(rng.choice(first, size=min(count, len(first)), replace=False))


@click.command()
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--size", default=100_000, show_default=True, type=click.IntRange(1), help="Products in the catalogue.")
@click.option(
    "--queries", default=300, show_default=True, type=click.IntRange(1), help="Street photos searched (>= 200 for p99)."
)
@click.option(
    "--exact-checks", default=100, show_default=True, type=click.IntRange(1), help="Queries the exact path answers."
)
@click.option(
    "--overfetch", default="4,8", show_default=True, help="Binary-quantized index: rows scanned per candidate."
)
@click.option(
    "--cache",
    default=CACHE,
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the encoded vectors are kept, under the model version.",
)
@click.option("--threads", default=os.cpu_count() or 1, show_default=True, type=click.IntRange(1))
@shared_buffers_option
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0), help="Mixtures and query draw.")
@click.option(
    "--path-queries",
    type=click.IntRange(1),
    help="Queries the forced index path and the exact path answer under each filter [default: all].",
)
@click.option(
    "--prewarm",
    is_flag=True,
    help="Read the shipped index into shared_buffers first (pg_prewarm), as a server that has been serving holds it.",
)
@click.option("--skip-filters", is_flag=True, help="Leave filtered searches out (--reuse keeps the last run's).")
@click.option("--skip-storage", is_flag=True, help="Measure the shipped index only, not the other storage choices.")
@click.option(
    "--reuse",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The data directory (/tmp/ynet-bench-*/pgdata) of the server an interrupted run of the same SIZE and "
    "seed left running, its catalogue loaded and indexed: measure on it, keeping what --out already holds, "
    "instead of loading again.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON results [default: bench/results/scale-SIZE.json].",
)
def main(
    dataset: Path,
    size: int,
    queries: int,
    exact_checks: int,
    overfetch: str,
    cache: Path,
    threads: int,
    seed: int,
    shared_buffers: str,
    path_queries: int | None,
    prewarm: bool,
    skip_filters: bool,
    skip_storage: bool,
    reuse: Path | None,
    out: Path | None,
) -> None:
    """Measure search at SIZE products on DATASET's encoded vectors (a generated benchmark)."""
    model = serving_model(threads)
    click.echo(f"model {model.version} on {model.runtime}; load {load()}", err=True)
    catalogue = encoded(dataset, model, cache)
    vectors, _ = grown(catalogue.shop, catalogue.categories, size, seed)
    picks = query_picks(catalogue, queries, seed + 1)
    query_vectors, own = catalogue.street[picks], catalogue.street_product[picks]
    click.echo(f"ground truth of {len(picks)} queries over {size} products ...", err=True)
    truth, truths = nearest_rows(vectors, query_vectors, CANDIDATES), filter_truths(vectors, query_vectors)
    rank = ranks(vectors, query_vectors, own)
    target = out or RESULTS / f"scale-{size}.json"
    result: dict[str, Any] = json.loads(target.read_text()) if reuse else {}
    result.update(
        {
            "products": size,
            "encoded_products": len(catalogue.shop),
            "mixtures": size - len(catalogue.shop),
            "dim": int(vectors.shape[1]),
            "model": model.version,
            "runtime": model.runtime,
            "queries": len(picks),
            "encoding": catalogue.seconds,
            # How real the queries are: where each photo's own product lies among all products (0 = nearest).
            "own_product_rank": {
                "median": float(np.median(rank)),
                "first": round(float(np.mean(rank == 0)), 4),
                "within_256": round(float(np.mean(rank < CANDIDATES)), 4),
            },
            "load_start": load(),
            "shared_buffers": shared_buffers,
        }
    )
    by_size = BY_SIZE.links(size)  # the index ynet.build_model_index chooses for a catalogue of this size
    links = IndexLinks(by_size.m, by_size.ef_construction, by_size.element)

    def save(complete: bool = False) -> None:
        # After every stage: a run at a million products takes hours, and one that dies keeps what it measured.
        target.write_text(json.dumps({**result, "complete": complete}, indent=2) + "\n")

    with running(reuse) if reuse else fresh_database(shared_buffers) as database:
        if reuse:
            result["resumed_on_the_loaded_server"] = True
            with database.engine.connect() as conn:
                model_id = registry.active(conn).id
        else:
            click.echo(f"loading {size} x {vectors.shape[1]} vectors ...", err=True)
            loaded = load_catalogue(database.engine, model.version, vectors, links)
            result.update({key: loaded[key] for key in ("load_s", "index_build_s", "index")}, load_after_build=load())
            model_id = loaded["model_id"]
        bench = Bench(database.engine, model_id, size, vectors.mean(axis=0))
        del vectors  # 5 GB at a million products: the server's cache wants the memory
        result["prewarmed_pages"] = prewarmed(bench) if prewarm else None
        if reuse:  # the interrupted run measured the index right after its build: kept beside the warm figures
            result["after_build"] = {key: result[key] for key in ("recall_at_256", "prefilter") if key in result}
        result.update(shipped_defaults(bench, query_vectors, truth), **sizes(bench))
        save()
        if "exact_check" not in result:  # at a million products each takes seconds: one run's is enough
            result["exact_check"] = exact_check(bench, query_vectors[:exact_checks], truth[:exact_checks])
            save()
        if not skip_filters:
            result["filters"] = filtered(bench, query_vectors, truths, path_queries or len(query_vectors))
            save()
        click.echo("end to end ...", err=True)
        result.update(in_process(bench, model, street_photos(dataset, catalogue, picks)))
        save()
        if not skip_storage:
            click.echo("storage choices ...", err=True)
            factors = [int(f) for f in overfetch.split(",")]
            result["storage"] = storage_choices(bench, query_vectors, truth, links, result["index_build_s"], factors)
    result["load_end"] = load()
    save(complete=True)
    click.echo(json.dumps(result, indent=2))
    click.echo(f"wrote {target}", err=True)


@contextmanager
def running(data_dir: Path) -> Iterator[Database]:
    """The embedded server an interrupted run left in `data_dir` (fresh_database's), left running after."""
    from ynet_db.db.engine import make_engine
    from ynet_db.db.server import embedded_running

    server = embedded_running(data_dir)
    if server is None:
        raise click.UsageError(f"no embedded server is running in {data_dir}: --reuse takes an interrupted run's")
    url = server.url()
    engine = make_engine(url, pool_size=20, max_overflow=0)
    try:
        yield Database(engine, url, data_dir)
    finally:
        engine.dispose()


MODEL_INDEX = "to_regclass('ynet.' || ynet.model_index_name(:id))"
"""SQL: the regclass of model :id's own index."""


def prewarmed(bench: Bench) -> int:
    """pg_prewarm of the model's own index: the pages read into shared_buffers."""
    with bench.engine.begin() as conn:
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_prewarm"))
        index = text(f"SELECT pg_prewarm({MODEL_INDEX})")
        return int(conn.execute(index, {"id": bench.model_id}).scalar_one())


def sizes(bench: Bench) -> dict[str, int]:
    """Bytes on disk of the embeddings table and of the model's own index."""
    with bench.engine.connect() as conn:
        table, index = conn.execute(
            text(f"SELECT pg_table_size('ynet.embeddings'), pg_relation_size({MODEL_INDEX})"),
            {"id": bench.model_id},
        ).one()
    return {"table_bytes": table, "index_bytes": index}


if __name__ == "__main__":
    main()
