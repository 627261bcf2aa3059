"""`ynet-db status`: what is in the catalogue, how far embedding has come, and who is doing it."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine, func, update
from sqlalchemy.orm import Session

from ynet_db.db.tables import Embedding, EmbeddingJob, Model, Product, Worker
from ynet_db.presentation.status import LIVE_WITHIN, catalogue_status


def test_status_counts_products_jobs_coverage_and_errors(engine: Engine) -> None:
    with Session(engine) as session:
        model = Model(name="m", version="m@1", embedding_dim=2, weights_sha256="0" * 64, state="active")
        session.add(model)
        session.add_all(Product(external_id=f"p{i}", category="dress", image_uri=f"/img/{i}.jpg") for i in range(3))
        session.commit()
        session.add(Embedding(product_id=1, model_id=model.id, image_sha256="a" * 64, embedding=[1.0, 0.0]))
        session.execute(
            update(EmbeddingJob)
            .where(EmbeddingJob.product_id == 2)
            .values(state="retry", attempts=1, last_error="cannot decode /img/1.jpg")
        )
        session.execute(
            update(EmbeddingJob)
            .where(EmbeddingJob.product_id == 3)
            .values(state="dead", attempts=5, last_error="HTTP 404", updated_at=func.now() - timedelta(seconds=1))
        )
        session.commit()
    status = catalogue_status(engine)
    assert status.products == 3
    assert (status.jobs["pending"], status.jobs["retry"], status.jobs["dead"], status.jobs["done"]) == (1, 1, 1, 0)
    assert [(m.name, m.embedded, m.dead) for m in status.models] == [("m", 1, 1)]
    assert [(e.external_id, e.error) for e in status.recent_errors] == [
        ("p1", "cannot decode /img/1.jpg"),
        ("p2", "HTTP 404"),
    ]
    assert "model m (m@1, active): 1/3 embedded (33%), 1 dead" in str(status)


def test_status_shows_throughput_by_window_and_only_live_workers(engine: Engine) -> None:
    with Session(engine) as session:
        model = Model(name="m", version="m@1", embedding_dim=2, weights_sha256="0" * 64, state="active")
        session.add(model)
        session.add_all(Product(external_id=f"p{i}", category="dress", image_uri=f"/img/{i}.jpg") for i in range(4))
        session.commit()
        # Done 10 s ago, 2 minutes ago and 10 minutes ago; one job still pending.
        for product_id, age in ((1, 10), (2, 120), (3, 600)):
            session.execute(
                update(EmbeddingJob)
                .where(EmbeddingJob.product_id == product_id)
                .values(state="done", attempts=1, finished_at=func.now() - timedelta(seconds=age))
            )
        stale = func.now() - LIVE_WITHIN - timedelta(seconds=1)
        session.add_all(
            [
                Worker(id="h/1", hostname="h", pid=1, model_id=model.id, jobs_done=7),
                Worker(id="h/2", hostname="h", pid=2, model_id=model.id, last_seen_at=stale),  # killed
                Worker(id="h/3", hostname="h", pid=3, model_id=model.id, stopped_at=func.now()),  # exited
            ]
        )
        session.commit()
    status = catalogue_status(engine)
    assert [(t.window, t.jobs_done) for t in status.throughput] == [
        (timedelta(minutes=1), 1),
        (timedelta(minutes=5), 2),
    ]
    assert [(w.id, w.model_version, w.jobs_done) for w in status.workers] == [("h/1", "m@1", 7)]
    text = str(status)
    assert "done: 1 in the last minute (0.02/s), 2 in the last 5 minutes (0.01/s)" in text
    assert "live workers: 1" in text and "worker h/1 (cpu, model m@1): 7 done, last seen " in text
