"""A model's HNSW index follows its catalogue (migration 0012, `ynet-db index rebuild`, the status warning),
against the real embedded PostgreSQL.

The rebuild's promise is that searches and writes never block: the traffic below runs on connections with
a short `lock_timeout`, so a statement that waited on the rebuild's locks would fail, and the same traffic
is shown to fail against the blocking `ynet.build_model_index`.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from catalogue_vectors import add_model, catalogue, exact_top, unit_vectors
from click.testing import CliRunner, Result
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from ynet_db.cli import main
from ynet_db.db import migrate
from ynet_db.db.engine import make_engine
from ynet_db.db.vectors import vector_text
from ynet_db.models import registry
from ynet_db.models.registry import ModelRecord
from ynet_db.presentation.status import catalogue_status
from ynet_db.search import index_links, policy
from ynet_db.search.index_links import BY_SIZE, Links, SizeRule, links_problem
from ynet_db.search.index_sql import DEFINITION_SIGNATURE, LINKS_SIGNATURE, definition_body, index_functions, links_body
from ynet_db.search.model_index import (
    REBUILD_LOCK,
    IndexState,
    RebuildError,
    follow_rule,
    model_indexes,
    rebuild,
    serving_element,
)
from ynet_db.search.prefilter import prefilter

LOCK_TIMEOUT_MS = 300
"""The traffic's lock_timeout: a statement that waits this long on a lock fails."""
SLOWEST_S = 5.0
"""The slowest search or insert allowed during a rebuild: lock waits end at LOCK_TIMEOUT_MS, and the rest
is the CPU, which the build and other jobs share (2 cores)."""
CANDIDATES = 20
DENSER = Links(24, 64)
"""Denser than pgvector's defaults, and quick to build: the large catalogue's m 32 / ef_construction 128 took
up to a minute at 3,000 rows here when other jobs shared the 2 cores."""
WALK_THE_INDEX = "-c enable_seqscan=off -c enable_sort=off"
"""Connection options for searches that must walk the HNSW index: at 3,000 rows the planner may prefer a
sequential scan and a sort (with m 32 it does)."""


def active(engine: Engine) -> ModelRecord:
    with engine.connect() as conn:
        return registry.active(conn)


def indexes(engine: Engine) -> list[IndexState]:
    with engine.connect() as conn:
        return model_indexes(conn)


def invalid_indexes(engine: Engine) -> list[str]:
    sql = (
        "SELECT indexrelid::regclass::text FROM pg_index "
        "WHERE indrelid = 'ynet.embeddings'::regclass AND NOT indisvalid"
    )
    with engine.connect() as conn:
        return list(conn.execute(text(sql)).scalars())


@pytest.fixture
def index_engine(tagged_url: URL) -> Iterator[Engine]:
    engine = make_engine(tagged_url, connect_args={"options": WALK_THE_INDEX})
    yield engine
    engine.dispose()


def search_all(engine: Engine, queries: np.ndarray) -> list[list[str]]:
    found = [prefilter(engine, q, candidates=CANDIDATES, exact=False) for q in queries]
    assert all(f.path == "ann" and f.index_scanned for f in found), "the model's HNSW index answered"
    return [[c.external_id for c in f.candidates] for f in found]


@dataclass
class Traffic:
    """Searches (two threads) and inserts of new embedded products (one thread), each on its own connection
    with a short lock_timeout, recording when each ran, how long it took and what failed."""

    url: URL
    model_id: int
    queries: np.ndarray
    new_vector: np.ndarray
    """Inserted products get this vector, far from every query, so the queries' results stay as they were."""
    done: list[tuple[str, float, float]] = field(default_factory=list)
    """(kind, started, seconds) of each statement that succeeded."""
    errors: list[str] = field(default_factory=list)
    unindexed: int = 0
    """Searches PostgreSQL answered without scanning the model's own HNSW index (a sequential scan)."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Traffic:
        options = f"-c lock_timeout={LOCK_TIMEOUT_MS} {WALK_THE_INDEX}"
        self.engine = make_engine(self.url, connect_args={"options": options})
        for target in (self._search, self._search, self._insert):
            self._threads.append(threading.Thread(target=self._loop, args=(target,), daemon=True))
            self._threads[-1].start()
        time.sleep(0.3)  # under way before the DDL starts
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)  # still running after the DDL ended
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self.engine.dispose()

    def _loop(self, operation: Callable[[int], str]) -> None:
        n = 0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                kind = operation(n)
            except DBAPIError as error:
                self.errors.append(str(error.orig).splitlines()[0])
            else:
                self.done.append((kind, started, time.monotonic() - started))
            n += 1

    def _search(self, n: int) -> str:
        found = prefilter(self.engine, self.queries[n % len(self.queries)], candidates=CANDIDATES, exact=False)
        # None: the model's index name was not there to count (a swap between its two statements)
        self.unindexed += found.index_scanned is False
        return "search"

    def _insert(self, n: int) -> str:
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "WITH p AS (INSERT INTO ynet.products (external_id, category, image_uri) "
                    "VALUES (:x, 'new', '/img/new.jpg') RETURNING id) "
                    "INSERT INTO ynet.embeddings (product_id, model_id, image_sha256, embedding) "
                    "SELECT id, :model, :sha, CAST(:v AS vector) FROM p"
                ),
                {"x": f"new-{n}", "model": self.model_id, "sha": "0" * 64, "v": vector_text(self.new_vector)},
            )
        return "insert"

    def during(self, started: float, ended: float) -> dict[str, int]:
        """Statements that ran while [started, ended] did, by kind."""
        counts = {"search": 0, "insert": 0}
        for kind, began, seconds in self.done:
            if began < ended and began + seconds > started:
                counts[kind] += 1
        return counts

    @property
    def slowest_s(self) -> float:
        return max(seconds for _, _, seconds in self.done)


def far_from(queries: np.ndarray) -> np.ndarray:
    """A unit vector at cosine about -1/sqrt(len(queries)) from each query: farther than any of its candidates."""
    vector = -queries.sum(axis=0)
    return (vector / np.linalg.norm(vector)).astype(np.float32)


@pytest.fixture
def queries(tagged: np.ndarray) -> np.ndarray:
    return unit_vectors(8, tagged.shape[1], seed=21)


@pytest.fixture
def long_search_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """A search list of 300 of the 3,000 rows: both graphs return the exact candidates, so results before
    and after a rebuild can be compared row for row (with the shipped 40 they differ a little)."""
    monkeypatch.setattr(policy, "EF_SEARCH", policy.Scaled(per_candidate=0, minimum=300))


@pytest.mark.usefixtures("long_search_list")
def test_a_rebuild_blocks_no_search_or_write_and_serves_the_same_results(
    tagged_engine: Engine, index_engine: Engine, tagged_url: URL, tagged: np.ndarray, queries: np.ndarray
) -> None:
    model = active(tagged_engine)
    before = search_all(index_engine, queries)
    said: list[str] = []
    with Traffic(tagged_url, model.id, queries, far_from(queries)) as traffic:
        started = time.monotonic()
        rebuilt = rebuild(tagged_engine, model, DENSER.m, DENSER.ef_construction, say=said.append)
        ended = time.monotonic()
    assert traffic.errors == [], "a search or insert waited on the rebuild's locks"
    assert traffic.slowest_s < SLOWEST_S
    during = traffic.during(started, ended)
    assert during["search"] > 0 and during["insert"] > 0, during
    assert search_all(index_engine, queries) == before
    assert before == [exact_top(tagged, np.arange(len(tagged)), q, CANDIDATES) for q in queries]
    name = f"embeddings_hnsw_model_{model.id}"
    assert (rebuilt.index, rebuilt.links, rebuilt.replaced, rebuilt.leftover) == (
        name,
        DENSER,
        Links(16, 64),
        None,
    )
    assert [(i.name, i.links, i.valid) for i in indexes(tagged_engine)] == [(name, DENSER, True)]
    building = f"model small@1: building ynet.{name}_rebuild with m 24, ef_construction 64, vector "
    assert said[0].startswith(building + "(m and ef_construction as asked, the rest chosen by size")
    assert said[-1].startswith(f"swapped: ynet.{name} ({DENSER}) serves model small@1; built in ")


@pytest.mark.usefixtures("long_search_list")
def test_a_conversion_to_halfvec_serves_every_search_from_an_index_and_the_same_rows(
    tagged_engine: Engine, index_engine: Engine, tagged_url: URL, queries: np.ndarray
) -> None:
    """The search asks in the element type of the index that serves: before the swap the old `vector` index,
    after it the new `halfvec` one, so no search reads every row (as one asking in the wrong type would)."""
    model = active(tagged_engine)
    before = search_all(index_engine, queries)
    in_sql = nearest_in_sql(index_engine, model, queries[0])
    with Traffic(tagged_url, model.id, queries, far_from(queries)) as traffic:
        rebuilt = rebuild(tagged_engine, model, element="halfvec")
    assert traffic.errors == [] and traffic.during(0, time.monotonic())["search"] > 0
    assert traffic.unindexed == 0, "a search during the conversion read every row"
    assert (rebuilt.replaced, rebuilt.links) == (Links(16, 64), Links(16, 64, "halfvec"))
    with tagged_engine.connect() as conn:
        assert serving_element(conn, model.id) == "halfvec"
    assert search_all(index_engine, queries) == before  # each answered by the halfvec index (search_all checks)
    assert nearest_in_sql(index_engine, model, queries[0]) == in_sql
    assert catalogue_status(tagged_engine).warnings == [], "a halfvec index covers the rule's vector choice"


def nearest_in_sql(engine: Engine, model: ModelRecord, query: np.ndarray) -> list[tuple[str, float]]:
    """`ynet.nearest_products`' rows, after checking that the model's own index answered it."""
    index = f"ynet.embeddings_hnsw_model_{model.id}"
    scans = text(f"SELECT pg_stat_get_xact_numscans('{index}'::regclass)")
    with engine.begin() as conn:
        before = conn.execute(scans).scalar_one()
        rows = conn.execute(
            text("SELECT external_id, distance FROM ynet.nearest_products(CAST(:q AS vector), 20)"),
            {"q": vector_text(query)},
        ).all()
        assert conn.execute(scans).scalar_one() > before, "the model's index answered ynet.nearest_products"
    return [(external_id, round(distance, 6)) for external_id, distance in rows]


def test_follow_rule_rebuilds_what_the_rule_now_builds_otherwise_once(tagged_engine: Engine) -> None:
    """A rule that makes 3,000 rows a large catalogue (indexed as halfvec) stands in for 300,000."""
    large = SizeRule(dense_from=2000, large=Links(24, 64, "halfvec"))
    said: list[str] = []
    rebuilt = follow_rule(tagged_engine, rule=large, say=said.append)
    assert [(r.links, r.replaced) for r in rebuilt] == [(large.large, Links(16, 64))]
    assert said[0].startswith("model small@1: building ynet.")
    assert catalogue_status(tagged_engine, rule=large).warnings == []
    assert follow_rule(tagged_engine, rule=large) == [], "nothing left to convert"


def test_db_upgrade_rebuilds_a_searched_models_missing_index(tagged_engine: Engine, cli: Callable[..., Result]) -> None:
    model = active(tagged_engine)
    with tagged_engine.begin() as conn:
        conn.execute(text(f'DROP INDEX ynet."embeddings_hnsw_model_{model.id}"'))
    skipped = cli("db", "upgrade", "--skip-index-rebuild")
    assert skipped.exit_code == 0 and "building" not in skipped.output and indexes(tagged_engine) == []
    result = cli("db", "upgrade")
    assert result.exit_code == 0, result.output
    assert "swapped: ynet.embeddings_hnsw_model_" in result.output
    assert [(i.links, i.valid) for i in indexes(tagged_engine)] == [(Links(16, 64), True)]


def test_the_same_traffic_fails_against_the_blocking_build(
    tagged_engine: Engine, tagged_url: URL, queries: np.ndarray
) -> None:
    """The check above can fail: ynet.build_model_index holds its locks until its transaction ends."""
    model = active(tagged_engine)
    with Traffic(tagged_url, model.id, queries, far_from(queries)) as traffic, tagged_engine.begin() as conn:
        conn.execute(text("SELECT ynet.build_model_index(:id)"), {"id": model.id})
        conn.execute(text("SELECT pg_sleep(1.5)"))
    assert any("lock timeout" in error for error in traffic.errors), traffic.errors


@pytest.fixture
def cli(tagged_url: URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    monkeypatch.setenv("YNET_DATABASE_URL", tagged_url.render_as_string(hide_password=False))
    monkeypatch.setenv("YNET_DATA_DIR", str(tmp_path / "data"))
    return lambda *args: CliRunner().invoke(main, list(args))


def leave_behind(engine: Engine, model_id: int, valid: bool) -> str:
    """What an interrupted rebuild leaves: a concurrent build that failed (invalid), or a built index."""
    name = f"embeddings_hnsw_model_{model_id}_rebuild"
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if valid:
            conn.execute(text(f'CREATE INDEX "{name}" ON ynet.embeddings (model_id)'))
        else:  # every row has the same model_id: the build fails, and its index stays, invalid
            with pytest.raises(DBAPIError, match="could not create unique index"):
                conn.execute(text(f'CREATE UNIQUE INDEX CONCURRENTLY "{name}" ON ynet.embeddings (model_id)'))
    return name


@pytest.mark.parametrize(
    ("valid", "what"),
    [(False, "an invalid index left by a failed or interrupted concurrent build"), (True, "a built index whose swap")],
)
def test_an_index_a_rebuild_left_behind_is_warned_about_dropped_and_said(
    tagged_engine: Engine, cli: Callable[..., Result], valid: bool, what: str
) -> None:
    model = active(tagged_engine)
    leftover = leave_behind(tagged_engine, model.id, valid)
    assert (leftover in " ".join(invalid_indexes(tagged_engine))) is not valid
    status = cli("status")
    assert status.exit_code == 0, status.output
    assert f"warning: model small@1: ynet.{leftover} was left by an interrupted rebuild" in status.output
    assert "`ynet-db index rebuild --model small@1` drops it" in status.output

    result = cli("index", "rebuild", "--m", "24", "--ef-construction", "64")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].startswith(f"dropped ynet.{leftover}: {what}")
    assert invalid_indexes(tagged_engine) == []
    assert [(i.name, i.links, i.valid) for i in indexes(tagged_engine)] == [
        (f"embeddings_hnsw_model_{model.id}", DENSER, True)
    ]
    assert "warning" not in cli("status").output


def test_a_swap_stopped_after_the_old_index_was_dropped_is_finished_first_not_dropped(tagged_engine: Engine) -> None:
    # The state between the swap's two statements: the model's own index dropped, the new one built under
    # the rebuild's name. Dropping it would leave the model with no index while the next build runs.
    model = active(tagged_engine)
    name = f"embeddings_hnsw_model_{model.id}"
    with tagged_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'ALTER INDEX ynet."{name}" RENAME TO "{name}_rebuild"'))
    assert [(i.name, i.valid) for i in indexes(tagged_engine)] == [(f"{name}_rebuild", True)]
    warnings = catalogue_status(tagged_engine).warnings
    assert any("`ynet-db index rebuild --model small@1` swaps it in and rebuilds the index" in w for w in warnings)
    said: list[str] = []
    during: list[list[tuple[str, bool]]] = []

    def say(line: str) -> None:
        said.append(line)
        if line.startswith("model small@1: building"):  # what searches have while the new index is built
            during.append([(i.name, i.valid) for i in indexes(tagged_engine)])

    rebuilt = rebuild(tagged_engine, model, DENSER.m, DENSER.ef_construction, say=say)
    assert said[0] == (
        f"renamed ynet.{name}_rebuild to ynet.{name}: a built index whose swap was interrupted after the old "
        "index was dropped; it serves searches while the rebuild runs"
    )
    assert during == [[(name, True)]], "the model kept an index to search through the build"
    assert rebuilt.leftover == "a built index whose swap was interrupted after the old index was dropped"
    assert [(i.name, i.links, i.valid) for i in indexes(tagged_engine)] == [(name, DENSER, True)]


def waiting_build(engine: Engine, said: list[str], timeout_s: float = 60.0) -> int:
    """The pid of the concurrent index build, once its progress says that it waits for the writers before it."""
    deadline = time.monotonic() + timeout_s
    while not any(line.startswith("  waiting for writers before build") for line in said):
        assert time.monotonic() < deadline, f"the build never said it waited for writers: {said}"
        time.sleep(0.05)
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pid FROM pg_stat_progress_create_index")).scalar_one())


@pytest.mark.usefixtures("long_search_list")
def test_a_failed_build_drops_its_invalid_index_and_the_old_index_serves_on(
    tagged_engine: Engine, index_engine: Engine, queries: np.ndarray
) -> None:
    """A build waiting for an open write transaction shows it, and is cancelled (as an operator would)."""
    model = active(tagged_engine)
    before = search_all(index_engine, queries)
    said: list[str] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            rebuild(tagged_engine, model, say=said.append, progress_every_s=0.05)
        except RebuildError as error:
            failed.append(error)

    writer = tagged_engine.connect()
    transaction = writer.begin()
    writer.execute(text("UPDATE ynet.embeddings SET image_sha256 = :s WHERE product_id = 1"), {"s": "1" * 64})
    writer_pid = writer.execute(text("SELECT pg_backend_pid()")).scalar_one()
    builder = threading.Thread(target=run)
    builder.start()
    try:
        pid = waiting_build(tagged_engine, said)
        with tagged_engine.connect() as conn:
            assert conn.execute(text("SELECT pg_cancel_backend(:pid)"), {"pid": pid}).scalar_one()
    finally:
        transaction.commit()  # the failed build's cleanup (DROP INDEX CONCURRENTLY) waits for it too
        writer.close()
        builder.join()
    assert len(failed) == 1
    assert str(failed[0]) == (
        f"building ynet.embeddings_hnsw_model_{model.id}_rebuild failed: canceling statement due to user request; "
        "its invalid index was dropped; the model's old index serves searches as before"
    )
    assert f"  waiting for writers before build (backend pid {writer_pid}'s transaction)" in said
    assert invalid_indexes(tagged_engine) == []
    assert [(i.links, i.valid) for i in indexes(tagged_engine)] == [(Links(16, 64), True)]
    assert search_all(index_engine, queries) == before


def test_one_rebuild_of_a_model_at_a_time(tagged_engine: Engine) -> None:
    model = active(tagged_engine)
    with tagged_engine.connect() as other:
        key = {"lock": REBUILD_LOCK, "id": model.id}
        other.execute(text("SELECT pg_advisory_lock(CAST(:lock AS integer), :id)"), key)
        pid = other.execute(text("SELECT pg_backend_pid()")).scalar_one()
        assert catalogue_status(tagged_engine).warnings == [
            "model small@1: its index is being rebuilt now (`ynet-db index rebuild`)"
        ]
        with pytest.raises(
            RebuildError, match=rf"another rebuild of model small@1's index is running \(backend pid {pid}\)"
        ):
            rebuild(tagged_engine, model)
        other.execute(text("SELECT pg_advisory_unlock(CAST(:lock AS integer), :id)"), key)
        other.commit()
    assert [i.links for i in indexes(tagged_engine)] == [Links(16, 64)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--m", "1"), "Invalid value for '--m': 1 is not in the range 2<=x<=100."),
        (("--ef-construction", "2000"), "Invalid value for '--ef-construction': 2000 is not in the range 4<=x<=1000."),
        (
            ("--m", "40", "--ef-construction", "50"),
            "Invalid value for '--m' / '--ef-construction': "
            "ef_construction must be between 2 * m (80) and 1000, got 50",
        ),
        # 3,000 rows: the rule's ef_construction (64) is less than 2 * 40
        (("--m", "40"), "ef_construction must be between 2 * m (80) and 1000, got 64"),
    ],
)
def test_bad_links_are_refused_with_their_bounds_and_change_nothing(
    tagged_engine: Engine, cli: Callable[..., Result], args: tuple[str, ...], message: str
) -> None:
    result = cli("index", "rebuild", *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert [(i.links, i.valid) for i in indexes(tagged_engine)] == [(Links(16, 64), True)]


def test_the_command_names_the_model_it_cannot_find(tagged_engine: Engine, cli: Callable[..., Result]) -> None:
    result = cli("index", "rebuild", "--model", "nope")
    assert result.exit_code == 1
    assert "no model named or versioned 'nope'; see `ynet-db model list`" in result.output
    with tagged_engine.begin() as conn:
        conn.execute(text("UPDATE ynet.models SET state = 'retired'"))
    assert "no model is active" in cli("index", "rebuild").output
    result = cli("index", "rebuild", "--model", "small@1")
    assert result.exit_code == 0, result.output
    assert "with m 16, ef_construction 64, vector (chosen by size for 3,000 embedded rows)" in result.output


def test_status_warns_with_the_command_when_the_catalogue_has_outgrown_its_index(tagged_engine: Engine) -> None:
    """A rule that makes 3,000 rows a large catalogue stands in for a million rows."""
    small = SizeRule(dense_from=2000, large=DENSER)
    assert catalogue_status(tagged_engine).warnings == []
    status = catalogue_status(tagged_engine, rule=small)
    assert status.warnings == [
        "model small@1: its 3,000 embedded rows have outgrown its index (m 16, ef_construction 64, vector), the size "
        "rule chooses m 24, ef_construction 64, vector: "
        "`ynet-db index rebuild --model small@1 --m 24 --ef-construction 64 --element vector`"
    ]
    assert status.models[0].index == Links(16, 64)
    assert "model small (small@1, active): 3000/3000 embedded (100%); index m 16, ef_construction 64, vector" in str(
        status
    )
    rebuilt = rebuild(tagged_engine, active(tagged_engine), rule=small)
    assert (rebuilt.links, rebuilt.rows) == (DENSER, 3000)
    after = catalogue_status(tagged_engine, rule=small)
    assert (after.warnings, after.models[0].index) == ([], DENSER)


def test_status_warns_when_a_searched_model_has_no_valid_index(tagged_engine: Engine) -> None:
    model = active(tagged_engine)
    with tagged_engine.begin() as conn:
        conn.execute(text(f'DROP INDEX ynet."embeddings_hnsw_model_{model.id}"'))
    assert catalogue_status(tagged_engine).warnings == [
        "model small@1 has no valid HNSW index, so searches read every row: `ynet-db index rebuild --model small@1`"
    ]
    rebuilt = rebuild(tagged_engine, model)
    assert (rebuilt.replaced, rebuilt.links) == (None, Links(16, 64))
    assert catalogue_status(tagged_engine).warnings == []


# -- the SQL side: one rule, one definition -----------------------------------------------------------


def installed_source(conn: Connection, signature: str) -> str:
    return str(conn.execute(text(f"SELECT prosrc FROM pg_proc WHERE oid = '{signature}'::regprocedure")).scalar_one())


def test_the_installed_functions_are_the_rules_rendering(engine: Engine) -> None:
    with engine.connect() as conn:
        assert installed_source(conn, LINKS_SIGNATURE) == links_body(BY_SIZE)
        assert installed_source(conn, DEFINITION_SIGNATURE) == definition_body()
        rows = [0, 1, BY_SIZE.dense_from - 1, BY_SIZE.dense_from, 10**9]
        in_sql = conn.execute(
            text(
                "SELECT l.m, l.ef_construction, l.element "
                "FROM unnest(CAST(:rows AS bigint[])) r, ynet.model_index_links(r) l"
            ),
            {"rows": rows},
        ).all()
    assert [Links(*row) for row in in_sql] == [BY_SIZE.links(r) for r in rows]


def test_build_model_index_chooses_links_by_size_unless_asked(engine: Engine) -> None:
    model_id = catalogue(engine, "few@1", unit_vectors(300, 8, seed=4))
    with engine.begin() as conn:
        conn.execute(text(index_functions(SizeRule(dense_from=300, large=DENSER))))  # 300 rows are many
        conn.execute(text("SELECT ynet.build_model_index(:id)"), {"id": model_id})
    assert [i.links for i in indexes(engine)] == [DENSER]
    with engine.begin() as conn:
        conn.execute(text("SELECT ynet.build_model_index(:id, m => 20)"), {"id": model_id})
    assert [i.links for i in indexes(engine)] == [Links(20, DENSER.ef_construction)]


@pytest.mark.parametrize(("m", "ef_construction"), [(1, 64), (101, 300), (40, 50), (16, 1001)])
def test_sql_and_python_refuse_the_same_links_in_the_same_words(engine: Engine, m: int, ef_construction: int) -> None:
    problem = links_problem(m, ef_construction)
    assert problem
    with pytest.raises(index_links.LinksError, match=re.escape(problem)):
        Links(m, ef_construction)
    model_id = add_model(engine, "l@1", 4)
    with pytest.raises(DBAPIError) as raised, engine.begin() as conn:
        conn.execute(
            text("SELECT ynet.model_index_definition(:id, :m, :ef)"), {"id": model_id, "m": m, "ef": ef_construction}
        )
    assert str(raised.value.orig).splitlines()[0] == problem


def test_sql_and_python_refuse_the_same_element_type_and_build_a_halfvec_index_on_request(engine: Engine) -> None:
    problem = links_problem(16, 64, "bit")
    assert problem == "the element type must be one of vector, halfvec, got bit"
    model_id = catalogue(engine, "few@1", unit_vectors(300, 8, seed=4))
    with pytest.raises(DBAPIError) as raised, engine.begin() as conn:
        conn.execute(text("SELECT ynet.build_model_index(:id, element => 'bit')"), {"id": model_id})
    assert str(raised.value.orig).splitlines()[0] == problem
    with engine.begin() as conn:
        conn.execute(text("SELECT ynet.build_model_index(:id, element => 'halfvec')"), {"id": model_id})
        assert serving_element(conn, model_id) == "halfvec"
    assert [i.links for i in indexes(engine)] == [Links(16, 64, "halfvec")]


def test_one_revision_down_restores_0006s_build_model_index(empty_engine: Engine) -> None:
    arguments = (
        "SELECT pg_get_function_arguments(oid) FROM pg_proc "
        "WHERE proname = 'build_model_index' AND pronamespace = 'ynet'::regnamespace"
    )
    definition = f"SELECT to_regprocedure('{DEFINITION_SIGNATURE}')"
    migrate.upgrade(empty_engine)
    migrate.downgrade(empty_engine, "0011")
    with empty_engine.connect() as conn:
        assert "m integer DEFAULT 16, ef_construction integer DEFAULT 64" in conn.execute(text(arguments)).scalar_one()
        assert conn.execute(text(definition)).scalar_one() is None
    migrate.upgrade(empty_engine)
    with empty_engine.connect() as conn:
        assert "m integer DEFAULT NULL" in conn.execute(text(arguments)).scalar_one()
        assert conn.execute(text(definition)).scalar_one() is not None


@pytest.fixture(autouse=True)
def _no_leftover_threads() -> Iterator[None]:
    yield
    assert not [t for t in threading.enumerate() if t.name == "index-progress"], "a progress watcher outlived its build"


def test_one_revision_down_rebuilds_a_halfvec_index_as_vector_and_restores_0012s_functions(
    tagged_engine: Engine,
) -> None:
    model = active(tagged_engine)
    rebuild(tagged_engine, model, element="halfvec")
    migrate.downgrade(tagged_engine, "0014")
    assert [(i.links, i.valid) for i in indexes(tagged_engine)] == [(Links(16, 64), True)]
    with tagged_engine.connect() as conn:
        assert conn.execute(text(f"SELECT to_regprocedure('{DEFINITION_SIGNATURE}')")).scalar_one() is None
        old = "ynet.model_index_definition(integer, integer, integer, text, boolean)"
        assert conn.execute(text(f"SELECT to_regprocedure('{old}')")).scalar_one() is not None
    migrate.upgrade(tagged_engine)
    with tagged_engine.connect() as conn:
        assert installed_source(conn, DEFINITION_SIGNATURE) == definition_body()
