"""`ynet.embedding_jobs.completions`: how many times each job was finished.

A job's embedding is an upsert on (product_id, model_id), so counting embeddings can never show that
a job was done twice. The statement that writes a batch's embeddings and marks its jobs done
(`ynet_db.ingestion.jobs.COMPLETE`) also counts each completion here, and nothing else writes it: the fault
tests assert exactly one per job under killed workers, duplicate deliveries and broker outages.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "embedding_jobs",
        sa.Column(
            "completions",
            sa.Integer,
            nullable=False,
            server_default="0",
            comment="times this job was written and marked done; more than 1 is a duplicate",
        ),
        schema="ynet",
    )


def downgrade() -> None:
    op.drop_column("embedding_jobs", "completions", schema="ynet")
