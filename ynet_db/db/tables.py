"""The ORM: typed SQLAlchemy 2 models of the `ynet` schema.

The schema itself is created by the Alembic migrations in `migrations/`; a test checks that these
models and the migrated schema agree. Triggers and functions (job recording, dimension checks, one
HNSW index per model) live only in the migrations, because SQLAlchemy does not model them.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Double,
    ForeignKey,
    Identity,
    Index,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, BYTEA, JSONB, TIMESTAMP
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

SCHEMA = "ynet"

# Deterministic constraint names, so migrations and the models name things the same way.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JOB_STATES = ("pending", "running", "retry", "done", "dead", "superseded")
MODEL_STATES = ("registered", "backfilling", "active", "retired")
SEARCH_REQUEST_STATES = ("pending", "running", "done", "failed", "expired")

Timestamp = TIMESTAMP(timezone=True)


class Base(DeclarativeBase):
    metadata = MetaData(schema=SCHEMA, naming_convention=NAMING_CONVENTION)


class Product(Base):
    """A catalogue product: what the shop sells, with the tags TagYNet attends by."""

    __tablename__ = "products"

    id: Mapped[int] = mapped_column(primary_key=True)
    external_id: Mapped[str] = mapped_column(Text, comment="The shop's stable id (SKU).")
    source: Mapped[str] = mapped_column(
        Text,
        server_default="import",
        comment="Where the row comes from: 'import', or the schema-qualified name of the attached table.",
    )
    title: Mapped[str] = mapped_column(Text, server_default="")
    category: Mapped[str] = mapped_column(Text)
    tags: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    image_uri: Mapped[str] = mapped_column(Text, comment="A path, file:// or http(s):// URL.")
    image_sha256: Mapped[str | None] = mapped_column(
        String(64), comment="Content hash of the image, when known; a change re-embeds."
    )
    price: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    stock: Mapped[int | None]
    extra: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    content_changed_at: Mapped[datetime] = mapped_column(
        Timestamp,
        server_default=func.now(),
        comment="When the image or the tags last changed (or the row was inserted); "
        "an embedding older than this is stale.",
    )

    embeddings: Mapped[list[Embedding]] = relationship(
        back_populates="product", cascade="all, delete-orphan", passive_deletes=True
    )

    __table_args__ = (
        # Each source keeps its own ids: an attached table's row never changes an imported product.
        UniqueConstraint("external_id", "source"),
        Index("ix_products_tags", "tags", postgresql_using="gin"),
        Index("ix_products_category", "category"),
    )

    def __repr__(self) -> str:
        return f"Product({self.external_id!r}, category={self.category!r})"


class Model(Base):
    """A registered embedding model. Vectors of different models are never compared."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    version: Mapped[str] = mapped_column(Text, unique=True, comment="Content hash of weights and config.")
    embedding_dim: Mapped[int]
    weights_sha256: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    state: Mapped[str] = mapped_column(Text, server_default="registered")
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    activated_at: Mapped[datetime | None] = mapped_column(Timestamp)

    __table_args__ = (
        CheckConstraint("embedding_dim BETWEEN 1 AND 2000", name="embedding_dim_indexable"),
        CheckConstraint(f"state IN {MODEL_STATES}", name="state"),
        # At most one model serves searches at a time.
        Index("uq_models_one_active", "state", unique=True, postgresql_where=text("state = 'active'")),
    )

    def __repr__(self) -> str:
        return f"Model({self.version!r}, state={self.state!r})"


class Embedding(Base):
    """A product's shop-image embedding under one model, for one image content."""

    __tablename__ = "embeddings"

    product_id: Mapped[int] = mapped_column(ForeignKey(Product.id, ondelete="CASCADE"), primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey(Model.id, ondelete="CASCADE"), primary_key=True)
    image_sha256: Mapped[str] = mapped_column(String(64))
    embedding: Mapped[Any] = mapped_column(Vector())
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())

    product: Mapped[Product] = relationship(back_populates="embeddings")
    model: Mapped[Model] = relationship()

    __table_args__ = (Index("ix_embeddings_model_id", "model_id"),)


class EmbeddingJob(Base):
    """One unit of embedding work: a product's image content under one model.

    Written by the catalogue triggers in the same transaction as the product row, so no work is lost
    when the broker or the workers are down.
    """

    __tablename__ = "embedding_jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey(Product.id, ondelete="CASCADE"))
    model_id: Mapped[int] = mapped_column(ForeignKey(Model.id, ondelete="CASCADE"))
    image_uri: Mapped[str] = mapped_column(Text)
    image_sha256: Mapped[str | None] = mapped_column(String(64))
    tags: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    state: Mapped[str] = mapped_column(Text, server_default="pending")
    attempts: Mapped[int] = mapped_column(server_default="0")
    max_attempts: Mapped[int] = mapped_column(server_default="5")
    run_after: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    lease_expires_at: Mapped[datetime | None] = mapped_column(Timestamp)
    claimed_by: Mapped[str | None] = mapped_column(Text)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)
    completions: Mapped[int] = mapped_column(
        server_default="0", comment="times this job was written and marked done; more than 1 is a duplicate"
    )

    product: Mapped[Product] = relationship()
    model: Mapped[Model] = relationship()

    __table_args__ = (
        CheckConstraint(f"state IN {JOB_STATES}", name="state"),
        # The claim query scans only open jobs, in order of readiness.
        Index(
            "ix_embedding_jobs_open",
            "run_after",
            postgresql_where=text("state IN ('pending', 'retry', 'running')"),
        ),
        Index("ix_embedding_jobs_product_id", "product_id"),
        Index("ix_embedding_jobs_model_id_state", "model_id", "state"),
    )

    def __repr__(self) -> str:
        return f"EmbeddingJob({self.id}, product={self.product_id}, state={self.state!r})"


class Worker(Base):
    """A worker process's heartbeat, so `ynet-db status` can tell live workers from dead ones."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(Text, primary_key=True, comment="host/pid, as in embedding_jobs.claimed_by")
    hostname: Mapped[str] = mapped_column(Text)
    pid: Mapped[int]
    model_id: Mapped[int | None] = mapped_column(ForeignKey(Model.id, ondelete="SET NULL"))
    device: Mapped[str] = mapped_column(Text, server_default="cpu")
    started_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    last_seen_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    jobs_done: Mapped[int] = mapped_column(BigInteger, server_default="0")
    stopped_at: Mapped[datetime | None] = mapped_column(Timestamp)


class Attachment(Base):
    """A shop table whose rows ynet-db keeps in step with its catalogue through triggers."""

    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(primary_key=True)
    source_table: Mapped[str] = mapped_column(Text, unique=True, comment="schema-qualified table name")
    id_column: Mapped[str] = mapped_column(Text)
    image_column: Mapped[str] = mapped_column(Text)
    tags_column: Mapped[str | None] = mapped_column(Text)
    category_column: Mapped[str] = mapped_column(Text)
    title_column: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())


class SearchRequest(Base):
    """A search asked in SQL by a backend without a model (migration 0010); a search worker answers it.

    The constraints on its input (one image, k, sizes) live in the migration, which the inserting
    client meets first; `ynet_db.search_requests` claims, answers, fails, expires and deletes these rows.
    """

    __tablename__ = "search_requests"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    image: Mapped[bytes | None] = mapped_column(BYTEA, comment="The query photo's bytes (or give image_url).")
    image_url: Mapped[str | None] = mapped_column(
        Text, comment="An http(s) URL of the query photo, fetched under the fetch policy."
    )
    k: Mapped[int] = mapped_column(server_default="20")
    filters: Mapped[dict[str, Any] | None] = mapped_column(
        JSONB, comment='The Python API\'s filter language, e.g. {"category": "dress"}.'
    )
    state: Mapped[str] = mapped_column(Text, server_default="pending")
    error: Mapped[str | None] = mapped_column(Text, comment="Why the request failed: the answer of a failed request.")
    requested_by: Mapped[str] = mapped_column(Text, server_default=text("CURRENT_USER"))
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(Timestamp, server_default=text("(now() + '00:01:00'::interval)"))
    attempts: Mapped[int] = mapped_column(server_default="0")
    max_attempts: Mapped[int] = mapped_column(server_default="3")
    claimed_by: Mapped[str | None] = mapped_column(Text)
    lease_expires_at: Mapped[datetime | None] = mapped_column(Timestamp)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)
    answers: Mapped[int] = mapped_column(
        server_default="0", comment="times an answer was written; more than 1 is a duplicate"
    )
    model_version: Mapped[str | None] = mapped_column(Text)
    path: Mapped[str | None] = mapped_column(Text, comment="How the prefilter ran: 'ann' or 'exact'.")
    short: Mapped[bool | None] = mapped_column(Boolean, comment="Fewer candidates than asked came back.")
    reranked: Mapped[bool | None] = mapped_column(Boolean)

    results: Mapped[list[SearchResultRow]] = relationship(
        order_by="SearchResultRow.rank", cascade="all, delete-orphan", passive_deletes=True
    )

    __table_args__ = (
        CheckConstraint(f"state IN {SEARCH_REQUEST_STATES}", name="state"),
        Index("ix_search_requests_open", "id", postgresql_where=text("state IN ('pending', 'running')")),
        Index("ix_search_requests_finished_at", "finished_at"),
    )


class SearchResultRow(Base):
    """One ranked product of an answered search request: a snapshot, so no foreign key to the product."""

    __tablename__ = "search_results"

    request_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey(SearchRequest.id, ondelete="CASCADE"), primary_key=True
    )
    rank: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int]
    external_id: Mapped[str] = mapped_column(Text)
    title: Mapped[str] = mapped_column(Text)
    category: Mapped[str] = mapped_column(Text)
    distance: Mapped[float] = mapped_column(Double, comment="The prefilter's cosine distance.")
    rerank_score: Mapped[float | None] = mapped_column(Double, comment="CtxYNet's score; NULL when not re-ranked.")
