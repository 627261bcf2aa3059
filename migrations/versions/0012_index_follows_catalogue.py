"""A model's HNSW links follow its catalogue's size: `ynet.model_index_links`, `ynet.model_index_definition`,
and `ynet.build_model_index` with links chosen by size unless asked.

Revision 0006 built every index with pgvector's defaults (m 16, ef_construction 64) unless the call named
other links. From this revision on, links left out are chosen from the model's embedded rows by the rule in
`ynet_db.search.index_links` (the defaults below 300,000 rows, m 32 / ef_construction 128 from there; the
measurements are in that module's docstring), rendered into SQL by `ynet_db.search.index_sql`. The CREATE
INDEX statement has one definition, `ynet.model_index_definition`: `ynet.build_model_index` runs it in the
caller's transaction, and `ynet-db index rebuild` runs it CONCURRENTLY beside the old index, then swaps.
A new model's index has no rows to count, so it still gets the defaults.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

from importlib import import_module

from alembic import op

from ynet_db.search.index_sql import BUILD_SIGNATURE, DEFINITION_SIGNATURE, LINKS_SIGNATURE, index_functions

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Its defaults change from (16, 64) to NULL, which CREATE OR REPLACE cannot do.
    op.execute(f"DROP FUNCTION {BUILD_SIGNATURE}")
    op.execute(index_functions())


def downgrade() -> None:
    op.execute(
        f"DROP FUNCTION {BUILD_SIGNATURE}; DROP FUNCTION {DEFINITION_SIGNATURE}; DROP FUNCTION {LINKS_SIGNATURE}"
    )
    op.execute(import_module("ynet_db.migrations.versions.0006_model_index_links").BUILD_MODEL_INDEX)
