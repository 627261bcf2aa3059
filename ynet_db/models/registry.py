"""The model registry: which models exist, which one search uses, and the switch between them.

States: registered -> (activate) -> active at once when none is active, else backfilling -> (every
product embedded or dead, `promote_if_complete`) -> active, and the old active one -> retired; `cancel`
takes a back-filling model back to registered. The trigger records work for every 'active' and
'backfilling' model, so new products reach both during a back-fill.
No torch here: a model is described by a `ModelIdentity`, which the caller builds from a loaded model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, text

from ynet_db.content_hash import file_sha256


class RegistryError(LookupError):
    """A model that is not registered, or a name that names several; the message says which."""


class DescribedModel(Protocol):
    """The attributes of `ynet_db.nn.model.RetrievalModel` that identify it."""

    name: str
    version: str
    embedding_dim: int
    config: Any


@dataclass(frozen=True)
class ModelIdentity:
    name: str
    version: str
    embedding_dim: int
    weights_sha256: str
    config: dict[str, Any]

    @classmethod
    def of(cls, model: DescribedModel, checkpoint: Path | None = None) -> ModelIdentity:
        """The default model is identified by its backbone weights; a checkpoint by its own file."""
        weights = file_sha256(checkpoint) if checkpoint and checkpoint.is_file() else model.config.weights_sha256
        config = {"model": model.config.to_dict(), "checkpoint": str(checkpoint.resolve()) if checkpoint else None}
        return cls(model.name, model.version, model.embedding_dim, weights, config)


@dataclass(frozen=True)
class ModelRecord:
    id: int
    name: str
    version: str
    embedding_dim: int
    state: str


@dataclass(frozen=True)
class Coverage:
    """How much of the catalogue a model has embedded.

    `dead` counts the products it cannot embed: no embedding, no open job, and a dead job. They wait for
    an operator (`ynet-db jobs list --state dead`, then `jobs retry`), so they do not hold back a switch.
    """

    model: ModelRecord
    embedded: int
    products: int
    open_jobs: int
    dead: int

    @property
    def complete(self) -> bool:
        """Every product embedded or dead, and at least one embedded: a model that embedded nothing is no use."""
        return self.embedded + self.dead >= self.products and (self.embedded > 0 or self.products == 0)

    def __str__(self) -> str:
        share = 100.0 * self.embedded / self.products if self.products else 100.0
        return (
            f"{self.model.version:<32} {self.model.state:<11} {self.embedded}/{self.products} embedded "
            f"({share:.1f}%), {self.open_jobs} queued, {self.dead} dead"
        )


REGISTER = text(
    """
    INSERT INTO ynet.models (name, version, embedding_dim, weights_sha256, config)
    VALUES (:name, :version, :embedding_dim, :weights_sha256, CAST(:config AS jsonb))
    ON CONFLICT (version) DO NOTHING
    """
)
RECORD_COLUMNS = "id, name, version, embedding_dim, state"


def register(engine: Engine, identity: ModelIdentity) -> ModelRecord:
    """Record a model (idempotent on its version) in state 'registered'; an existing row is kept as is."""
    with engine.begin() as conn:
        conn.execute(REGISTER, {**identity.__dict__, "config": json.dumps(identity.config)})
        return _by_version(conn, identity.version)


def _by_version(conn: Connection, version: str) -> ModelRecord:
    row = conn.execute(text(f"SELECT {RECORD_COLUMNS} FROM ynet.models WHERE version = :v"), {"v": version}).first()
    if row is None:
        raise RegistryError(f"no model with version {version!r} is registered; run `ynet-db model register`")
    return ModelRecord(*row)


def find(conn: Connection, name_or_version: str) -> ModelRecord:
    """A model by exact version, else by name (the newest registration of that name)."""
    rows = conn.execute(
        text(
            f"SELECT {RECORD_COLUMNS} FROM ynet.models WHERE version = :key OR name = :key "
            "ORDER BY version = :key DESC, created_at DESC, id DESC LIMIT 1"
        ),
        {"key": name_or_version},
    ).all()
    if not rows:
        raise RegistryError(f"no model named or versioned {name_or_version!r}; see `ynet-db model list`")
    return ModelRecord(*rows[0])


def list_models(engine: Engine) -> list[ModelRecord]:
    with engine.connect() as conn:
        return [
            ModelRecord(*row) for row in conn.execute(text(f"SELECT {RECORD_COLUMNS} FROM ynet.models ORDER BY id"))
        ]


# Products whose embedding under the model is missing and not already queued.
BACKFILL = text(
    """
    INSERT INTO ynet.embedding_jobs (product_id, model_id, image_uri, image_sha256, tags)
    SELECT p.id, :model_id, p.image_uri, p.image_sha256, p.tags
      FROM ynet.products p
     WHERE NOT EXISTS (SELECT 1 FROM ynet.embeddings e WHERE e.product_id = p.id AND e.model_id = :model_id)
       AND NOT EXISTS (SELECT 1 FROM ynet.embedding_jobs j
                        WHERE j.product_id = p.id AND j.model_id = :model_id
                          AND j.state IN ('pending', 'retry', 'running'))
    """
)
SUPERSEDE_OPEN_JOBS = text(
    """
    UPDATE ynet.embedding_jobs SET state = 'superseded', finished_at = now(), updated_at = now()
     WHERE model_id = ANY(:model_ids) AND state IN ('pending', 'retry')
    """
)


@dataclass(frozen=True)
class Activation:
    model: ModelRecord
    backfill_jobs: int


def activate(engine: Engine, name_or_version: str) -> Activation:
    """Make a model active at once (none active) or start its back-fill; queue jobs for what it lacks."""
    with engine.begin() as conn:
        # SHARE blocks product writes until commit: a product committed between our state change and
        # the back-fill query would otherwise be missed by both the trigger and the back-fill.
        conn.execute(text("LOCK TABLE ynet.products IN SHARE MODE"))
        conn.execute(text("LOCK TABLE ynet.models IN SHARE ROW EXCLUSIVE MODE"))
        model = find(conn, name_or_version)
        if model.state == "active":
            return Activation(model, 0)
        has_active = conn.execute(text("SELECT 1 FROM ynet.models WHERE state = 'active'")).first() is not None
        # Only one back-fill at a time: a newer activation cancels an unfinished one.
        cancelled = (
            conn.execute(
                text(
                    "UPDATE ynet.models SET state = 'registered' WHERE state = 'backfilling' AND id <> :id RETURNING id"
                ),
                {"id": model.id},
            )
            .scalars()
            .all()
        )
        if cancelled:
            conn.execute(SUPERSEDE_OPEN_JOBS, {"model_ids": list(cancelled)})
        state = "backfilling" if has_active else "active"
        conn.execute(
            text(
                "UPDATE ynet.models SET state = :state, activated_at = CASE WHEN :state = 'active' THEN now() END "
                "WHERE id = :id"
            ),
            {"state": state, "id": model.id},
        )
        queued = conn.execute(BACKFILL, {"model_id": model.id}).rowcount
        if queued:
            conn.execute(text("SELECT pg_notify('ynet_embedding_jobs', '')"))
        return Activation(_by_version(conn, model.version), queued)


COVERAGE = text(
    f"""
    SELECT {", ".join("m." + c for c in RECORD_COLUMNS.split(", "))},
           (SELECT count(*) FROM ynet.embeddings e JOIN ynet.products p ON p.id = e.product_id
             WHERE e.model_id = m.id),
           (SELECT count(*) FROM ynet.products),
           (SELECT count(*) FROM ynet.embedding_jobs j WHERE j.model_id = m.id
               AND j.state IN ('pending', 'retry', 'running')),
           -- From the dead jobs, which are few, rather than from every product.
           (SELECT count(DISTINCT d.product_id) FROM ynet.embedding_jobs d
             WHERE d.model_id = m.id AND d.state = 'dead'
               AND NOT EXISTS (SELECT 1 FROM ynet.embedding_jobs j WHERE j.product_id = d.product_id
                                  AND j.model_id = m.id AND j.state IN ('pending', 'retry', 'running'))
               AND NOT EXISTS (SELECT 1 FROM ynet.embeddings e WHERE e.product_id = d.product_id AND e.model_id = m.id))
      FROM ynet.models m
     WHERE CAST(:state AS text) IS NULL OR m.state = :state
     ORDER BY m.id
    """
)


def coverage(conn: Connection, state: str | None = None) -> list[Coverage]:
    rows = conn.execute(COVERAGE, {"state": state})
    return [Coverage(ModelRecord(*row[:5]), *row[5:]) for row in rows]


def promote_if_complete(engine: Engine) -> ModelRecord | None:
    """Switch search to the back-filling model once every product is embedded or dead; returns it if switched.

    One transaction: the old model is retired and the new one made active together, so a search
    sees one model or the other, never none and never both.
    """
    with engine.begin() as conn:
        conn.execute(text("LOCK TABLE ynet.models IN SHARE ROW EXCLUSIVE MODE"))
        for candidate in coverage(conn, "backfilling"):
            if candidate.complete:
                retired = (
                    conn.execute(text("UPDATE ynet.models SET state = 'retired' WHERE state = 'active' RETURNING id"))
                    .scalars()
                    .all()
                )
                conn.execute(SUPERSEDE_OPEN_JOBS, {"model_ids": list(retired)})
                conn.execute(
                    text("UPDATE ynet.models SET state = 'active', activated_at = now() WHERE id = :id"),
                    {"id": candidate.model.id},
                )
                return _by_version(conn, candidate.model.version)
    return None


@dataclass(frozen=True)
class Cancellation:
    model: ModelRecord
    dropped_jobs: int


def cancel(engine: Engine, name_or_version: str) -> Cancellation:
    """Stop a model's back-fill: it goes back to 'registered' and its queued jobs are superseded.

    Search keeps the active model; embeddings already written stay, so activating it again queues only
    what it still lacks.
    """
    with engine.begin() as conn:
        conn.execute(text("LOCK TABLE ynet.models IN SHARE ROW EXCLUSIVE MODE"))
        model = find(conn, name_or_version)
        if model.state != "backfilling":
            raise RegistryError(f"{model.version} is {model.state}, not back-filling: there is nothing to cancel")
        conn.execute(text("UPDATE ynet.models SET state = 'registered' WHERE id = :id"), {"id": model.id})
        dropped = conn.execute(SUPERSEDE_OPEN_JOBS, {"model_ids": [model.id]}).rowcount
        return Cancellation(_by_version(conn, model.version), dropped)
