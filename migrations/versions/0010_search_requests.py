"""Search from SQL alone: a request table, a results table, `ynet.search_wait`, and a client role's rights.

A backend with only a database driver cannot encode a photo, so it hands the photo to a search worker
through the database:

    INSERT INTO ynet.search_requests (image, k, filters) VALUES ($1, 10, '{"category": "dress"}') RETURNING id;
    SELECT * FROM ynet.search_wait(42, 5);   -- after the INSERT has committed

- `ynet.search_requests` holds the photo (`image` bytea, or `image_url`, http(s) only: a client must not name a
  file on the worker's machine), `k` (1 to 200, `ynet_db.search.filters.MAX_K`) and `filters` (jsonb in the filter
  language of the Python API, checked by the worker with the same messages). A worker (`ynet-db
  search-worker`, `ynet_db/search/requests/`) claims it under a lease, answers into `ynet.search_results`,
  and marks it `done` or `failed` with the error text; a request nobody answered by `expires_at` is
  `expired`; finished requests are deleted after a retention. `attempts` counts claims and stops at
  `max_attempts`, so a photo that kills its workers is failed, not retried forever; `answers` counts the
  writes of an answer (more than 1 would be a duplicate: the tests assert exactly 1).
- Inserts wake workers on the channel `ynet_search_requests`; an answer, a failure or an expiry is announced
  on the request's own channel `ynet_search_<id>` (payload: the state) for clients that can LISTEN.
- `ynet.search_wait(id, timeout)` waits in short `pg_sleep` steps (PL/pgSQL cannot LISTEN), reading the
  request afresh each step (a VOLATILE function takes a new snapshot per statement under READ COMMITTED),
  and returns the result rows, or raises: YN001 the request failed (the worker's error text), YN002 it
  expired unanswered, YN003 not answered within the timeout (wait again), P0002 no such request (or not
  the caller's).
- Rights: `ynet.grant_search_client(role)` lets a role insert requests (these four columns only) and read
  its own requests and results; row-level security keeps every other role's rows from it. The role reads
  no catalogue table. Like 0008's attach functions, it is the owner's alone (EXECUTE revoked from PUBLIC).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

S = "ynet"
TS = postgresql.TIMESTAMP(timezone=True)
STATES = "('pending', 'running', 'done', 'failed', 'expired')"
MAX_K = 200  # ynet_db.search.filters.MAX_K
MAX_IMAGE_BYTES = 32 * 1024 * 1024  # ynet_db.images.decode.DEFAULT_LIMITS.max_bytes
MAX_URL_LENGTH = 4096  # ynet_db.images.uri.MAX_URI_LENGTH
MAX_FILTER_BYTES = 65536


def upgrade() -> None:
    _create_requests()
    _create_results()
    op.execute(NOTIFY)
    op.execute(SEARCH_WAIT)
    op.execute(ROW_SECURITY)
    op.execute(GRANT_SEARCH_CLIENT)


def _create_requests() -> None:
    op.create_table(
        "search_requests",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("image", postgresql.BYTEA, comment="The query photo's bytes (or give image_url)."),
        sa.Column("image_url", sa.Text, comment="An http(s) URL of the query photo, fetched under the fetch policy."),
        sa.Column("k", sa.Integer, nullable=False, server_default="20"),
        sa.Column(
            "filters", postgresql.JSONB, comment='The Python API\'s filter language, e.g. {"category": "dress"}.'
        ),
        sa.Column("state", sa.Text, nullable=False, server_default="pending"),
        sa.Column("error", sa.Text, comment="Why the request failed: the answer of a failed request."),
        sa.Column("requested_by", sa.Text, nullable=False, server_default=sa.text("CURRENT_USER")),
        sa.Column("created_at", TS, nullable=False, server_default=sa.text("now()")),
        sa.Column("expires_at", TS, nullable=False, server_default=sa.text("(now() + '00:01:00'::interval)")),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer, nullable=False, server_default="3"),
        sa.Column("claimed_by", sa.Text),
        sa.Column("lease_expires_at", TS),
        sa.Column("finished_at", TS),
        sa.Column(
            "answers",
            sa.Integer,
            nullable=False,
            server_default="0",
            comment="times an answer was written; more than 1 is a duplicate",
        ),
        sa.Column("model_version", sa.Text),
        sa.Column("path", sa.Text, comment="How the prefilter ran: 'ann' or 'exact'."),
        sa.Column("short", sa.Boolean, comment="Fewer candidates than asked came back."),
        sa.Column("reranked", sa.Boolean),
        sa.PrimaryKeyConstraint("id", name="pk_search_requests"),
        sa.CheckConstraint(f"state IN {STATES}", name=op.f("ck_search_requests_state")),
        sa.CheckConstraint("(image IS NULL) <> (image_url IS NULL)", name=op.f("ck_search_requests_one_image")),
        sa.CheckConstraint(f"k BETWEEN 1 AND {MAX_K}", name=op.f("ck_search_requests_k")),
        sa.CheckConstraint(f"octet_length(image) <= {MAX_IMAGE_BYTES}", name=op.f("ck_search_requests_image_size")),
        sa.CheckConstraint(
            f"image_url ~* '^https?://' AND length(image_url) <= {MAX_URL_LENGTH}",
            name=op.f("ck_search_requests_image_url"),
        ),
        sa.CheckConstraint(
            f"octet_length(filters::text) <= {MAX_FILTER_BYTES}", name=op.f("ck_search_requests_filters_size")
        ),
        schema=S,
    )
    # The claim and the expiry read only open requests.
    op.create_index(
        "ix_search_requests_open",
        "search_requests",
        ["id"],
        schema=S,
        postgresql_where=sa.text("state IN ('pending', 'running')"),
    )
    op.create_index("ix_search_requests_finished_at", "search_requests", ["finished_at"], schema=S)


def _create_results() -> None:
    # A snapshot of what the search returned, not a reference into the catalogue: no foreign key to
    # products, so deleting a product never changes an answer already given.
    op.create_table(
        "search_results",
        sa.Column("request_id", sa.BigInteger, nullable=False),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("product_id", sa.Integer, nullable=False),
        sa.Column("external_id", sa.Text, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("category", sa.Text, nullable=False),
        sa.Column("distance", sa.Double(), nullable=False, comment="The prefilter's cosine distance."),
        sa.Column("rerank_score", sa.Double(), comment="CtxYNet's score; NULL when not re-ranked."),
        sa.PrimaryKeyConstraint("request_id", "rank", name="pk_search_results"),
        sa.ForeignKeyConstraint(
            ["request_id"],
            [f"{S}.search_requests.id"],
            name="fk_search_results_request_id_search_requests",
            ondelete="CASCADE",
        ),
        schema=S,
    )


NOTIFY = """
CREATE FUNCTION ynet.search_request_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- A constant payload: PostgreSQL folds repeats into one wake-up per transaction.
    PERFORM pg_notify('ynet_search_requests', '');
    RETURN NULL;
END $$;
CREATE TRIGGER search_requests_wake_workers AFTER INSERT ON ynet.search_requests
    FOR EACH STATEMENT EXECUTE FUNCTION ynet.search_request_inserted();

CREATE FUNCTION ynet.search_request_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ynet_search_' || NEW.id, NEW.state);
    RETURN NULL;
END $$;
CREATE TRIGGER search_requests_announce AFTER UPDATE OF state ON ynet.search_requests
    FOR EACH ROW WHEN (NEW.state IN ('done', 'failed', 'expired') AND OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION ynet.search_request_finished();
"""

SEARCH_WAIT = """
CREATE FUNCTION ynet.search_wait(request bigint, timeout double precision DEFAULT 30)
RETURNS TABLE (
    rank integer,
    product_id integer,
    external_id text,
    title text,
    category text,
    distance double precision,
    rerank_score double precision
)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    deadline timestamptz;
    pause double precision := 0.005;
    r record;
BEGIN
    IF timeout IS NULL OR timeout < 0 OR timeout > 3600 THEN
        RAISE EXCEPTION 'search_wait: timeout must be between 0 and 3600 seconds, got %',
            coalesce(timeout::text, 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'search_wait needs READ COMMITTED isolation (this transaction is %): it must see the '
            'worker''s answer commit while it waits', current_setting('transaction_isolation')
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
    deadline := clock_timestamp() + make_interval(secs => timeout);
    LOOP
        SELECT q.state, q.error, q.expires_at, q.xmin INTO r FROM ynet.search_requests q WHERE q.id = request;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'no search request %', request USING ERRCODE = 'no_data_found';
        END IF;
        IF r.state = 'done' THEN
            RETURN QUERY SELECT s.rank, s.product_id, s.external_id, s.title, s.category, s.distance, s.rerank_score
                           FROM ynet.search_results s WHERE s.request_id = request ORDER BY s.rank;
            RETURN;
        END IF;
        IF r.state = 'failed' THEN
            RAISE EXCEPTION 'search request % failed: %', request, r.error USING ERRCODE = 'YN001';
        END IF;
        IF r.state = 'expired' OR (r.state = 'pending' AND r.expires_at <= clock_timestamp()) THEN
            RAISE EXCEPTION 'search request % expired unanswered at %', request, r.expires_at USING ERRCODE = 'YN002';
        END IF;
        IF r.xmin = xid(pg_current_xact_id_if_assigned()) THEN
            RAISE EXCEPTION 'search request % is not committed yet: commit the INSERT, then wait', request
                USING ERRCODE = 'invalid_transaction_state';
        END IF;
        IF clock_timestamp() >= deadline THEN
            RAISE EXCEPTION 'search request % was not answered within % s (it is %); wait again', request, timeout,
                r.state USING ERRCODE = 'YN003';
        END IF;
        PERFORM pg_sleep(least(pause, greatest(extract(epoch FROM deadline - clock_timestamp()), 0)));
        pause := least(pause * 2, 0.05);
    END LOOP;
END $$;
COMMENT ON FUNCTION ynet.search_wait(bigint, double precision) IS
    'The rows of search request `request` once a worker answered it, waiting up to `timeout` seconds. Raises '
    'YN001 (failed: the error is the answer), YN002 (expired unanswered), YN003 (not yet answered: wait again).';
"""

# The owner (the role that migrates, and that workers connect as) bypasses these policies.
ROW_SECURITY = """
ALTER TABLE ynet.search_requests ENABLE ROW LEVEL SECURITY;
CREATE POLICY search_requests_own ON ynet.search_requests
    USING (requested_by = current_user) WITH CHECK (requested_by = current_user);
ALTER TABLE ynet.search_results ENABLE ROW LEVEL SECURITY;
CREATE POLICY search_results_own ON ynet.search_results
    USING (EXISTS (SELECT 1 FROM ynet.search_requests q WHERE q.id = request_id));
"""

GRANT_SEARCH_CLIENT = """
CREATE FUNCTION ynet.grant_search_client(client regrole) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA ynet TO %s', client);
    EXECUTE format('GRANT SELECT, INSERT (image, image_url, k, filters) ON ynet.search_requests TO %s', client);
    EXECUTE format('GRANT SELECT ON ynet.search_results TO %s', client);
    EXECUTE format('GRANT EXECUTE ON FUNCTION ynet.search_wait(bigint, double precision) TO %s', client);
END $$;
REVOKE EXECUTE ON FUNCTION ynet.grant_search_client(regrole) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION ynet.search_wait(bigint, double precision) FROM PUBLIC;
COMMENT ON FUNCTION ynet.grant_search_client(regrole) IS
    'Lets a role search from SQL: insert requests (image, image_url, k, filters), read its own requests and '
    'results, call ynet.search_wait; nothing else in ynet. The owner''s alone.';
"""


def downgrade() -> None:
    op.drop_table("search_results", schema=S)
    op.drop_table("search_requests", schema=S)
    for function in (
        "grant_search_client(regrole)",
        "search_wait(bigint, double precision)",
        "search_request_finished()",
        "search_request_inserted()",
    ):
        op.execute(f"DROP FUNCTION {S}.{function}")
