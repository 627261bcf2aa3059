"""The catalogue: products, model registry, embeddings, embedding jobs and the triggers that record work.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

S = "ynet"
TS = postgresql.TIMESTAMP(timezone=True)


def _now() -> sa.TextClause:
    return sa.text("now()")


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    _create_tables()
    op.execute(TOUCH_UPDATED_AT)
    op.execute(RECORD_EMBEDDING_JOBS)
    op.execute(CHECK_EMBEDDING_DIM)
    op.execute(MODEL_INDEX)


def _create_tables() -> None:
    op.create_table(
        "products",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("external_id", sa.Text, nullable=False, comment="The shop's stable id (SKU)."),
        sa.Column("title", sa.Text, nullable=False, server_default=""),
        sa.Column("category", sa.Text, nullable=False),
        sa.Column("tags", postgresql.ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("image_uri", sa.Text, nullable=False, comment="A path, file:// or http(s):// URL."),
        sa.Column("image_sha256", sa.String(64), comment="Content hash of the image, when known; a change re-embeds."),
        sa.Column("price", sa.Numeric(12, 2)),
        sa.Column("stock", sa.Integer),
        sa.Column("extra", postgresql.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("created_at", TS, nullable=False, server_default=_now()),
        sa.Column("updated_at", TS, nullable=False, server_default=_now()),
        sa.PrimaryKeyConstraint("id", name="pk_products"),
        sa.UniqueConstraint("external_id", name="uq_products_external_id"),
        schema=S,
    )
    op.create_index("ix_products_tags", "products", ["tags"], schema=S, postgresql_using="gin")
    op.create_index("ix_products_category", "products", ["category"], schema=S)

    op.create_table(
        "models",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("version", sa.Text, nullable=False, comment="Content hash of weights and config."),
        sa.Column("embedding_dim", sa.Integer, nullable=False),
        sa.Column("weights_sha256", sa.String(64), nullable=False),
        sa.Column("config", postgresql.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("state", sa.Text, nullable=False, server_default="registered"),
        sa.Column("created_at", TS, nullable=False, server_default=_now()),
        sa.Column("activated_at", TS),
        sa.PrimaryKeyConstraint("id", name="pk_models"),
        sa.UniqueConstraint("version", name="uq_models_version"),
        sa.CheckConstraint("embedding_dim BETWEEN 1 AND 2000", name="ck_models_embedding_dim_indexable"),
        sa.CheckConstraint("state IN ('registered', 'backfilling', 'active', 'retired')", name="ck_models_state"),
        schema=S,
    )
    op.create_index(
        "uq_models_one_active", "models", ["state"], unique=True, schema=S, postgresql_where=sa.text("state = 'active'")
    )

    op.create_table(
        "embeddings",
        sa.Column("product_id", sa.Integer, nullable=False),
        sa.Column("model_id", sa.Integer, nullable=False),
        sa.Column("image_sha256", sa.String(64), nullable=False),
        sa.Column("embedding", Vector(), nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=_now()),
        sa.PrimaryKeyConstraint("product_id", "model_id", name="pk_embeddings"),
        sa.ForeignKeyConstraint(
            ["product_id"], [f"{S}.products.id"], name="fk_embeddings_product_id_products", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["model_id"], [f"{S}.models.id"], name="fk_embeddings_model_id_models", ondelete="CASCADE"
        ),
        schema=S,
    )
    op.create_index("ix_embeddings_model_id", "embeddings", ["model_id"], schema=S)

    op.create_table(
        "embedding_jobs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("product_id", sa.Integer, nullable=False),
        sa.Column("model_id", sa.Integer, nullable=False),
        sa.Column("image_uri", sa.Text, nullable=False),
        sa.Column("image_sha256", sa.String(64)),
        sa.Column("tags", postgresql.ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("state", sa.Text, nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer, nullable=False, server_default="5"),
        sa.Column("run_after", TS, nullable=False, server_default=_now()),
        sa.Column("lease_expires_at", TS),
        sa.Column("claimed_by", sa.Text),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", TS, nullable=False, server_default=_now()),
        sa.Column("updated_at", TS, nullable=False, server_default=_now()),
        sa.Column("finished_at", TS),
        sa.PrimaryKeyConstraint("id", name="pk_embedding_jobs"),
        sa.ForeignKeyConstraint(
            ["product_id"], [f"{S}.products.id"], name="fk_embedding_jobs_product_id_products", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["model_id"], [f"{S}.models.id"], name="fk_embedding_jobs_model_id_models", ondelete="CASCADE"
        ),
        sa.CheckConstraint(
            "state IN ('pending', 'running', 'retry', 'done', 'dead', 'superseded')", name="ck_embedding_jobs_state"
        ),
        schema=S,
    )
    op.create_index(
        "ix_embedding_jobs_open",
        "embedding_jobs",
        ["run_after"],
        schema=S,
        postgresql_where=sa.text("state IN ('pending', 'retry', 'running')"),
    )
    op.create_index("ix_embedding_jobs_product_id", "embedding_jobs", ["product_id"], schema=S)
    op.create_index("ix_embedding_jobs_model_id_state", "embedding_jobs", ["model_id", "state"], schema=S)


TOUCH_UPDATED_AT = """
CREATE FUNCTION ynet.touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END $$;
CREATE TRIGGER products_touch_updated_at BEFORE UPDATE ON ynet.products
    FOR EACH ROW EXECUTE FUNCTION ynet.touch_updated_at();
"""

# Work is recorded in the same transaction as the product row: a rolled-back insert leaves no job, and
# a committed one has its job even if no broker or worker is up. Price, stock and title changes make no
# work. This revision also recorded work when the category changed; revision 0008 stopped that, as no
# encoder reads the category column (a model attends to it through a `category:<value>` tag), so since
# 0008 only an insert and a change of the image (URI or hash) or the tags make work.
RECORD_EMBEDDING_JOBS = """
CREATE FUNCTION ynet.record_embedding_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Queued work for the previous image or tags is pointless now.
    UPDATE ynet.embedding_jobs
       SET state = 'superseded', updated_at = now(), finished_at = now()
     WHERE product_id = NEW.id AND state IN ('pending', 'retry');
    INSERT INTO ynet.embedding_jobs (product_id, model_id, image_uri, image_sha256, tags)
    SELECT NEW.id, m.id, NEW.image_uri, NEW.image_sha256, NEW.tags
      FROM ynet.models m
     WHERE m.state IN ('active', 'backfilling');
    IF FOUND THEN
        -- A constant payload: PostgreSQL folds repeats into one wake-up per transaction.
        PERFORM pg_notify('ynet_embedding_jobs', '');
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER products_record_jobs_on_insert AFTER INSERT ON ynet.products
    FOR EACH ROW EXECUTE FUNCTION ynet.record_embedding_jobs();
CREATE TRIGGER products_record_jobs_on_change AFTER UPDATE OF image_uri, image_sha256, tags, category
    ON ynet.products FOR EACH ROW
    WHEN (OLD.image_uri IS DISTINCT FROM NEW.image_uri
          OR OLD.image_sha256 IS DISTINCT FROM NEW.image_sha256
          OR OLD.tags IS DISTINCT FROM NEW.tags
          OR OLD.category IS DISTINCT FROM NEW.category)
    EXECUTE FUNCTION ynet.record_embedding_jobs();
"""

CHECK_EMBEDDING_DIM = """
CREATE FUNCTION ynet.check_embedding_dim() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    want integer;
BEGIN
    SELECT embedding_dim INTO want FROM ynet.models WHERE id = NEW.model_id;
    IF vector_dims(NEW.embedding) <> want THEN
        RAISE EXCEPTION 'embedding of product % has % dimensions, but model % stores %',
            NEW.product_id, vector_dims(NEW.embedding), NEW.model_id, want
            USING ERRCODE = 'data_exception';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER embeddings_check_dim BEFORE INSERT OR UPDATE OF embedding, model_id ON ynet.embeddings
    FOR EACH ROW EXECUTE FUNCTION ynet.check_embedding_dim();
"""

# One HNSW index per model, on a cast to that model's dimension and limited to its rows, so a search
# (WHERE model_id = m ORDER BY embedding::vector(d) <=> q) can only ever meet vectors of one model.
MODEL_INDEX = """
CREATE FUNCTION ynet.model_index_name(model_id integer) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT 'embeddings_hnsw_model_' || model_id
$$;
CREATE FUNCTION ynet.create_model_index() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format(
        'CREATE INDEX %I ON ynet.embeddings USING hnsw ((embedding::vector(%s)) vector_cosine_ops) WHERE model_id = %s',
        ynet.model_index_name(NEW.id), NEW.embedding_dim, NEW.id);
    RETURN NULL;
END $$;
CREATE FUNCTION ynet.drop_model_index() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('DROP INDEX IF EXISTS ynet.%I', ynet.model_index_name(OLD.id));
    RETURN NULL;
END $$;
CREATE TRIGGER models_create_index AFTER INSERT ON ynet.models
    FOR EACH ROW EXECUTE FUNCTION ynet.create_model_index();
CREATE TRIGGER models_drop_index AFTER DELETE ON ynet.models
    FOR EACH ROW EXECUTE FUNCTION ynet.drop_model_index();
"""


def downgrade() -> None:
    for table in ("embedding_jobs", "embeddings", "models", "products"):
        op.drop_table(table, schema=S)
    for function in (
        "drop_model_index()",
        "create_model_index()",
        "model_index_name(integer)",
        "check_embedding_dim()",
        "record_embedding_jobs()",
        "touch_updated_at()",
    ):
        op.execute(f"DROP FUNCTION IF EXISTS {S}.{function}")
