"""`ynet-db status`: what is in the catalogue and how far embedding has come."""

from __future__ import annotations

from sqlalchemy import Engine, update
from sqlalchemy.orm import Session

from ynet_db.db.models import Embedding, EmbeddingJob, Model, Product
from ynet_db.status import catalogue_status


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
        session.commit()
    status = catalogue_status(engine)
    assert status.products == 3
    assert (status.jobs["pending"], status.jobs["retry"], status.jobs["done"]) == (2, 1, 0)
    assert [(m.name, m.embedded) for m in status.models] == [("m", 1)]
    assert [(e.external_id, e.error) for e in status.recent_errors] == [("p1", "cannot decode /img/1.jpg")]
    assert "model m (m@1, active): 1/3 embedded (33%)" in str(status)
