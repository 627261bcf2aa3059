"""A large catalogue's HNSW index stores half-precision copies (`halfvec`), and searches follow the element
type of the index that serves.

`ynet.model_index_links` chooses the element type beside the links (`ynet_db.search.index_links`: `vector`
below 300,000 embedded rows, `halfvec` from there), and `ynet.model_index_definition` and
`ynet.build_model_index` take it as an argument (NULL: chosen by size). The table keeps the full vectors.
`ynet.nearest_products` asks each search in the element type of the model's serving index, as the Python
prefilter does, so an index converted by a concurrent rebuild serves from the moment it is swapped in.

The conversion of an existing catalogue is that rebuild: `ynet-db db upgrade` runs it after this revision
for every searched model whose index the rule now builds otherwise (`model_index.follow_rule`; CREATE INDEX
CONCURRENTLY cannot run inside a migration's transaction), and `ynet-db status` warns until it has run.
Searches and writes go on meanwhile, served by the old index. A catalogue below 300,000 rows is unchanged.

Downgrade installs revision 0012's functions again, after rebuilding any `halfvec` index as `vector`
(the code of older revisions searches in `vector` only).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""

from __future__ import annotations

from importlib import import_module

from alembic import op

from ynet_db.search.index_links import HALFVEC, VECTOR
from ynet_db.search.index_sql import DROP_FUNCTIONS, index_functions
from ynet_db.search.model_index import model_indexes
from ynet_db.search.nearest_sql import nearest_products_function

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

REVISION_0012 = import_module("ynet_db.migrations.versions.0012_index_follows_catalogue")


def upgrade() -> None:
    # The links function's columns and the other two's arguments change, which CREATE OR REPLACE cannot do.
    op.execute(
        f"DROP FUNCTION {REVISION_0012.BUILD_SIGNATURE}; DROP FUNCTION {REVISION_0012.DEFINITION_SIGNATURE}; "
        f"DROP FUNCTION {REVISION_0012.LINKS_SIGNATURE}"
    )
    op.execute(index_functions())
    op.execute(nearest_products_function())


def downgrade() -> None:
    # In the migration's transaction (so blocking writes while it runs): the downgrade of a large catalogue
    # is better preceded by `ynet-db index rebuild --element vector`, which leaves nothing to do here.
    for index in model_indexes(op.get_bind()):
        if index.serving and index.links.element == HALFVEC:
            op.execute(f"SELECT ynet.build_model_index({index.model_id}, NULL, NULL, '{VECTOR}')")
    op.execute(DROP_FUNCTIONS)
    op.execute(REVISION_0012.FUNCTIONS)
