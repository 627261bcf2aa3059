"""`ynet.nearest_products` searches with a list three times the rows asked (`hnsw.ef_search`), as the Python
prefilter now does (`ynet_db.search.policy.EF_SEARCH`).

Twice the rows asked kept 0.99 of the 256 nearest on generated clustered vectors, but on the model's own
embeddings of street photos, at 100,000 products, it kept 0.938; three times kept 0.969 on validation photos
(bench/results/search-list-100000.json). Installed again from the policy's rendering, as revision 0011 made
the rule; downgrade installs the rendering with twice the rows asked.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from __future__ import annotations

from dataclasses import replace

from alembic import op

from ynet_db.search import policy
from ynet_db.search.nearest_sql import nearest_products_function

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(nearest_products_function())


def downgrade() -> None:
    current = policy.EF_SEARCH
    policy.EF_SEARCH = replace(current, per_candidate=2)  # the policy of revisions 0011 to 0013, rendered once
    try:
        op.execute(nearest_products_function())
    finally:
        policy.EF_SEARCH = current
