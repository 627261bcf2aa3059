"""The queue in PostgreSQL: leases, idempotent completion, backoff, dead letters, sweep and re-drive."""

from __future__ import annotations

from datetime import timedelta
from threading import Barrier, Thread

import psycopg
import pytest
from sqlalchemy import Engine, func, select, text, update
from sqlalchemy.orm import Session

from ynet_db.db.server import libpq_dsn
from ynet_db.db.tables import Embedding, EmbeddingJob, Model, Product
from ynet_db.ingestion import jobs


@pytest.fixture
def catalogue(engine: Engine) -> Engine:
    with Session(engine) as session:
        session.add(Model(name="m", version="m@1", embedding_dim=3, weights_sha256="0" * 64, state="active"))
        session.commit()
        session.add_all(
            Product(external_id=f"p{i}", category="dress", tags=["color:red"], image_uri=f"/img/{i}.jpg")
            for i in range(10)
        )
        session.commit()
    return engine


def _states(engine: Engine) -> dict[str, int]:
    with Session(engine) as session:
        return {s: n for s, n in session.execute(select(EmbeddingJob.state, func.count()).group_by(EmbeddingJob.state))}


def _embeddings(engine: Engine) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(Embedding)) or 0


def test_claims_take_each_job_once(catalogue: Engine) -> None:
    first = jobs.claim(catalogue, "w1", 4)
    second = jobs.claim(catalogue, "w2", 100)
    assert len(first) == 4 and len(second) == 6
    assert not {j.id for j in first} & {j.id for j in second}
    assert first[0].tags == ["color:red"] and first[0].attempts == 1
    assert jobs.claim(catalogue, "w3", 10) == []


def test_concurrent_claimers_never_share_a_job(catalogue: Engine) -> None:
    barrier, claimed = Barrier(4), []

    def worker(name: str) -> None:
        barrier.wait()
        while batch := jobs.claim(catalogue, name, 1):
            claimed.extend(job.id for job in batch)

    threads = [Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == list(range(1, 11))


def test_complete_writes_one_embedding_and_a_second_delivery_changes_nothing(catalogue: Engine) -> None:
    (job,) = jobs.claim(catalogue, "w1", 1)
    assert jobs.complete(catalogue, job, "w1", [1.0, 0.0, 0.0], "a" * 64)
    assert not jobs.complete(catalogue, job, "w1", [0.0, 1.0, 0.0], "b" * 64)
    with Session(catalogue) as session:
        stored = session.scalars(select(Embedding)).one()
    assert (stored.product_id, list(stored.embedding), stored.image_sha256) == (job.product_id, [1, 0, 0], "a" * 64)
    assert _states(catalogue)["done"] == 1


def test_a_batch_completes_in_one_call_and_only_its_current_jobs_are_done(catalogue: Engine) -> None:
    batch = jobs.claim(catalogue, "w1", 3)
    with Session(catalogue) as session:  # the middle product changes image while its batch is encoded
        session.execute(update(Product).where(Product.id == batch[1].product_id).values(image_uri="/img/new.jpg"))
        session.commit()
    vectors = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    done = jobs.complete_batch(catalogue, "w1", [jobs.Finished(j, v, "a" * 64) for j, v in zip(batch, vectors)])
    assert done == {batch[0].id, batch[2].id}
    with Session(catalogue) as session:
        stored = dict(session.execute(select(Embedding.product_id, Embedding.embedding)).all())
        overtaken = session.get(EmbeddingJob, batch[1].id)
    assert {k: list(v) for k, v in stored.items()} == {batch[0].product_id: [1, 0, 0], batch[2].product_id: [0, 0, 1]}
    assert overtaken is not None and overtaken.state == "superseded"
    assert jobs.complete_batch(catalogue, "w1", [jobs.Finished(batch[0], vectors[1], "b" * 64)]) == set()


def test_a_claim_of_first_attempts_skips_retried_jobs(catalogue: Engine) -> None:
    (failing,) = jobs.claim(catalogue, "w1", 1)
    assert jobs.fail(catalogue, failing, "w1", "fetch: timed out") == "retry"
    with catalogue.begin() as conn:
        conn.execute(text("UPDATE ynet.embedding_jobs SET run_after = now() - interval '1 hour'"))
    fresh = jobs.claim(catalogue, "w1", 100, first_attempts_only=True)
    assert len(fresh) == 9 and failing.id not in {job.id for job in fresh}
    assert [job.id for job in jobs.claim(catalogue, "w2", 100)] == [failing.id]


def test_a_job_overtaken_by_a_new_image_writes_nothing(catalogue: Engine) -> None:
    (job,) = jobs.claim(catalogue, "w1", 1)
    with Session(catalogue) as session:
        session.execute(update(Product).where(Product.id == job.product_id).values(image_uri="/img/new.jpg"))
        session.commit()
    assert not jobs.complete(catalogue, job, "w1", [1.0, 0.0, 0.0], "a" * 64)
    assert _embeddings(catalogue) == 0
    assert _states(catalogue) == {"pending": 10, "superseded": 1}


def test_failures_back_off_then_end_dead(catalogue: Engine) -> None:
    with Session(catalogue) as session:
        session.execute(update(EmbeddingJob).values(max_attempts=2))
        session.commit()
    (job,) = jobs.claim(catalogue, "w1", 1)
    assert jobs.fail(catalogue, job, "w1", "connection reset") == "retry"
    assert job.id not in [j.id for j in jobs.claim(catalogue, "w2", 100)], "not before its backoff"
    with Session(catalogue) as session:
        session.execute(update(EmbeddingJob).where(EmbeddingJob.id == job.id).values(run_after=func.now()))
        session.commit()
    (again,) = jobs.claim(catalogue, "w3", 1)
    assert (again.id, again.attempts) == (job.id, 2)
    assert jobs.fail(catalogue, again, "w3", "connection reset") == "dead"
    with Session(catalogue) as session:
        dead = session.get(EmbeddingJob, job.id)
    assert dead is not None and (dead.state, dead.last_error) == ("dead", "connection reset")


def test_a_permanent_failure_is_dead_at_once(catalogue: Engine) -> None:
    (job,) = jobs.claim(catalogue, "w1", 1)
    assert jobs.fail(catalogue, job, "w1", "not an image", permanent=True) == "dead"


def test_sweep_returns_expired_leases_and_redrive_revives_the_dead(catalogue: Engine) -> None:
    claimed = jobs.claim(catalogue, "w1", 3, lease=timedelta(seconds=-1))
    with Session(catalogue) as session:
        session.execute(update(EmbeddingJob).where(EmbeddingJob.id == claimed[0].id).values(max_attempts=1))
        session.commit()
    assert jobs.sweep(catalogue) == 3
    assert _states(catalogue) == {"pending": 7, "retry": 2, "dead": 1}
    assert jobs.redrive(catalogue) == 1
    assert _states(catalogue) == {"pending": 8, "retry": 2}


def test_late_completion_by_a_worker_whose_lease_was_swept_changes_nothing(catalogue: Engine) -> None:
    (job,) = jobs.claim(catalogue, "slow", 1, lease=timedelta(seconds=-1))
    jobs.sweep(catalogue)
    with Session(catalogue) as session:
        session.execute(text("UPDATE ynet.embedding_jobs SET run_after = now()"))
        session.commit()
    (again,) = jobs.claim(catalogue, "fast", 1)
    assert again.id == job.id
    assert not jobs.complete(catalogue, job, "slow", [1.0, 0.0, 0.0], "a" * 64)
    assert jobs.complete(catalogue, again, "fast", [0.0, 1.0, 0.0], "a" * 64)
    assert _embeddings(catalogue) == 1


def test_backoff_grows_and_is_capped() -> None:
    import random

    rng = random.Random(0)
    delays = [jobs.backoff(n, rng) for n in (1, 2, 3, 30)]
    assert timedelta(seconds=1) <= delays[0] <= timedelta(seconds=2)
    assert timedelta(seconds=2) <= delays[1] <= timedelta(seconds=4)
    assert timedelta(seconds=4) <= delays[2] <= timedelta(seconds=8)
    assert delays[3] <= jobs.BACKOFF_CAP


def _extended(engine: Engine) -> dict[int, bool]:
    """Job id -> whether its lease runs more than 30 minutes from now (a renewal by an hour)."""
    with Session(engine) as session:
        return dict(
            session.execute(
                select(EmbeddingJob.id, EmbeddingJob.lease_expires_at > func.now() + timedelta(minutes=30))
            ).all()
        )


def test_renew_extends_only_the_named_live_leases_of_that_worker(catalogue: Engine) -> None:
    in_hand = jobs.claim(catalogue, "w1", 2, lease=timedelta(seconds=30))
    abandoned = jobs.claim(catalogue, "w1", 1, lease=timedelta(seconds=30))  # a task that died held it
    others = jobs.claim(catalogue, "w2", 2, lease=timedelta(seconds=30))
    expired = jobs.claim(catalogue, "w1", 1, lease=timedelta(seconds=-1))
    named = [job.id for job in in_hand + others + expired]
    assert jobs.renew(catalogue, "w1", named, timedelta(hours=1)) == len(in_hand)
    leases = _extended(catalogue)
    assert all(leases[job.id] for job in in_hand)
    assert not leases[abandoned[0].id], "a job no live task holds is left to its lease"
    assert not leases[expired[0].id], "an expired lease may already be swept: it stays expired"
    assert sum(bool(extended) for extended in leases.values()) == len(in_hand), "other leases are untouched"


def test_a_released_job_goes_back_to_the_queue_with_its_attempt_given_back(catalogue: Engine) -> None:
    first, retried = jobs.claim(catalogue, "w1", 2)
    jobs.fail(catalogue, retried, "w1", "fetch: timed out")
    with Session(catalogue) as session:
        past = func.now() - timedelta(hours=1)  # its backoff over, and ahead of the pending jobs
        session.execute(update(EmbeddingJob).where(EmbeddingJob.id == retried.id).values(run_after=past))
        session.commit()
    (again,) = jobs.claim(catalogue, "w1", 1)
    assert (again.id, again.attempts) == (retried.id, 2)
    assert jobs.release(catalogue, "w2", [first.id]) == 0, "only the worker holding a job may release it"
    assert jobs.release(catalogue, "w1", [first.id, again.id]) == 2
    with Session(catalogue) as session:
        rows = session.execute(
            select(EmbeddingJob.id, EmbeddingJob.state, EmbeddingJob.attempts, EmbeddingJob.last_error).where(
                EmbeddingJob.id.in_([first.id, again.id])
            )
        ).all()
    assert sorted(rows) == [(first.id, "pending", 0, None), (again.id, "retry", 1, "fetch: timed out")]
    assert {job.id for job in jobs.claim(catalogue, "w3", 10)} >= {first.id, again.id}


def test_each_completion_is_counted_and_a_late_one_is_not(catalogue: Engine) -> None:
    batch = jobs.claim(catalogue, "w1", 2)
    finished = [jobs.Finished(job, [1.0, 0.0, 0.0], "a" * 64) for job in batch]
    assert jobs.complete_batch(catalogue, "w1", finished) == {job.id for job in batch}
    assert jobs.complete_batch(catalogue, "w1", finished) == set()  # a second delivery of the same write
    with Session(catalogue) as session:
        counts = dict(session.execute(select(EmbeddingJob.id, EmbeddingJob.completions)).all())
    assert [counts.pop(job.id) for job in batch] == [1, 1]
    assert set(counts.values()) == {0}


def test_the_channel_is_the_one_the_trigger_notifies(catalogue: Engine) -> None:
    """Migration 0001's trigger names the channel as a literal (a migration is history): it must be `CHANNEL`."""
    with psycopg.connect(libpq_dsn(catalogue.url), autocommit=True) as listener:
        listener.execute(f"LISTEN {jobs.CHANNEL}")
        with Session(catalogue) as session:
            session.add(Product(external_id="new", category="dress", image_uri="/img/new.jpg"))
            session.commit()
        notices = list(listener.notifies(timeout=5, stop_after=1))
    assert [n.channel for n in notices] == [jobs.CHANNEL]


def test_returned_work_wakes_the_same_channel(catalogue: Engine) -> None:
    (job,) = jobs.claim(catalogue, "w1", 1)
    with psycopg.connect(libpq_dsn(catalogue.url), autocommit=True) as listener:
        listener.execute(f"LISTEN {jobs.CHANNEL}")
        assert jobs.release(catalogue, "w1", [job.id]) == 1
        notices = list(listener.notifies(timeout=5, stop_after=1))
    assert [n.channel for n in notices] == [jobs.CHANNEL]


def test_ready_work_is_counted_per_model_and_excludes_running_and_backed_off_jobs(catalogue: Engine) -> None:
    claimed = jobs.claim(catalogue, "w1", 3)
    jobs.fail(catalogue, claimed[0], "w1", "HTTP 503")  # retry, but only after its backoff
    assert jobs.ready_by_model(catalogue) == [(1, 7)]
    jobs.sweep(catalogue)  # nothing expired: the count stays
    assert jobs.ready_by_model(catalogue) == [(1, 7)]


def test_a_backfill_queues_only_what_a_model_lacks_and_supersede_drops_only_queued_work(catalogue: Engine) -> None:
    with Session(catalogue) as session:
        session.add(Model(name="m", version="m@2", embedding_dim=3, weights_sha256="0" * 64))
        session.commit()
    with catalogue.begin() as conn:
        assert jobs.backfill(conn, 2) == 10
        assert jobs.backfill(conn, 2) == 0, "already queued"
    (running,) = jobs.claim(catalogue, "w1", 1, model_id=2)
    with catalogue.begin() as conn:
        assert jobs.supersede(conn, [2]) == 9, "the running job is left to its worker"
        assert jobs.backlog(conn, [1, 2]) == {1: jobs.Backlog(open=10, dead=0), 2: jobs.Backlog(open=1, dead=0)}
    assert jobs.fail(catalogue, running, "w1", "cannot decode", permanent=True) == "dead"
    with catalogue.connect() as conn:
        assert jobs.backlog(conn, [2]) == {2: jobs.Backlog(open=0, dead=1)}
    with catalogue.begin() as conn:
        assert jobs.backfill(conn, 2) == 10, "a dead or superseded job is no longer queued work"
        assert jobs.backlog(conn, [2]) == {2: jobs.Backlog(open=10, dead=0)}, "a re-queued product is not dead"


def test_the_operator_views_read_states_throughput_and_errors(catalogue: Engine) -> None:
    first, second = jobs.claim(catalogue, "w1", 2)
    assert jobs.complete(catalogue, first, "w1", [1.0, 0.0, 0.0], "a" * 64)
    jobs.fail(catalogue, second, "w1", "HTTP 404", permanent=True)
    with catalogue.connect() as conn:
        assert jobs.counts_by_state(conn) == {"pending": 8, "done": 1, "dead": 1}
        assert jobs.done_within(conn, timedelta(minutes=1)) == 1
        assert jobs.recent_errors(conn, 5) == [("p1", "dead", 1, "HTTP 404")]
        (row,) = jobs.recent(conn, state="dead", model_id=1, limit=5)
    assert row[:7] == (second.id, "import", "p1", "m@1", "dead", 1, 5)
    assert row[8] == "HTTP 404"
