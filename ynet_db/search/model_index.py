"""A model's HNSW index in the live database: what it was built with, and a rebuild that never blocks
searches or writes (`ynet-db index rebuild`).

`rebuild` runs, for one model:
1. a session advisory lock on the model (`REBUILD_LOCK`): a second rebuild of it is refused, and `status`
   tells a build in progress from a leftover;
2. DROP INDEX CONCURRENTLY of whatever an earlier rebuild left under the new name (`REBUILD_SUFFIX`): an
   invalid index from a failed build, or a built one whose swap was interrupted; except a built one whose
   swap stopped between its two statements, the model's only index then: it is renamed (the swap finished);
3. CREATE INDEX CONCURRENTLY under the new name, the statement `ynet.model_index_definition` makes (the same
   predicate as the old index; the same expression unless the element type changes, `vector` to `halfvec`,
   and searches ask the new index, in its element type, from the moment it is valid: `serving_index_sql`);
4. the swap: once the transactions older than the new index have ended, DROP INDEX CONCURRENTLY the old
   index, then rename the new one to `ynet.model_index_name`.
CREATE and DROP INDEX CONCURRENTLY take SHARE UPDATE EXCLUSIVE on the table, and renaming an index takes the
same lock on the index (PostgreSQL >= 12): none of them conflicts with a search's ACCESS SHARE or a write's
ROW EXCLUSIVE. CONCURRENTLY cannot run in a transaction block or a function, so each statement runs on its
own in autocommit, on a connection that is discarded afterwards (its lock and settings never reach the pool).
A concurrent build that fails leaves an invalid index, which PostgreSQL keeps updating on every write: it is
dropped at once, and when even that fails, by the next rebuild (step 2); `status` warns about one left over.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from ynet_db.models import registry
from ynet_db.models.registry import ModelRecord
from ynet_db.search.index_links import BY_SIZE, ELEMENTS, VECTOR, Links, SizeRule

REBUILD_SUFFIX = "_rebuild"
"""The new index's name during a rebuild: the model's index name with this suffix."""
REBUILD_LOCK = 0x796E6978
"""The first key of the session advisory lock a rebuild holds (pg_try_advisory_lock(REBUILD_LOCK, model id))."""
PROGRESS_EVERY_S = 5.0

Say = Callable[[str], None]


class RebuildError(RuntimeError):
    """A rebuild that could not run or did not finish; says what state it left and what to do."""


@dataclass(frozen=True)
class IndexState:
    """One index of a model on `ynet.embeddings`: its own, or the one a rebuild builds beside it."""

    model_id: int
    name: str
    links: Links
    valid: bool
    """False for an index a concurrent build has not finished (or failed): never searched, still written."""
    rebuilding: bool
    """A rebuild of this model holds its lock now."""

    @property
    def serving(self) -> bool:
        """The model's own index (named `ynet.model_index_name`), not one a rebuild builds beside it."""
        return not self.name.endswith(REBUILD_SUFFIX)


INDEX_ELEMENT = (
    "(SELECT t.typname::text FROM pg_opclass o JOIN pg_type t ON t.oid = o.opcintype WHERE o.oid = i.indclass[0])"
)
"""The element type (`vector`, `halfvec`) the index `i` (a pg_index row) stores: its operator class's input type."""


def serving_index_sql(model: str) -> str:
    """A query of one row (`oid`, `element`), or none: the index searches of the model ask (`model`: an SQL
    expression of its id) and the element type they ask in. The index a rebuild built beside the model's own,
    from the moment it is valid, else its own.

    So an index converted by a rebuild (`vector` to `halfvec`) serves every search from the moment it is built,
    and the old one is dropped only when no transaction that could have read the old type is left (`_swap`):
    no search reads every row because of a conversion."""
    return (
        f"SELECT c.oid, {INDEX_ELEMENT} AS element FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        f"WHERE c.relnamespace = 'ynet'::regnamespace AND i.indisvalid AND c.relname IN "
        f"(ynet.model_index_name({model}), ynet.model_index_name({model}) || '{REBUILD_SUFFIX}') "
        "ORDER BY c.relname DESC LIMIT 1"  # the rebuild's name is the model's own and a suffix
    )


def serving_element_sql(model: str) -> str:
    """A scalar SQL expression: the element type of `serving_index_sql`; 'vector' when the model has no index
    (a search then reads every row, whatever it asks)."""
    return f"coalesce((SELECT s.element FROM ({serving_index_sql(model)}) AS s), '{VECTOR}')"


def serving_element(conn: Connection, model_id: int) -> str:
    """The element type searches of the model ask in (`serving_index_sql`)."""
    element = text(f"SELECT {serving_element_sql('CAST(:id AS integer)')}")
    return str(conn.execute(element, {"id": model_id}).scalar_one())


INDEXES = text(
    f"""
    SELECT m.id, c.relname, c.reloptions, {INDEX_ELEMENT}, i.indisvalid,
           EXISTS (SELECT 1 FROM pg_locks l
                    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
                      AND l.classid::bigint = :lock AND l.objid::bigint = m.id)
      FROM ynet.models m
      JOIN pg_class c ON c.relnamespace = 'ynet'::regnamespace
       AND c.relname IN (ynet.model_index_name(m.id), ynet.model_index_name(m.id) || :suffix)
      JOIN pg_index i ON i.indexrelid = c.oid
     ORDER BY m.id, c.relname
    """
)


def model_indexes(conn: Connection) -> list[IndexState]:
    """Every model's index, and any a rebuild is building (or left) beside it."""
    rows = conn.execute(INDEXES, {"lock": REBUILD_LOCK, "suffix": REBUILD_SUFFIX})
    return [
        # an index under the name that ynet-db did not make (by hand; not HNSW) is reported as `vector`
        IndexState(id_, name, Links.from_catalog(options, element if element in ELEMENTS else VECTOR), valid, busy)
        for id_, name, options, element, valid, busy in rows
    ]


@dataclass(frozen=True)
class Rebuilt:
    index: str
    links: Links
    rows: int
    """The model's embedded rows when the build began (what the size rule chose by)."""
    replaced: Links | None
    """The links of the index it replaced; None when the model had no valid index."""
    leftover: str | None
    """What an earlier rebuild had left and this one dropped (or renamed into place) first, if anything."""
    build_s: float


def rebuild(
    engine: Engine,
    model: ModelRecord,
    m: int | None = None,
    ef_construction: int | None = None,
    *,
    element: str | None = None,
    rule: SizeRule = BY_SIZE,
    say: Say = lambda line: None,
    progress_every_s: float = PROGRESS_EVERY_S,
) -> Rebuilt:
    """Build `model`'s index again beside the old one, then swap them; `say` hears each step as it
    happens, and the build's progress. Links and element type not given are chosen by `rule` from the model's
    embedded rows (as `ynet.model_index_definition` chooses them); links pgvector would refuse raise
    `LinksError` before anything is changed."""
    asked = {"m": m, "ef_construction": ef_construction, "element": element}
    with _session(engine) as conn:
        _lock(conn, model)
        rows = _embedded_rows(conn, model)
        by_size = rule.links(rows)
        links = Links(
            by_size.m if m is None else m,
            by_size.ef_construction if ef_construction is None else ef_construction,
            by_size.element if element is None else element,
        )
        name = str(conn.execute(text("SELECT ynet.model_index_name(:id)"), {"id": model.id}).scalar_one())
        building = name + REBUILD_SUFFIX
        leftover = _settle_leftover(conn, model, name, building, say)
        replaced = next((i.links for i in model_indexes(conn) if i.name == name and i.valid), None)
        say(
            f"model {model.version}: building ynet.{building} with {links} ({_why(asked, rows)}) "
            f"concurrently beside ynet.{name} ({replaced or 'none'}); searches and writes go on"
        )
        started = time.monotonic()
        _build(conn, engine, model, links, building, rows, say, progress_every_s)
        build_s = time.monotonic() - started
        _swap(conn, name, building, say)
        say(f"swapped: ynet.{name} ({links}) serves model {model.version}; built in {build_s:.1f} s")
        return Rebuilt(name, links, rows, replaced, leftover, build_s)


def own_valid_index(model_id: int, indexes: Sequence[IndexState]) -> IndexState | None:
    """The model's own index (not one a rebuild builds beside it), when it is valid."""
    return next((i for i in indexes if i.model_id == model_id and i.serving and i.valid), None)


SEARCHED = ("active", "backfilling")
"""States whose index searches use now or soon: only theirs are judged by size."""


def follow_rule(engine: Engine, *, rule: SizeRule = BY_SIZE, say: Say = lambda line: None) -> list[Rebuilt]:
    """Rebuild, one after the other, the index of every model searches use whose index the size rule would
    not build now (none valid, or one `Links.covers` says falls short); each as `rebuild` does, never
    blocking searches or writes. `ynet-db db upgrade` runs it after the migrations, so that a catalogue the
    rule now indexes otherwise (revision 0015: `halfvec` from 300,000 rows) is converted in place."""
    searched = [model for model in registry.list_models(engine) if model.state in SEARCHED]
    with engine.connect() as conn:
        indexes = model_indexes(conn)
        wanted = {model.id: rule.links(_embedded_rows(conn, model)) for model in searched}
    outgrown = [
        model
        for model in searched
        if (serving := own_valid_index(model.id, indexes)) is None or not serving.links.covers(wanted[model.id])
    ]
    return [rebuild(engine, model, rule=rule, say=say) for model in outgrown]


def _embedded_rows(conn: Connection, model: ModelRecord) -> int:
    count = text("SELECT count(*) FROM ynet.embeddings WHERE model_id = :id")
    return int(conn.execute(count, {"id": model.id}).scalar_one())


def _why(asked: Mapping[str, object], rows: int) -> str:
    by_size = f"chosen by size for {rows:,} embedded rows"
    given = [key for key, value in asked.items() if value is not None]
    if not given:
        return by_size
    if len(given) == len(asked):
        return "as asked"
    return f"{' and '.join(given)} as asked, the rest {by_size}"


@contextmanager
def _session(engine: Engine) -> Iterator[Connection]:
    """An autocommit connection of its own, discarded afterwards with its advisory lock."""
    conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        yield conn
    finally:
        conn.invalidate()
        conn.close()


def _lock(conn: Connection, model: ModelRecord) -> None:
    key = {"lock": REBUILD_LOCK, "id": model.id}
    if conn.execute(text("SELECT pg_try_advisory_lock(CAST(:lock AS integer), :id)"), key).scalar_one():
        return
    holder = conn.execute(
        text(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 "
            "AND classid::bigint = :lock AND objid::bigint = :id"
        ),
        key,
    ).scalar()
    raise RebuildError(
        f"another rebuild of model {model.version}'s index is running (backend pid {holder}): "
        f"wait for it to finish, or stop it with SELECT pg_cancel_backend({holder})"
    )


def _qualified(name: str) -> str:
    """`ynet."name"`. Names come from `ynet.model_index_name` (a prefix and an integer id), never from input."""
    if not name.replace("_", "").isalnum():
        raise ValueError(f"not an index name ynet-db makes: {name!r}")
    return f'ynet."{name}"'


def _settle_leftover(conn: Connection, model: ModelRecord, name: str, building: str, say: Say) -> str | None:
    """Step 2. We hold the model's lock, so no rebuild is building this index now. A built index whose swap
    stopped after the old index was dropped is the only index the model has: it is renamed to serve now
    (the swap finished), not dropped, and the rebuild goes on beside it."""
    mine = {i.name: i for i in model_indexes(conn) if i.model_id == model.id}
    leftover = mine.get(building)
    if leftover is None:
        return None
    if leftover.valid and name not in mine:
        conn.exec_driver_sql(f'ALTER INDEX {_qualified(building)} RENAME TO "{name}"')
        what = "a built index whose swap was interrupted after the old index was dropped"
        say(f"renamed ynet.{building} to ynet.{name}: {what}; it serves searches while the rebuild runs")
        return what
    what = (
        "a built index whose swap was interrupted"
        if leftover.valid
        else "an invalid index left by a failed or interrupted concurrent build"
    )
    conn.exec_driver_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {_qualified(building)}")
    say(f"dropped ynet.{building}: {what}")
    return what


def _build(
    conn: Connection,
    engine: Engine,
    model: ModelRecord,
    links: Links,
    building: str,
    rows: int,
    say: Say,
    progress_every_s: float,
) -> None:
    """Step 3; a failed build's invalid index is dropped before the error is raised."""
    statement = conn.execute(
        text("SELECT ynet.model_index_definition(:id, :m, :ef, :name, true, :element)"),
        {"id": model.id, "m": links.m, "ef": links.ef_construction, "name": building, "element": links.element},
    ).scalar_one()
    pid = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
    try:
        with _progress(engine, pid, rows, say, progress_every_s):
            conn.exec_driver_sql(statement)
    except BaseException as error:
        cleaned = _drop_failed(conn, building, say)
        if not isinstance(error, DBAPIError):
            raise  # an interrupt: cleaned up as far as possible, and passed on
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        raise RebuildError(
            f"building ynet.{building} failed: {reason}; {cleaned}; the model's old index serves searches as before"
        ) from error


def _drop_failed(conn: Connection, building: str, say: Say) -> str:
    try:
        conn.exec_driver_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {_qualified(building)}")
    except SQLAlchemyError:  # the connection is gone (or interrupted): the next rebuild's step 2 drops it
        outcome = f"its invalid index ynet.{building} is left: the next `ynet-db index rebuild` drops it"
    else:
        outcome = "its invalid index was dropped"
    say(f"the build failed: {outcome}")
    return outcome


SWAP_WAIT_S = 30.0
"""How long the swap waits for the transactions older than the new index before it drops the old one."""

OLDER_TRANSACTIONS = text(
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
    "AND backend_type = 'client backend' AND xact_start < :built"
)


def _swap(conn: Connection, name: str, building: str, say: Say) -> None:
    """Step 4. From the moment the new index is valid, searches ask in its element type (`serving_element_sql`);
    one that read the old type just before still plans its statement against the old index, so the old index
    is dropped once the transactions older than the new one have ended (DROP INDEX CONCURRENTLY waits only for
    those that locked the table, and a search locks it only with that statement). Between the two statements
    the new index serves searches under its own name."""
    built = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
    deadline = time.monotonic() + SWAP_WAIT_S
    while (older := conn.execute(OLDER_TRANSACTIONS, {"built": built}).scalar_one()) and time.monotonic() < deadline:
        time.sleep(0.02)
    if older:
        say(f"  {older} transactions older than the new index still open after {SWAP_WAIT_S:.0f} s: dropping it now")
    conn.exec_driver_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {_qualified(name)}")
    conn.exec_driver_sql(f'ALTER INDEX {_qualified(building)} RENAME TO "{name}"')


PROGRESS = text("SELECT phase, tuples_done, current_locker_pid FROM pg_stat_progress_create_index WHERE pid = :pid")


@contextmanager
def _progress(engine: Engine, pid: int, rows: int, say: Say, every_s: float) -> Iterator[None]:
    """While the body runs, says the build's phase (pg_stat_progress_create_index) whenever it moved."""
    done = threading.Event()

    def watch() -> None:
        last: Sequence[object] | None = None
        try:
            with engine.connect() as conn:
                while not done.wait(every_s):
                    row = conn.execute(PROGRESS, {"pid": pid}).first()
                    conn.rollback()  # a fresh snapshot of the statistics next time
                    if row is not None and tuple(row) != last:
                        last = tuple(row)
                        say("  " + _phase(row.phase, row.tuples_done, row.current_locker_pid, rows))
        except DBAPIError:
            return  # progress is a courtesy: the build goes on without it

    watcher = threading.Thread(target=watch, name="index-progress", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()


def _phase(phase: str, tuples_done: int, locker: int, rows: int) -> str:
    if locker:
        return f"{phase} (backend pid {locker}'s transaction)"
    if tuples_done:
        return f"{phase}: {tuples_done:,} of {rows:,} rows"
    return phase
