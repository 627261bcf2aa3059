"""The embedding jobs as an operator reads them: which product, which model, how far, and the last error.

`ynet-db jobs list --state dead` finds what to re-drive without SQL. Errors and ids come from images,
URLs and shop tables: the CLI prints them through `ynet_db.cli.terminal.safe`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, text

from ynet_db.models.registry import find

IMPORT_SOURCE = "import"

LIST_JOBS = text(
    """
    SELECT j.id, p.source, p.external_id, m.version, j.state, j.attempts, j.max_attempts, j.updated_at, j.last_error
      FROM ynet.embedding_jobs j
      JOIN ynet.products p ON p.id = j.product_id
      JOIN ynet.models m ON m.id = j.model_id
     WHERE (CAST(:state AS text) IS NULL OR j.state = :state)
       AND (CAST(:model_id AS integer) IS NULL OR j.model_id = :model_id)
     ORDER BY j.updated_at DESC, j.id DESC
     LIMIT :limit
    """
)


@dataclass(frozen=True)
class JobRow:
    id: int
    source: str
    external_id: str
    model_version: str
    state: str
    attempts: int
    max_attempts: int
    updated_at: datetime
    last_error: str | None

    @property
    def product(self) -> str:
        """The external id, with its source when the product comes from an attached table."""
        return self.external_id if self.source == IMPORT_SOURCE else f"{self.external_id} ({self.source})"


def list_jobs(engine: Engine, *, state: str | None = None, model: str | None = None, limit: int = 50) -> list[JobRow]:
    """The `limit` most recently changed jobs, in `state` and of `model` (name or version) when given."""
    with engine.connect() as conn:
        model_id = find(conn, model).id if model is not None else None
        rows = conn.execute(LIST_JOBS, {"state": state, "model_id": model_id, "limit": limit})
        return [JobRow(*row) for row in rows]


def clipped(value: str, width: int) -> str:
    return value if len(value) <= width else value[: width - 3] + "..."
