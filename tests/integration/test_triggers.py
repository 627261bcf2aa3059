"""The triggers: embedding work is recorded with the product row, and only when the embedding would change."""

from __future__ import annotations

import select
from collections.abc import Iterator
from datetime import datetime

import psycopg
import pytest
from sqlalchemy import Engine, func, text, update
from sqlalchemy import select as sa_select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from ynet_db.db.server import libpq_dsn
from ynet_db.db.tables import Embedding, EmbeddingJob, Model, Product


def _model(name: str, state: str, dim: int = 4) -> Model:
    return Model(name=name, version=f"{name}@test", embedding_dim=dim, weights_sha256="0" * 64, state=state)


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine) as session:
        session.add(_model("active-model", "active"))
        session.commit()
        yield session


def _product(sku: str = "sku-1") -> Product:
    return Product(
        external_id=sku, title="Red dress", category="dress", tags=["color:red"], image_uri="/img/1.jpg", price=10
    )


def _content_changed_at(session: Session) -> datetime:
    return session.execute(sa_select(Product.content_changed_at)).scalar_one()


def _jobs(session: Session, state: str | None = None) -> int:
    query = sa_select(func.count()).select_from(EmbeddingJob)
    if state:
        query = query.where(EmbeddingJob.state == state)
    return session.scalar(query) or 0


def test_insert_creates_exactly_one_job(session: Session) -> None:
    session.add(_product())
    session.commit()
    job = session.scalars(sa_select(EmbeddingJob)).one()
    assert (job.state, job.image_uri, job.tags, job.model.name) == (
        "pending",
        "/img/1.jpg",
        ["color:red"],
        "active-model",
    )


@pytest.mark.parametrize(
    "change",
    [{"image_uri": "/img/2.jpg"}, {"image_sha256": "f" * 64}, {"tags": ["color:blue"]}],
    ids=lambda change: next(iter(change)),
)
def test_image_or_tag_change_creates_one_job(session: Session, change: dict[str, object]) -> None:
    session.add(_product())
    session.commit()
    inserted = _content_changed_at(session)
    session.execute(update(Product).values(**change))
    session.commit()
    assert _jobs(session) == 2
    assert _jobs(session, "pending") == 1, "the job for the old image is superseded"
    assert _jobs(session, "superseded") == 1
    assert _content_changed_at(session) > inserted, "a retired model's vector of the product is stale now"


@pytest.mark.parametrize(
    "change",
    # No encoder reads the category column (a model attends to a category through a 'category:...' tag).
    [{"price": 12}, {"title": "Dress, red"}, {"stock": 3}, {"extra": {"brand": "x"}}, {"category": "skirt"}],
    ids=str,
)
def test_price_title_stock_or_category_change_creates_no_job(session: Session, change: dict[str, object]) -> None:
    session.add(_product())
    session.commit()
    inserted = _content_changed_at(session)
    session.execute(update(Product).values(**change))
    session.commit()
    assert _jobs(session) == 1
    assert _content_changed_at(session) == inserted, "every model's vector of the product stays current"


def test_setting_the_same_tags_again_creates_no_job(session: Session) -> None:
    session.add(_product())
    session.commit()
    inserted = _content_changed_at(session)
    session.execute(update(Product).values(tags=["color:red"], image_uri="/img/1.jpg"))
    session.commit()
    assert _jobs(session) == 1
    assert _content_changed_at(session) == inserted


def test_rolled_back_insert_leaves_no_job(session: Session) -> None:
    session.add(_product())
    session.flush()
    assert _jobs(session) == 1, "the job is written in the same transaction"
    session.rollback()
    assert _jobs(session) == 0


def test_jobs_for_every_model_being_filled(session: Session) -> None:
    session.add_all([_model("next-model", "backfilling", dim=8), _model("old-model", "retired")])
    session.commit()
    session.add(_product())
    session.commit()
    models = session.scalars(sa_select(Model.name).join(EmbeddingJob.model).order_by(Model.name)).all()
    assert models == ["active-model", "next-model"]


def test_no_model_no_jobs(engine: Engine) -> None:
    with Session(engine) as session:
        session.add(_product())
        session.commit()
        assert _jobs(session) == 0


def test_deleting_a_product_removes_its_jobs_and_embeddings(session: Session) -> None:
    product = _product()
    session.add(product)
    session.commit()
    session.add(Embedding(product_id=product.id, model_id=1, image_sha256="a" * 64, embedding=[1, 0, 0, 0]))
    session.commit()
    session.delete(product)
    session.commit()
    assert _jobs(session) == 0
    assert session.scalar(sa_select(func.count()).select_from(Embedding)) == 0


def test_embedding_of_the_wrong_dimension_is_refused(session: Session) -> None:
    product = _product()
    session.add(product)
    session.commit()
    session.add(Embedding(product_id=product.id, model_id=1, image_sha256="a" * 64, embedding=[1.0, 0.0]))
    with pytest.raises(DBAPIError, match="has 2 dimensions, but model 1 stores 4"):
        session.commit()


def _indexes(session: Session) -> list[str]:
    rows = session.execute(
        text("SELECT indexname FROM pg_indexes WHERE schemaname = 'ynet' AND indexname LIKE 'embeddings_hnsw_%'")
    )
    return sorted(row.indexname for row in rows)


def test_each_model_gets_its_own_hnsw_index(session: Session) -> None:
    second = _model("second", "registered", dim=8)
    session.add(second)
    session.commit()
    assert _indexes(session) == ["embeddings_hnsw_model_1", f"embeddings_hnsw_model_{second.id}"]
    definition = session.scalar(
        text("SELECT indexdef FROM pg_indexes WHERE indexname = :name"), {"name": f"embeddings_hnsw_model_{second.id}"}
    )
    assert "hnsw" in definition and "vector(8)" in definition and f"model_id = {second.id}" in definition
    session.delete(second)
    session.commit()
    assert _indexes(session) == ["embeddings_hnsw_model_1"]


def test_only_one_model_is_active(session: Session) -> None:
    session.add(_model("another", "active"))
    with pytest.raises(DBAPIError, match="uq_models_one_active"):
        session.commit()


def test_committed_jobs_wake_listeners(session: Session, engine: Engine) -> None:
    with psycopg.connect(libpq_dsn(engine.url), autocommit=True) as listener:
        listener.execute("LISTEN ynet_embedding_jobs")
        session.add(_product())
        session.flush()
        assert not select.select([listener.fileno()], [], [], 0.2)[0], "no wake-up before commit"
        session.commit()
        notices = list(listener.notifies(timeout=5, stop_after=1))
    assert [n.channel for n in notices] == ["ynet_embedding_jobs"]
