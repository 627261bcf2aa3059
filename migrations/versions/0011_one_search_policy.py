"""`ynet.nearest_products` is rendered from the one nearest-neighbour policy (`ynet_db.search.policy`).

Revisions 0003, 0007 and 0008 wrote the function by hand, its constants kept equal to the Python
prefilter's by a comment. From this revision on the function is the rendering of `ynet_db.search.policy`
(`ynet_db.search.nearest_sql`) at migration time: the search list, the scan limit, the iterative scan and
the exact-search threshold are defined once, in Python. Its behaviour is revision 0008's; a later change
to the policy ships with a revision that installs the rendering again.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

from importlib import import_module

from alembic import op

from ynet_db.search.nearest_sql import nearest_products_function

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(nearest_products_function())


def downgrade() -> None:
    op.execute(import_module("ynet_db.migrations.versions.0008_privileges_and_sources")._nearest_products_with_checks())
