"""The model registry: which models exist, which one serves search (`active`), and the switch between them.

The one owner of the statements on `ynet.models`: every caller that asks which model serves, or
what a registered model is, gets a `ModelRecord` from here; `ynet_db.models.serving` loads one.

States: registered -> (activate) -> active at once when none is active, else backfilling -> (every
product embedded or dead, `promote_if_complete`) -> active, and the old active one -> retired; `cancel`
takes a back-filling model back to registered. The trigger records work for every 'active' and
'backfilling' model, so new products reach both during a back-fill.
No torch here: a model is described by a `ModelIdentity`, which the caller builds from a loaded model.
Coverage (how much of the catalogue a model has embedded) and promotion (the end of a back-fill) are
decided here and nowhere else; the queue's side of both is `ynet_db.ingestion.jobs`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Final, Literal, Protocol

from sqlalchemy import Connection, Engine, text

from ynet_db.content_hash import file_sha256
from ynet_db.ingestion import jobs


class RegistryError(LookupError):
    """A model that is not registered, or a name that names several; the message says which."""


class DescribedModel(Protocol):
    """The attributes of `ynet_db.nn.model.RetrievalModel` that identify it (read-only there)."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def embedding_dim(self) -> int: ...

    @property
    def config(self) -> Any: ...


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
    """A registered model as `ynet.models` holds it: the one record of which model serves and what to load.

    The identifying fields come first, so search code and tests can name a model by id, version and
    dimension alone.
    """

    id: int
    version: str
    embedding_dim: int
    name: str = ""
    state: str = "registered"
    config: Mapping[str, Any] = field(default_factory=dict)
    """As registered (`ModelIdentity.config`), plus the context calibration once one is stored."""

    @property
    def checkpoint(self) -> Path | None:
        """The checkpoint file it was registered from; None for the default (pretrained) model."""
        path = self.config.get("checkpoint")
        return Path(path) if path else None

    @property
    def model_config(self) -> dict[str, Any] | None:
        """The default model's configuration as registered (an earlier release's default may differ)."""
        described = self.config.get("model")
        return dict(described) if isinstance(described, Mapping) else None

    @property
    def context_rerank(self) -> Any:
        """The registry's context calibration of this model (`ynet-db model calibrate`), if any, as stored:
        its reader (`ContextCalibration.from_dict`) says what is wrong with a damaged one."""
        return self.config.get("context_rerank")


REGISTER = text(
    """
    INSERT INTO ynet.models (name, version, embedding_dim, weights_sha256, config)
    VALUES (:name, :version, :embedding_dim, :weights_sha256, CAST(:config AS jsonb))
    ON CONFLICT (version) DO NOTHING
    """
)
RECORD_COLUMNS = ("id", "version", "embedding_dim", "name", "state", "config")
"""`ModelRecord`'s fields, in its order."""
NO_ACTIVE_MODEL = "no model is active: run `ynet-db model activate NAME` once its embeddings exist"


class NoActiveModel(RegistryError):
    """No model serves search yet."""


class ActiveModelChanged(RegistryError):
    """An activation refused: the active model is not the one its caller decided on; nothing was changed."""

    def __init__(self, expected: str | None, actual: str | None) -> None:
        self.expected, self.actual = expected, actual
        super().__init__(
            f"the active model is {actual or 'none'}, not {expected or 'none'} as expected: it changed since the "
            "caller looked, so nothing was activated; decide again"
        )


class _Unchecked(Enum):
    UNCHECKED = "unchecked"


UNCHECKED: Final = _Unchecked.UNCHECKED
"""`activate`'s default `expected_active`: activate whichever model is active (None there expects none)."""


def _records(conn: Connection, where: str, params: Mapping[str, Any], order: str = "id") -> list[ModelRecord]:
    """The models matching `where` (SQL written here, values bound), as records."""
    columns = ", ".join(RECORD_COLUMNS)
    rows = conn.execute(text(f"SELECT {columns} FROM ynet.models WHERE {where} ORDER BY {order}"), dict(params))
    return [_record(row) for row in rows]


def _record(row: Sequence[Any]) -> ModelRecord:
    model_id, version, embedding_dim, name, state, config = row
    return ModelRecord(model_id, version, embedding_dim, name, state, config or {})


def register(engine: Engine, identity: ModelIdentity) -> ModelRecord:
    """Record a model (idempotent on its version) in state 'registered'; an existing row is kept as is."""
    with engine.begin() as conn:
        conn.execute(REGISTER, {**identity.__dict__, "config": json.dumps(identity.config)})
        return _by_version(conn, identity.version)


def _by_version(conn: Connection, version: str) -> ModelRecord:
    found = _records(conn, "version = :v", {"v": version})
    if not found:
        raise RegistryError(f"no model with version {version!r} is registered; run `ynet-db model register`")
    return found[0]


def get(conn: Connection, model_id: int) -> ModelRecord:
    """The model registered under `model_id` (a worker's task names its model by id)."""
    found = _records(conn, "id = :id", {"id": model_id})
    if not found:
        raise RegistryError(f"model {model_id} is not registered")
    return found[0]


def active(conn: Connection) -> ModelRecord:
    """The model search uses; `NoActiveModel` before the first activation."""
    found = _records(conn, "state = 'active'", {})
    if not found:
        raise NoActiveModel(NO_ACTIVE_MODEL)
    return found[0]


def find(conn: Connection, name_or_version: str) -> ModelRecord:
    """A model by exact version, else by name (the newest registration of that name)."""
    order = "version = :key DESC, created_at DESC, id DESC"
    found = _records(conn, "version = :key OR name = :key", {"key": name_or_version}, order)
    if not found:
        raise RegistryError(f"no model named or versioned {name_or_version!r}; see `ynet-db model list`")
    return found[0]


def list_models(engine: Engine) -> list[ModelRecord]:
    with engine.connect() as conn:
        return _records(conn, "true", {})


STORE_CALIBRATION = text(
    "UPDATE ynet.models SET config = jsonb_set(COALESCE(config, '{}'::jsonb), '{context_rerank}', "
    "CAST(:calibration AS jsonb)) WHERE id = :id"
)


def store_calibration(engine: Engine, model_id: int, calibration: Mapping[str, Any]) -> None:
    """Record a context calibration with the model version; search reads it with the active model."""
    with engine.begin() as conn:
        conn.execute(STORE_CALIBRATION, {"calibration": json.dumps(calibration), "id": model_id})


@dataclass(frozen=True)
class Activation:
    model: ModelRecord
    backfill_jobs: int


# Taken by every state change: two switches (activate, promote, cancel) never interleave.
LOCK_MODELS = text("LOCK TABLE ynet.models IN SHARE ROW EXCLUSIVE MODE")
SET_STATE = text(
    "UPDATE ynet.models SET state = :state, activated_at = CASE WHEN :state = 'active' THEN now() END WHERE id = :id"
)
LEAVE_STATE = text("UPDATE ynet.models SET state = :to WHERE state = :state AND id <> :keep RETURNING id")


def _set_state(conn: Connection, model_id: int, state: str) -> None:
    conn.execute(SET_STATE, {"state": state, "id": model_id})


def _leave_state(conn: Connection, state: str, to: str, keep: int = 0) -> list[int]:
    """Move every model in `state` but `keep` to `to`; their ids."""
    return [int(i) for i in conn.execute(LEAVE_STATE, {"state": state, "to": to, "keep": keep}).scalars()]


def activate(
    engine: Engine,
    name_or_version: str,
    *,
    expected_active: str | None | Literal[_Unchecked.UNCHECKED] = UNCHECKED,
) -> Activation:
    """Make a model active at once (none active) or start its back-fill; queue jobs for what it lacks (no
    embedding, or a stale one).

    A caller that decided from which model serves (a comparison with it) passes that model's version, or
    None for none, as `expected_active`: checked under the locks the switch takes, so `ActiveModelChanged`
    is raised, and nothing changes, if another activation or promotion came between.
    """
    with engine.begin() as conn:
        # SHARE blocks product writes until commit: a product committed between our state change and
        # the back-fill query would otherwise be missed by both the trigger and the back-fill.
        conn.execute(text("LOCK TABLE ynet.products IN SHARE MODE"))
        conn.execute(LOCK_MODELS)
        model = find(conn, name_or_version)
        serving = _records(conn, "state = 'active'", {})
        actual = serving[0].version if serving else None
        if expected_active is not UNCHECKED and actual != expected_active:
            raise ActiveModelChanged(expected_active, actual)
        if model.state == "active":
            return Activation(model, 0)
        # Only one back-fill at a time: a newer activation cancels an unfinished one.
        cancelled = _leave_state(conn, "backfilling", "registered", keep=model.id)
        if cancelled:
            jobs.supersede(conn, cancelled)
        _set_state(conn, model.id, "backfilling" if serving else "active")
        queued = jobs.backfill(conn, model.id)
        return Activation(_by_version(conn, model.version), queued)


@dataclass(frozen=True)
class Coverage:
    """How much of the catalogue a model has embedded.

    `embedded` counts current embeddings only (`jobs.CURRENT_EMBEDDING`): a vector made before its product's
    image or tags changed is not counted, so a retired model activated again is not switched to while it
    would serve old vectors for what changed meanwhile. `dead` counts the products it cannot embed
    (`jobs.Backlog.dead`): they wait for an operator, so they do not hold back a switch.
    """

    model: ModelRecord
    embedded: int
    products: int
    open_jobs: int
    dead: int

    @property
    def settled(self) -> bool:
        """Every product embedded or given up on: no work of this model's is left to wait for."""
        return self.embedded + self.dead >= self.products

    @property
    def complete(self) -> bool:
        """Settled, and at least one embedded: a model that embedded nothing is no use."""
        return self.settled and (self.embedded > 0 or self.products == 0)

    def __str__(self) -> str:
        share = 100.0 * self.embedded / self.products if self.products else 100.0
        return (
            f"{self.model.version:<32} {self.model.state:<11} {self.embedded}/{self.products} embedded "
            f"({share:.1f}%), {self.open_jobs} queued, {self.dead} dead"
        )


EMBEDDED = text(
    f"""
    SELECT {", ".join("m." + c for c in RECORD_COLUMNS)},
           (SELECT count(*) FROM ynet.embeddings e JOIN ynet.products p ON p.id = e.product_id
             WHERE e.model_id = m.id AND {jobs.CURRENT_EMBEDDING}),
           (SELECT count(*) FROM ynet.products)
      FROM ynet.models m
     WHERE (CAST(:state AS text) IS NULL OR m.state = :state)
       AND (CAST(:version AS text) IS NULL OR m.version = :version)
     ORDER BY m.id
    """
)


def coverage(conn: Connection, state: str | None = None, *, version: str | None = None) -> list[Coverage]:
    """Each model's coverage of the catalogue (those in `state`, or the one `version`, when given).

    Embeddings are counted before the queue is read: work finished in between can only make a model
    look less complete, never more.
    """
    rows = conn.execute(EMBEDDED, {"state": state, "version": version}).all()
    queue = jobs.backlog(conn, [row[0] for row in rows])
    covered = []
    for row in rows:
        record, (embedded, products) = _record(row[: len(RECORD_COLUMNS)]), row[len(RECORD_COLUMNS) :]
        backlog = queue[record.id]
        covered.append(Coverage(record, int(embedded), int(products), backlog.open, backlog.dead))
    return covered


def promote_if_complete(engine: Engine) -> ModelRecord | None:
    """Switch search to the back-filling model once every product is embedded or dead; returns it if switched.

    The one place a back-fill ends. The dispatcher calls it on every tick (workers/dispatcher.py says
    why there); nothing that only reads the registry does.
    One transaction: the old model is retired and the new one made active together, so a search
    sees one model or the other, never none and never both.
    """
    with engine.begin() as conn:
        conn.execute(LOCK_MODELS)
        for candidate in coverage(conn, "backfilling"):
            if candidate.complete:
                jobs.supersede(conn, _leave_state(conn, "active", "retired"))
                _set_state(conn, candidate.model.id, "active")
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
        conn.execute(LOCK_MODELS)
        model = find(conn, name_or_version)
        if model.state != "backfilling":
            raise RegistryError(f"{model.version} is {model.state}, not back-filling: there is nothing to cancel")
        _set_state(conn, model.id, "registered")
        dropped = jobs.supersede(conn, [model.id])
        return Cancellation(_by_version(conn, model.version), dropped)
