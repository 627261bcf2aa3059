"""The embedding jobs as an operator reads them: which product, which model, how far, and the last error.

`ynet-db jobs list --state dead` finds what to re-drive without SQL. Errors and ids come from images,
URLs and shop tables: the CLI prints them through `ynet_db.cli.terminal.safe`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from ynet_db.ingestion import jobs
from ynet_db.models.registry import find

IMPORT_SOURCE = "import"


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
        return [JobRow(*row) for row in jobs.recent(conn, state=state, model_id=model_id, limit=limit)]


def clipped(value: str, width: int) -> str:
    return value if len(value) <= width else value[: width - 3] + "..."
