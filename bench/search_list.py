"""How long a search list the HNSW index needs on the model's own embeddings (a benchmark command, issue 13).

    python bench/search_list.py bench-data/synth-seed13-20000x2 --size 100000   # bench/results/search-list-100000.json

The catalogue is bench/scale.py's (the encoded products of DATASET, grown by same-category mixtures, seed 0);
the queries are validation street photos: drawn with another seed and never one of scale.py's test photos,
so the policy's `hnsw.ef_search` (`ynet_db.search.policy.EF_SEARCH`) is chosen here and judged there. For
pgvector's default graph (m 16, ef_construction 64) and the denser one (m 32, ef_construction 128), each search
list of 2, 3 and 4 times the 256 candidates (at most 1000): recall of the 256 candidates against NumPy brute
force, and the prefilter's median and p99 latency, with the load average beside each.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import numpy as np
from bench_db import CANDIDATES, IndexLinks, build_index, fresh_database, load_catalogue, shared_buffers_option
from encoded import CACHE, encoded, serving_model
from grown import grown
from scale import measured, query_picks, summary
from sqlalchemy import Engine, text
from truth import nearest_rows

from ynet_db.search import policy
from ynet_db.search.prefilter import prefilter

TEST_SEED = 1
"""bench/scale.py draws its test photos with seed + 1 (seed 0)."""
LINKS = (IndexLinks(16, 64), IndexLinks(32, 128))
LIST_PER_CANDIDATE = (2, 3, 4)


def validation_picks(catalogue: Any, count: int) -> np.ndarray:
    test = set(query_picks(catalogue, 300, TEST_SEED).tolist())
    return np.array([p for p in query_picks(catalogue, 3 * count, 100) if p not in test][:count])


def rebuild(engine: Engine, links: IndexLinks, size: int, dim: int) -> float:
    """The active model's index dropped and built again with `links`; seconds."""
    started = time.perf_counter()
    with engine.begin() as conn:
        model_id = conn.execute(text("SELECT id FROM ynet.models WHERE state = 'active'")).scalar_one()
        name = conn.execute(text("SELECT ynet.model_index_name(:id)"), {"id": model_id}).scalar_one()
        conn.execute(text(f'DROP INDEX ynet."{name}"'))
        build_index(conn, model_id, links, size, dim)
    return round(time.perf_counter() - started, 1)


def measure(engine: Engine, queries: np.ndarray, truth: np.ndarray, row_of: dict[int, int]) -> dict[str, Any]:
    """scale.py's summary of the shipped prefilter on these queries: recall, latency, load."""
    answers, seconds = measured("prefilter", queries, lambda q: prefilter(engine, q, candidates=CANDIDATES))
    return summary([[row_of[c.product_id] for c in a.candidates] for a in answers], truth, seconds)


@click.command()
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--size", default=100_000, show_default=True, type=click.IntRange(1), help="Products in the catalogue.")
@click.option("--queries", default=300, show_default=True, type=click.IntRange(1), help="Validation street photos.")
@shared_buffers_option
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Default: bench/results/search-list-SIZE.json"
)
def main(dataset: Path, size: int, queries: int, shared_buffers: str, out: Path | None) -> None:
    model = serving_model(2)
    catalogue = encoded(dataset, model, CACHE)
    vectors, _ = grown(catalogue.shop, catalogue.categories, size, 0)
    picks = validation_picks(catalogue, queries)
    query_vectors = catalogue.street[picks]
    truth = nearest_rows(vectors, query_vectors, CANDIDATES)
    result: dict[str, Any] = {"products": size, "validation_queries": len(picks), "model": model.version, "runs": []}
    shipped = policy.EF_SEARCH
    with fresh_database(shared_buffers) as database:
        load_catalogue(database.engine, model.version, vectors, LINKS[0])
        with database.engine.connect() as conn:
            row_of = dict(conn.execute(text("SELECT id, substr(external_id, 2)::int FROM ynet.products")).all())
        for links in LINKS:
            build_s = None if links == LINKS[0] else rebuild(database.engine, links, size, vectors.shape[1])
            for per in LIST_PER_CANDIDATE:
                policy.EF_SEARCH = replace(shipped, per_candidate=per)  # the prefilter reads the policy per search
                run = {**links._asdict(), "build_s": build_s, "ef_search": policy.EF_SEARCH.value(CANDIDATES)}
                run.update(measure(database.engine, query_vectors, truth, row_of))
                click.echo(json.dumps(run), err=True)
                result["runs"].append(run)
    policy.EF_SEARCH = shipped
    path = out or Path(__file__).parent / "results" / f"search-list-{size}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    click.echo(f"wrote {path}", err=True)


if __name__ == "__main__":
    main()
