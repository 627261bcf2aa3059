"""`ynet-db serve --via worker`: the query model runs in a search worker (Redis as the broker), and the
answers are the ones the service gives with the model in its own process."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from pathlib import Path

from catalogue_vectors import catalogue, photo, unit_vectors
from serve_process import start_serve
from sqlalchemy import Engine

from ynet_db.config import Settings
from ynet_db.nn.model import RetrievalModel
from ynet_db.search.query import search

sys.path.insert(0, str(Path(__file__).parents[1] / "fault"))
from worker_processes import WorkerProcess, start_worker, wait_for  # noqa: E402

__all__ = ["start_worker"]


def png(seed: int) -> bytes:
    out = io.BytesIO()
    photo(seed).save(out, format="PNG")
    return out.getvalue()


# In the default suite (about 25 s, a service and a worker each loading the model): while it was marked slow,
# `serve --via worker` stopped starting (an import of the wrong module) and no default test saw it.
def test_searches_handed_to_a_worker_give_the_in_process_answers(
    engine: Engine,
    settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    default_model: RetrievalModel,
    redis_url: str,
    tmp_path: Path,
) -> None:
    catalogue(engine, default_model.version, unit_vectors(40, default_model.embedding_dim, seed=7))
    env = {
        "YNET_DATABASE_URL": str(settings.database_url),
        "YNET_DATA_DIR": str(settings.data_dir),
        "YNET_BROKER_URL": redis_url,
    }
    served = start_serve(env, tmp_path / "serve.log", "--via", "worker")
    try:
        before = served.get("/health").json()
        assert before["checks"]["broker"]["ok"] is True
        assert before["checks"]["workers"] == {
            "ok": False,
            "detail": "no live worker (start one with `ynet-db worker --queues search`)",
        }
        worker = start_worker("--no-dispatcher", "--queues", "search", broker=redis_url)
        wait_for(lambda: served.get("/health").status == 200, 120, "a healthy service", worker)
        for seed in (1, 2):
            reply = served.post_form("/search", {"k": "5", "rerank": "true"}, {"image": png(seed)})
            assert reply.status == 200, reply.body
            expected = search(engine, png(seed), k=5, rerank=True, model=default_model)
            assert [row["external_id"] for row in reply.json()["rows"]] == [row.external_id for row in expected.rows]
            assert reply.json()["reranked"] is True
        assert served.get("/health").json()["checks"]["model"]["detail"] == f"active model {default_model.version}"
    finally:
        served.stop()
