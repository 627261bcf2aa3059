"""Jobs -> embeddings in one process: per-item failures, hash checks, encoder isolation, the registry."""

from __future__ import annotations

import hashlib
import http.client
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import Session
from ynet_db.workers.heartbeat import Heartbeat, WorkerIdentity

from ynet_db.db.tables import Embedding, EmbeddingJob, Model, Product
from ynet_db.images.decode import ImageError
from ynet_db.ingestion import jobs
from ynet_db.ingestion.embed import (
    BatchResult,
    BatchWriter,
    Fetch,
    ShopEncoder,
    StopSignal,
    default_fetch,
    drain,
    embed_batch,
    run_once,
)
from ynet_db.models.registry import ModelIdentity, activate, promote_if_complete, register

DIM = 4


@dataclass
class Encoding:
    vectors: torch.Tensor


class ColourEncoder:
    """A stand-in for the network: the mean colour, so tests check which image each vector came from."""

    def __init__(self, refuse_red: bool = False) -> None:
        self.refuse_red = refuse_red
        self.calls: list[int] = []

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(image, dtype=np.float32)).mean(dim=(0, 1)) / 255

    def encode_shop(self, pixels: torch.Tensor, tags: Sequence[Sequence[str]]) -> Encoding:
        self.calls.append(len(pixels))
        if self.refuse_red and bool((pixels[:, 0] > 0.9).any()):
            raise RuntimeError("the network rejects red")
        return Encoding(torch.cat([pixels, torch.ones(len(pixels), 1)], dim=1))


@pytest.fixture(autouse=True)
def images_under_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`run_once`'s default fetch reads local images only under YNET_IMAGE_ROOTS; these tests write them here."""
    monkeypatch.setenv("YNET_IMAGE_ROOTS", str(tmp_path))


def write_png(path: Path, colour: tuple[int, int, int]) -> Path:
    Image.new("RGB", (64, 64), colour).save(path)
    return path


def add_model(engine: Engine, state: str = "active", version: str = "test@1") -> int:
    with Session(engine) as session:
        model = Model(name="test", version=version, embedding_dim=DIM, weights_sha256="0" * 64, state=state)
        session.add(model)
        session.commit()
        return model.id


def add_products(engine: Engine, uris: Sequence[str], sha256: Sequence[str | None] | None = None) -> None:
    hashes = sha256 or [None] * len(uris)
    with Session(engine) as session:
        session.add_all(
            Product(external_id=f"p{i}", category="dress", tags=["color:red"], image_uri=uri, image_sha256=digest)
            for i, (uri, digest) in enumerate(zip(uris, hashes, strict=True))
        )
        session.commit()


def job_states(engine: Engine) -> dict[str, str]:
    with Session(engine) as session:
        rows = session.execute(select(Product.external_id, EmbeddingJob.state).join(EmbeddingJob.product))
        return {key: value for key, value in rows}


def embedding_count(engine: Engine) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(Embedding)) or 0


def test_bad_items_are_recorded_and_the_rest_of_the_batch_is_embedded(engine: Engine, tmp_path: Path) -> None:
    add_model(engine)
    good = [write_png(tmp_path / f"{i}.png", (0, 40 * i, 0)) for i in range(3)]
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff not really a jpeg")
    add_products(engine, [str(p) for p in good] + [str(corrupt), str(tmp_path / "missing.png")])

    result = run_once(engine, ColourEncoder(), "w1", batch_size=10)

    assert (result.claimed, result.done, result.dead, result.retry) == (5, 3, 1, 1)
    assert job_states(engine) == {"p0": "done", "p1": "done", "p2": "done", "p3": "dead", "p4": "retry"}
    with Session(engine) as session:
        stored = session.scalars(select(Embedding).join(Embedding.product).where(Product.external_id == "p2")).one()
        errors = dict(
            session.execute(select(Product.external_id, EmbeddingJob.last_error).join(EmbeddingJob.product)).all()
        )
    assert stored.image_sha256 == hashlib.sha256(good[2].read_bytes()).hexdigest()
    assert list(stored.embedding) == pytest.approx([0, 80 / 255, 0, 1], abs=1e-6)
    assert errors["p3"].startswith("decode: image") and "not an image" in errors["p3"]
    assert errors["p4"].startswith("fetch: image") and "does not exist" in errors["p4"]


def test_a_retryable_item_ends_dead_after_its_attempts(engine: Engine, tmp_path: Path) -> None:
    add_model(engine)
    add_products(engine, [str(tmp_path / "missing.png")])
    with Session(engine) as session:
        session.execute(update(EmbeddingJob).values(max_attempts=2))
        session.commit()
    for expected in ("retry", "dead"):
        result = run_once(engine, ColourEncoder(), "w1", batch_size=1)
        assert result.claimed == 1
        assert job_states(engine) == {"p0": expected}
        with Session(engine) as session:  # skip the backoff instead of sleeping through it
            session.execute(update(EmbeddingJob).values(run_after=func.now()))
            session.commit()
    assert run_once(engine, ColourEncoder(), "w1", batch_size=1).claimed == 0


def test_an_image_that_changed_after_import_is_refused(engine: Engine, tmp_path: Path) -> None:
    add_model(engine)
    image = write_png(tmp_path / "a.png", (1, 2, 3))
    add_products(engine, [str(image)], ["0" * 64])
    result = run_once(engine, ColourEncoder(), "w1", batch_size=1)
    assert result.dead == 1 and embedding_count(engine) == 0
    assert "the file changed after import" in result.errors[0]


def test_an_encoder_failure_costs_only_the_item_that_caused_it(engine: Engine, tmp_path: Path) -> None:
    add_model(engine)
    colours = [(0, 0, 0), (255, 0, 0), (0, 0, 255)]
    add_products(engine, [str(write_png(tmp_path / f"{i}.png", c)) for i, c in enumerate(colours)])
    encoder = ColourEncoder(refuse_red=True)
    result = run_once(engine, encoder, "w1", batch_size=3)
    assert encoder.calls == [3, 1, 1, 1]  # the batch once, then each item alone
    assert job_states(engine) == {"p0": "done", "p1": "retry", "p2": "done"}
    assert result.errors == ["job 2: encode: RuntimeError('the network rejects red')"]


def test_a_lost_lease_writes_nothing(engine: Engine, tmp_path: Path) -> None:
    add_model(engine)
    add_products(engine, [str(write_png(tmp_path / "a.png", (9, 9, 9)))])
    claimed = jobs.claim(engine, "w1", 1)
    with Session(engine) as session:  # another worker took it over after the lease expired
        session.execute(update(EmbeddingJob).values(claimed_by="w2"))
        session.commit()
    result = embed_batch(engine, ColourEncoder(), claimed, "w1")
    assert (result.done, result.stale, embedding_count(engine)) == (0, 1, 0)


def identity(version: str) -> ModelIdentity:
    return ModelIdentity("test", version, DIM, "0" * 64, {"model": {}, "checkpoint": None})


def test_first_activation_is_immediate_and_a_later_one_backfills_then_switches(engine: Engine, tmp_path: Path) -> None:
    add_products(engine, [str(write_png(tmp_path / f"{i}.png", (i, i, i))) for i in range(3)])
    first = register(engine, identity("test@1"))
    assert register(engine, identity("test@1")) == first and first.state == "registered"

    started = activate(engine, "test@1")
    assert (started.model.state, started.backfill_jobs) == ("active", 3)
    run_once(engine, ColourEncoder(), "w1", batch_size=10, model_id=first.id)

    second = register(engine, identity("test@2"))
    backfill = activate(engine, "test@2")
    assert (backfill.model.state, backfill.backfill_jobs) == ("backfilling", 3)
    run_once(engine, ColourEncoder(), "w1", batch_size=2, model_id=second.id)
    assert promote_if_complete(engine) is None  # 2 of 3 covered: search stays on the first model

    run_once(engine, ColourEncoder(), "w1", batch_size=2, model_id=second.id)
    promoted = promote_if_complete(engine)
    assert promoted is not None and promoted.version == "test@2" and promoted.state == "active"
    with Session(engine) as session:
        assert dict(session.execute(select(Model.version, Model.state)).all()) == {
            "test@1": "retired",
            "test@2": "active",
        }


def test_a_writer_writes_each_batch_behind_the_next_and_counts_once_written(engine: Engine, tmp_path: Path) -> None:
    add_model(engine)
    add_products(engine, [str(write_png(tmp_path / f"{i}.png", (10 * i, 0, 0))) for i in range(5)])
    heard: list[int] = []
    with BatchWriter(engine, "w1", on_written=heard.append) as writer:
        first = run_once(engine, ColourEncoder(), "w1", batch_size=3, writer=writer)
        second = run_once(engine, ColourEncoder(), "w1", batch_size=3, writer=writer)
        assert first.done == 3, "the first write was waited for before the second began"
        assert run_once(engine, ColourEncoder(), "w1", batch_size=3, writer=writer).claimed == 0
    assert (second.claimed, second.done, heard) == (2, 2, [3, 2])
    assert set(job_states(engine).values()) == {"done"} and embedding_count(engine) == 5


def test_a_failed_write_surfaces_and_leaves_its_jobs_to_the_lease(
    engine: Engine, empty_engine: Engine, tmp_path: Path
) -> None:
    add_model(engine)
    add_products(engine, [str(write_png(tmp_path / "0.png", (200, 0, 0)))])
    writer = BatchWriter(empty_engine, "w1")  # a database without ynet's schema: the write fails
    run_once(engine, ColourEncoder(), "w1", batch_size=1, writer=writer)
    with pytest.raises(ProgrammingError, match="ynet.embedding_jobs"):
        writer.close()
    assert job_states(engine) == {"p0": "running"} and embedding_count(engine) == 0


def read_file(location: str, stop: StopSignal) -> bytes:
    return Path(location).read_bytes()


def errors_by_product(engine: Engine) -> dict[str, str | None]:
    return {sku: error for sku, (_, _, error) in job_rows(engine).items()}


def test_any_exception_while_preparing_an_item_is_that_items_failure(engine: Engine, tmp_path: Path) -> None:
    add_model(engine)
    good = write_png(tmp_path / "good.png", (0, 200, 0))
    # Two URLs the HTTP client cannot parse (ValueError, http.client.InvalidURL), then a fetcher that
    # raises what the review saw escape (InvalidURL for a space in the host, UnicodeError for a long label).
    uris = [
        "http://[::1/x.jpg",
        "http://127.0.0.1:8o/x.jpg",
        "hook://space",
        "hook://label",
        str(good),
    ]
    add_products(engine, uris)
    raised: dict[str, Exception] = {
        "hook://space": http.client.InvalidURL("URL can't contain control characters. 'bad host'"),
        "hook://label": UnicodeError("encoding with 'idna' codec failed (label too long)"),
    }

    def fetch(location: str, stop: StopSignal) -> bytes:
        if location in raised:
            raise raised[location]
        return default_fetch(location, stop)

    result = run_once(engine, ColourEncoder(), "w1", batch_size=10, fetch=fetch)

    assert (result.claimed, result.done, result.retry) == (5, 1, 4)
    states, errors = job_states(engine), errors_by_product(engine)
    assert states["p4"] == "done" and embedding_count(engine) == 1
    for product, uri in [("p0", uris[0]), ("p1", uris[1]), ("p2", uris[2]), ("p3", uris[3])]:
        assert states[product] == "retry", (product, errors[product])
        assert errors[product] is not None and uri in errors[product]
    assert errors["p2"].startswith("fetch: image hook://space: unexpected InvalidURL: URL can't contain")
    label_error = "unexpected UnicodeError: encoding with 'idna' codec failed (label too long)"
    assert errors["p3"] == f"fetch: image hook://label: {label_error}"


class FailingPreprocess(ColourEncoder):
    def preprocess(self, image: Image.Image) -> torch.Tensor:
        raise IndexError("tuple index out of range")


def test_a_preprocessing_failure_is_the_items_and_retryable(engine: Engine, tmp_path: Path) -> None:
    add_model(engine)
    add_products(engine, [str(write_png(tmp_path / "a.png", (1, 2, 3)))])
    result = run_once(engine, FailingPreprocess(), "w1", batch_size=1, fetch=read_file)
    assert result.retry == 1 and job_states(engine) == {"p0": "retry"}
    assert result.errors == [
        f"job 1: prepare: image {tmp_path / 'a.png'}: unexpected IndexError: tuple index out of range"
    ]


def job_rows(engine: Engine) -> dict[str, tuple[str, int, str | None]]:
    with Session(engine) as session:
        rows = session.execute(
            select(Product.external_id, EmbeddingJob.state, EmbeddingJob.attempts, EmbeddingJob.last_error).join(
                EmbeddingJob.product
            )
        )
        return {sku: (state, attempts, error) for sku, state, attempts, error in rows}


def test_a_stop_during_a_fetch_cuts_it_and_releases_the_rest_of_the_batch_unattempted(
    engine: Engine, tmp_path: Path
) -> None:
    add_model(engine)
    add_products(engine, [str(write_png(tmp_path / f"{i}.png", (0, 0, 50 * i))) for i in range(4)])
    stop = threading.Event()
    fetched: list[str] = []

    def fetch(location: str, cancel: StopSignal) -> bytes:
        assert cancel is stop, "the fetch is handed the worker's stop event"
        if location.endswith("1.png"):
            stop.set()  # SIGTERM arrives while this download is in flight
            raise ImageError(location, "download cancelled: the worker is stopping")
        fetched.append(location)
        return Path(location).read_bytes()

    result = run_once(engine, ColourEncoder(), "w1", batch_size=4, fetch=fetch, stop=stop)

    assert fetched == [str(tmp_path / "0.png")], "no fetch starts once the worker stops"
    assert (result.claimed, result.done, result.released, result.retry, result.errors) == (4, 1, 3, 0, [])
    assert job_rows(engine) == {
        "p0": ("done", 1, None),
        "p1": ("pending", 0, None),
        "p2": ("pending", 0, None),
        "p3": ("pending", 0, None),
    }
    assert {job.product_id for job in jobs.claim(engine, "w2", 10)} == {2, 3, 4}


class Crash(BaseException):
    """What no item catches (a bug outside the item, an interrupt): it ends the task."""


def test_a_task_that_dies_mid_batch_leaves_its_jobs_to_the_lease_while_its_process_beats_on(
    engine: Engine, tmp_path: Path
) -> None:
    model_id = add_model(engine)
    add_products(engine, [str(write_png(tmp_path / f"{i}.png", (60 * i, 0, 0))) for i in range(4)])
    lease = timedelta(seconds=1)
    heartbeat = Heartbeat(engine, WorkerIdentity("host/1", "host", 1, model_id, "cpu"), lease=lease)

    def fetch(location: str, stop: StopSignal) -> bytes:
        if location.endswith("2.png"):
            raise Crash("the task is gone")
        return read_file(location, stop)

    with pytest.raises(Crash), heartbeat.holding() as in_hand:
        drain(
            engine,
            ColourEncoder(),
            "host/1",
            2,
            until=float("inf"),
            stop=threading.Event(),
            in_hand=in_hand,
            lease=lease,
            fetch=fetch,
        )
    # The first batch was written; the second (p2, p3) was claimed by the task that died.
    assert {sku: row[0] for sku, row in job_rows(engine).items()} == {
        "p0": "done",
        "p1": "done",
        "p2": "running",
        "p3": "running",
    }

    def swept() -> bool:
        heartbeat.beat()  # the process lives on and beats, but renews no lease of the dead task's
        jobs.sweep(engine)
        return job_rows(engine)["p3"][0] != "running"

    wait_until(swept, 30, "the dead task's leases to run out")
    rows = job_rows(engine)
    for sku in ("p2", "p3"):
        state, attempts, error = rows[sku]
        assert (state, attempts) == ("retry", 1)
        assert error == "the task died: Crash: the task is gone / lease expired on host/1"
    with Session(engine) as session:  # the backoff is over: another task finishes them
        session.execute(update(EmbeddingJob).values(run_after=func.now()))
        session.commit()
    assert run_once(engine, ColourEncoder(), "host/1", 2, fetch=read_file).done == 1  # retried: alone
    assert run_once(engine, ColourEncoder(), "host/1", 2, fetch=read_file).done == 1
    assert {sku: row[:2] for sku, row in job_rows(engine).items()} == {
        "p0": ("done", 1),
        "p1": ("done", 1),
        "p2": ("done", 2),
        "p3": ("done", 2),
    }


def test_a_live_tasks_jobs_are_renewed_by_the_heartbeat(engine: Engine, tmp_path: Path) -> None:
    model_id = add_model(engine)
    add_products(engine, [str(write_png(tmp_path / f"{i}.png", (0, 9 * i, 0))) for i in range(2)])
    heartbeat = Heartbeat(engine, WorkerIdentity("host/1", "host", 1, model_id, "cpu"), lease=timedelta(hours=1))
    held, loose = jobs.claim(engine, "host/1", 2, lease=timedelta(seconds=30))
    with heartbeat.holding() as in_hand:
        in_hand.hold([held.id])
        heartbeat.beat()
    heartbeat.beat()  # the task has left: nothing more is renewed
    with Session(engine) as session:
        renewed = dict(
            session.execute(
                select(EmbeddingJob.id, EmbeddingJob.lease_expires_at > func.now() + timedelta(minutes=30))
            ).all()
        )
    assert renewed == {held.id: True, loose.id: False}
    assert heartbeat.interval_s <= 1200, "at least three beats per lease"


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)


# -- decoding ahead (a GPU worker's `drain(..., decode_threads=N)`) ---------------------------------------


class WatchingEncoder(ColourEncoder):
    """Notes, for each batch it encodes, whether another fetch began while it was encoding (it waits a
    little for one), and whether it is encoding at all (`busy`)."""

    def __init__(self, fetched: list[str]) -> None:
        super().__init__()
        self.fetched, self.busy, self.fetched_meanwhile = fetched, threading.Event(), list[bool]()

    def encode_shop(self, pixels: torch.Tensor, tags: Sequence[Sequence[str]]) -> Encoding:
        self.busy.set()
        try:
            before, deadline = len(self.fetched), time.monotonic() + 2.0
            while len(self.fetched) == before and time.monotonic() < deadline:
                time.sleep(0.01)
            self.fetched_meanwhile.append(len(self.fetched) > before)
            return super().encode_shop(pixels, tags)
        finally:
            self.busy.clear()


def drain_all(engine: Engine, encoder: ShopEncoder, fetch: Fetch, stop: threading.Event | None = None) -> BatchResult:
    return drain(
        engine,
        encoder,
        "w1",
        3,
        until=float("inf"),
        stop=stop or threading.Event(),
        in_hand=jobs.InHand(),
        fetch=fetch,
        decode_threads=3,
    )


def test_decoding_ahead_prepares_the_next_batch_while_this_one_encodes_and_a_batch_at_once(
    engine: Engine, tmp_path: Path
) -> None:
    add_model(engine)
    colours = [(20 * i, 100, 0) for i in range(9)]
    add_products(engine, [str(write_png(tmp_path / f"{i}.png", colour)) for i, colour in enumerate(colours)])
    fetched: list[str] = []
    together = threading.Barrier(3, timeout=10)  # a batch's three fetches pass only when they run at once

    def fetch(location: str, stop: StopSignal) -> bytes:
        fetched.append(location)
        together.wait()
        return read_file(location, stop)

    encoder = WatchingEncoder(fetched)
    result = drain_all(engine, encoder, fetch)

    assert (result.claimed, result.done, result.retry, result.errors) == (9, 9, 0, [])
    assert encoder.calls == [3, 3, 3]
    assert encoder.fetched_meanwhile == [True, True, False]  # the last batch had nothing behind it
    with Session(engine) as session:
        stored = dict(session.execute(select(Product.external_id, Embedding.embedding).join(Embedding.product)).all())
    for i, colour in enumerate(colours):  # each vector is its own image's, whichever thread decoded it
        assert list(stored[f"p{i}"]) == pytest.approx([c / 255 for c in colour] + [1], abs=1e-6)


def test_a_retried_job_is_decoded_alone_after_the_writes_before_it(engine: Engine, tmp_path: Path) -> None:
    add_model(engine)
    add_products(engine, [str(write_png(tmp_path / f"{i}.png", (0, 0, 30 * i))) for i in range(7)])
    with Session(engine) as session:  # p6 failed once: it comes back after the first attempts (run_after)
        p6 = select(Product.id).where(Product.external_id == "p6").scalar_subquery()
        session.execute(
            update(EmbeddingJob)
            .where(EmbeddingJob.product_id == p6)
            .values(state="retry", attempts=1, run_after=func.now())
        )
        session.commit()
    fetched: list[str] = []
    seen_at_retry: list[tuple[bool, int]] = []
    encoder = WatchingEncoder(fetched)

    def fetch(location: str, stop: StopSignal) -> bytes:
        if location.endswith("6.png"):  # (encoding now?, embeddings written by now)
            seen_at_retry.append((encoder.busy.is_set(), embedding_count(engine)))
        fetched.append(location)
        return read_file(location, stop)

    result = drain_all(engine, encoder, fetch)

    assert (result.claimed, result.done) == (7, 7) and encoder.calls == [3, 3, 1]
    assert seen_at_retry == [(False, 6)]  # no encode beside it, and both earlier batches already written
    assert encoder.fetched_meanwhile == [True, False, False]  # nothing was decoded ahead beside the retried job


def test_a_stop_while_decoding_ahead_embeds_what_was_fetched_and_releases_the_rest(
    engine: Engine, tmp_path: Path
) -> None:
    add_model(engine)
    add_products(engine, [str(write_png(tmp_path / f"{i}.png", (0, 25 * i, 25 * i))) for i in range(8)])
    stop = threading.Event()
    fetched: list[str] = []

    def fetch(location: str, cancel: StopSignal) -> bytes:
        if location.endswith("4.png"):  # in the second batch, decoded ahead, once p3 is fetched
            wait_until(lambda: str(tmp_path / "3.png") in fetched, 10, "p3's fetch")
            stop.set()
            raise ImageError(location, "download cancelled: the worker is stopping")
        fetched.append(location)
        time.sleep(0.2 if location.endswith("5.png") else 0)  # p5's fetch is in flight when the stop comes
        return Path(location).read_bytes()

    result = drain_all(engine, WatchingEncoder(fetched), fetch, stop)

    states = {sku: row[:2] for sku, row in job_rows(engine).items()}
    assert "running" not in {state for state, _ in states.values()}, states  # every claimed job was settled
    assert [states[f"p{i}"] for i in range(4)] == [("done", 1)] * 4
    assert states["p4"] == ("pending", 0) and states["p6"] == ("pending", 0) and states["p7"] == ("pending", 0)
    assert states["p5"] in (("done", 1), ("pending", 0))  # fetched before the stop, or released unattempted
    assert (result.claimed, result.done + result.released, result.retry) == (6, 6, 0)
