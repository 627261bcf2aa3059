"""Worker heartbeats and attached shop tables.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

S = "ynet"
TS = postgresql.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.Text, nullable=False, comment="host/pid, as in embedding_jobs.claimed_by"),
        sa.Column("hostname", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("model_id", sa.Integer),
        sa.Column("device", sa.Text, nullable=False, server_default="cpu"),
        sa.Column("started_at", TS, nullable=False, server_default=sa.text("now()")),
        sa.Column("last_seen_at", TS, nullable=False, server_default=sa.text("now()")),
        sa.Column("jobs_done", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("stopped_at", TS),
        sa.PrimaryKeyConstraint("id", name="pk_workers"),
        sa.ForeignKeyConstraint(
            ["model_id"], [f"{S}.models.id"], name="fk_workers_model_id_models", ondelete="SET NULL"
        ),
        schema=S,
    )
    op.create_table(
        "attachments",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("source_table", sa.Text, nullable=False, comment="schema-qualified table name"),
        sa.Column("id_column", sa.Text, nullable=False),
        sa.Column("image_column", sa.Text, nullable=False),
        sa.Column("tags_column", sa.Text),
        sa.Column("category_column", sa.Text, nullable=False),
        sa.Column("title_column", sa.Text),
        sa.Column("created_at", TS, nullable=False, server_default=sa.text("now()")),
        sa.PrimaryKeyConstraint("id", name="pk_attachments"),
        sa.UniqueConstraint("source_table", name="uq_attachments_source_table"),
        schema=S,
    )


def downgrade() -> None:
    op.drop_table("attachments", schema=S)
    op.drop_table("workers", schema=S)
