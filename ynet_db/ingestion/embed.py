"""Jobs -> shop embeddings: fetch, hash, decode, encode in one micro-batch, write back.

One bad item never fails its batch (docs/design.md#2-one-bad-item-never-fails-its-batch): any
exception while an item is prepared (fetch, hash, decode, preprocess) is that item's failure,
classified and recorded with `jobs.fail`:
- the bytes cannot be fetched (missing file, HTTP error, timeout, I/O error): retryable, because a
  file server or CDN comes back; attempts and backoff bound it, then the job is dead;
- the bytes are not a usable image, or not the image the catalogue hashed: permanent, because the
  same bytes will fail the same way;
- anything else (a URL the HTTP client cannot even parse, a bug): retryable, the exception's type in
  the recorded error, so an unforeseen failure costs its item some attempts and nothing more.
The encoder runs once per batch; if the batch as a whole raises, each item is encoded alone so
the culprit is found and the others still get their embeddings.

A worker's loop writes each batch on a thread (`BatchWriter`) while it embeds the next one: the
database's share of the time (the HNSW insert, the commit) then overlaps the encoder's, one write in
flight at a time. A write that fails surfaces at the next batch or at the end of the loop, and the
batch behind it was claimed but never written: the lease brings both batches' jobs back. A GPU worker
also decodes ahead (`drain`'s `decode_threads`): the next batch is claimed, fetched, decoded and
preprocessed on a thread pool while the device encodes this one, one batch ahead at most.

An item can also kill its process outright (a decoder crash, the OOM killer): nothing is recorded,
and its whole batch comes back when the lease expires. So a job on its second or later attempt is
embedded alone: a killer then takes only itself down, and ends dead after its attempts, while its
former batch-mates are embedded. Before it, the previous batch's write is waited for, so that write
does not go down with it either, and nothing is decoded ahead beside it. (A first attempt that kills
takes the write in flight along, and when decoding ahead the batch being encoded too: those jobs come
back once, and are then embedded alone.)

A stopping worker (warm shutdown) hands its fetch the stop event, which cuts a download in flight. An
item whose fetch was cut, and every item of the batch not yet fetched, is released to the queue with
its attempt given back; the items already fetched are embedded and written. A task that dies by an
exception (`drain`) notes the error on the jobs it holds and leaves them to their lease: the heartbeat
renews only the jobs a live task holds (`jobs.InHand`), so the sweep returns them.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

import torch
from PIL import Image
from sqlalchemy import Engine

from ynet_db.images.decode import ImageError, decode_image
from ynet_db.images.fetch import fetch_image_bytes
from ynet_db.images.policy import FetchPolicy
from ynet_db.ingestion import jobs
from ynet_db.ingestion.jobs import ClaimedJob
from ynet_db.metrics.definitions import EMBED_FAILURES, EMBED_STAGE_SECONDS, EMBEDDINGS_WRITTEN

log = logging.getLogger(__name__)

FETCH_TIMEOUT_S = 10.0


class StopSignal(Protocol):
    """Set when the worker stops: a `threading.Event`, or the `multiprocessing.Event` pool children share."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


Fetch = Callable[[str, StopSignal], bytes]
"""`fetch(location, stop)`: the image's bytes; a fetch that sees `stop` set gives up (raises)."""


class ShopEncoder(Protocol):
    """What embedding needs of a model (`ynet_db.nn.model.RetrievalModel` is one)."""

    def preprocess(self, image: Image.Image) -> torch.Tensor: ...

    def encode_shop(self, pixels: torch.Tensor, tags: Sequence[Sequence[str]]) -> object: ...


class ItemFailure(Exception):
    """One item of a batch failed; `permanent` says whether another attempt could succeed."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class Released(Exception):
    """The worker stopped while this item was being fetched: it goes back to the queue, unattempted."""


@dataclass(frozen=True)
class Prepared:
    job: ClaimedJob
    sha256: str
    pixels: torch.Tensor


@dataclass
class BatchResult:
    claimed: int = 0
    done: int = 0
    retry: int = 0
    dead: int = 0
    stale: int = 0
    """Jobs that were no longer this worker's (lease lost, product changed): nothing written."""
    released: int = 0
    """Jobs handed back unattempted because the worker was stopping."""
    errors: list[str] = field(default_factory=list)

    def tally(self, written: int, done: set[int]) -> None:
        """A write of `written` embeddings finished the jobs `done`; the others were no longer this worker's."""
        self.done += len(done)
        self.stale += written - len(done)

    def add(self, other: BatchResult) -> None:
        self.claimed += other.claimed
        self.done += other.done
        self.retry += other.retry
        self.dead += other.dead
        self.stale += other.stale
        self.released += other.released
        self.errors.extend(other.errors)


def policy_fetch(policy: FetchPolicy) -> Fetch:
    """A fetch under `policy`; the worker's stop signal (a warm shutdown) cuts a fetch in flight."""

    def fetch(location: str, stop: StopSignal) -> bytes:
        return fetch_image_bytes(location, policy=policy, timeout_s=FETCH_TIMEOUT_S, cancelled=stop.is_set)

    return fetch


def default_fetch(location: str, stop: StopSignal) -> bytes:
    """A fetch under the policy the environment's settings describe (YNET_IMAGE_ROOTS, YNET_ALLOWED_HOSTS)."""
    return policy_fetch(FetchPolicy.from_env())(location, stop)


def prepare(
    job: ClaimedJob, model: ShopEncoder, fetch: Fetch = default_fetch, stop: StopSignal | None = None
) -> Prepared:
    """Bytes -> hash -> safe decode -> model input; any failure is an `ItemFailure` that says whether to
    retry, or `Released` when the worker stopped during the fetch."""
    data = _fetch(job, fetch, stop or threading.Event())
    try:
        digest = hashlib.sha256(data).hexdigest()
        _check_hash(job, digest)
        image = _decode(job, data)
        return Prepared(job, digest, model.preprocess(image))
    except ItemFailure:
        raise
    except Exception as error:  # preprocessing, or a fetch that returned something other than bytes
        EMBED_FAILURES.labels(stage="prepare").inc()
        raise ItemFailure(f"prepare: {unexpected(job, error)}", permanent=False) from error


def _fetch(job: ClaimedJob, fetch: Fetch, stop: StopSignal) -> bytes:
    try:
        with EMBED_STAGE_SECONDS.labels(stage="fetch").time():
            return fetch(job.image_uri, stop)
    except Exception as error:
        if stop.is_set():  # whatever the fetcher raises when it is cut, the item was not really tried
            raise Released(job.image_uri) from error
        EMBED_FAILURES.labels(stage="fetch").inc()
        if isinstance(error, (ImageError, OSError, TimeoutError)):
            raise ItemFailure(f"fetch: {error}", permanent=False) from error
        raise ItemFailure(f"fetch: {unexpected(job, error)}", permanent=False) from error


def _check_hash(job: ClaimedJob, digest: str) -> None:
    if job.image_sha256 is not None and job.image_sha256 != digest:
        raise ItemFailure(
            f"image {job.image_uri}: its bytes hash to {digest}, the catalogue says {job.image_sha256}; "
            "the file changed after import, re-import the product",
            permanent=True,
        )


def _decode(job: ClaimedJob, data: bytes) -> Image.Image:
    try:
        with EMBED_STAGE_SECONDS.labels(stage="decode").time():
            return decode_image(data, source=job.image_uri)
    except ImageError as error:
        EMBED_FAILURES.labels(stage="decode").inc()
        raise ItemFailure(f"decode: {error}", permanent=True) from error
    except Exception as error:  # decode_image names what it knows; anything else is a decoder bug
        EMBED_FAILURES.labels(stage="decode").inc()
        raise ItemFailure(f"decode: {unexpected(job, error)}", permanent=False) from error


def unexpected(job: ClaimedJob, error: Exception) -> str:
    """An exception nobody classified, named by its type and the image it came from."""
    return f"image {job.image_uri}: unexpected {type(error).__name__}: {error}"


def encode(model: ShopEncoder, items: Sequence[Prepared]) -> list[torch.Tensor | ItemFailure]:
    """One forward pass for the batch; item by item only when the batch as a whole fails."""
    try:
        with EMBED_STAGE_SECONDS.labels(stage="encode").time():
            return list(_vectors(model, items))
    except Exception as error:  # e.g. out of memory, or one input the network rejects
        if len(items) == 1:
            EMBED_FAILURES.labels(stage="encode").inc()
            return [ItemFailure(f"encode: {error!r}", permanent=False)]
        log.warning("batch of %d failed to encode (%r); encoding item by item", len(items), error)
        return [result for item in items for result in encode(model, [item])]


def _vectors(model: ShopEncoder, items: Sequence[Prepared]) -> torch.Tensor:
    encoding = model.encode_shop(torch.stack([item.pixels for item in items]), [item.job.tags for item in items])
    vectors: torch.Tensor = encoding.vectors  # type: ignore[attr-defined]
    return vectors


def write_batch(engine: Engine, worker: str, finished: Sequence[jobs.Finished]) -> set[int]:
    """`jobs.complete_batch`, timed and counted: the jobs it finished (the others were no longer this worker's)."""
    with EMBED_STAGE_SECONDS.labels(stage="write").time():
        done = jobs.complete_batch(engine, worker, finished)
    EMBEDDINGS_WRITTEN.inc(len(done))
    return done


class BatchWriter:
    """Writes batches (`jobs.complete_batch`) on one thread, one write in flight: `write` waits for the
    previous batch's write, then starts this one's and returns. `close` (or leaving the `with`) waits for
    the last. A batch's `done` and `stale` counts are final once its write is waited for; `on_written`
    hears how many jobs each write finished."""

    def __init__(self, engine: Engine, worker: str, on_written: Callable[[int], None] = lambda done: None) -> None:
        self.engine, self.worker, self.on_written = engine, worker, on_written
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="ynet-writer")
        self._in_flight: tuple[Future[set[int]], list[int], BatchResult, jobs.InHand] | None = None

    def write(self, finished: Sequence[jobs.Finished], result: BatchResult, in_hand: jobs.InHand) -> None:
        """Start writing `finished`; its jobs leave `in_hand` once written (until then their leases are renewed)."""
        self.wait()
        future = self._thread.submit(write_batch, self.engine, self.worker, finished)
        self._in_flight = (future, [item.job.id for item in finished], result, in_hand)

    def wait(self) -> None:
        if self._in_flight is None:
            return
        future, job_ids, result, in_hand = self._in_flight
        self._in_flight = None
        done = future.result()
        in_hand.drop(job_ids)
        result.tally(len(job_ids), done)
        self.on_written(len(done))

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._thread.shutdown()

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def embed_batch(
    engine: Engine,
    model: ShopEncoder,
    batch: Sequence[ClaimedJob],
    worker: str,
    *,
    fetch: Fetch = default_fetch,
    writer: BatchWriter | None = None,
    stop: StopSignal | None = None,
    in_hand: jobs.InHand | None = None,
    decoder: Executor | None = None,
) -> BatchResult:
    """Embed claimed jobs and record each outcome; never raises for a single item's failure. With a
    `writer` the embeddings are written behind the caller's back (counts final after `writer.wait`).
    Once `stop` is set, the items not yet fetched are released; each job leaves `in_hand` when settled.
    With a `decoder` (a thread pool) the items are fetched, decoded and preprocessed on its threads."""
    stop, in_hand = stop or threading.Event(), in_hand or jobs.InHand()
    ready = prepare_batch(engine, model, batch, worker, fetch=fetch, stop=stop, in_hand=in_hand, decoder=decoder)
    return encode_batch(engine, model, ready, worker, writer=writer, in_hand=in_hand)


@dataclass
class ReadyBatch:
    """Claimed jobs made ready to encode: `prepared` holds the items that are; the others are settled."""

    result: BatchResult
    prepared: list[Prepared]


def prepare_batch(
    engine: Engine,
    model: ShopEncoder,
    batch: Sequence[ClaimedJob],
    worker: str,
    *,
    fetch: Fetch,
    stop: StopSignal,
    in_hand: jobs.InHand,
    decoder: Executor | None = None,
) -> ReadyBatch:
    """Prepare each job (one after another, or all at once on `decoder`'s threads), recording each item's
    failure and releasing the items a stop left unfetched."""

    def attempt(job: ClaimedJob) -> Prepared | ItemFailure | Released:
        if stop.is_set():
            return Released(job.image_uri)
        try:
            return prepare(job, model, fetch, stop)
        except (ItemFailure, Released) as outcome:
            return outcome

    result = BatchResult(claimed=len(batch))
    prepared: list[Prepared] = []
    released: list[ClaimedJob] = []
    outcomes = decoder.map(attempt, batch) if decoder is not None else map(attempt, batch)
    for job, outcome in zip(batch, outcomes, strict=True):
        if isinstance(outcome, Released):
            released.append(job)
        elif isinstance(outcome, ItemFailure):
            _record_failure(engine, job, worker, outcome, result, in_hand)
        else:
            prepared.append(outcome)
    _release(engine, worker, released, result, in_hand)
    return ReadyBatch(result, prepared)


def encode_batch(
    engine: Engine,
    model: ShopEncoder,
    ready: ReadyBatch,
    worker: str,
    *,
    writer: BatchWriter | None,
    in_hand: jobs.InHand,
) -> BatchResult:
    """Encode the prepared items in one forward pass and write their embeddings (behind, with a `writer`)."""
    result, prepared = ready.result, ready.prepared
    if not prepared:
        return result
    finished = []
    for item, outcome in zip(prepared, encode(model, prepared), strict=True):
        if isinstance(outcome, ItemFailure):
            _record_failure(engine, item.job, worker, outcome, result, in_hand)
        else:
            finished.append(jobs.Finished(item.job, outcome.numpy(), item.sha256))
    if writer is None:
        result.tally(len(finished), write_batch(engine, worker, finished))
        in_hand.drop(item.job.id for item in finished)
    else:
        writer.write(finished, result, in_hand)
    return result


def _record_failure(
    engine: Engine, job: ClaimedJob, worker: str, failure: ItemFailure, result: BatchResult, in_hand: jobs.InHand
) -> None:
    state = jobs.fail(engine, job, worker, str(failure), permanent=failure.permanent)
    in_hand.drop([job.id])
    log.info("job %s (product %s) failed, now %s: %s", job.id, job.product_id, state, failure)
    result.errors.append(f"job {job.id}: {failure}")
    if state == "dead":
        result.dead += 1
    elif state == "retry":
        result.retry += 1
    else:
        result.stale += 1


def _release(
    engine: Engine, worker: str, released: Sequence[ClaimedJob], result: BatchResult, in_hand: jobs.InHand
) -> None:
    job_ids = [job.id for job in released]
    count = jobs.release(engine, worker, job_ids)
    in_hand.drop(job_ids)
    result.released += count
    result.stale += len(job_ids) - count
    if job_ids:
        log.info("stopping: %d jobs released to the queue unattempted", count)


def claim_batch(
    engine: Engine,
    worker: str,
    batch_size: int,
    in_hand: jobs.InHand,
    *,
    model_id: int | None = None,
    lease: timedelta = jobs.DEFAULT_LEASE,
) -> list[ClaimedJob]:
    """Up to `batch_size` ready jobs (of one model), held in `in_hand`. The first job is claimed alone: a
    retried one is embedded alone (see the module's notes). Otherwise the rest of the batch is filled with
    first attempts only, so no retried job shares a batch's fate."""
    batch = jobs.claim(engine, worker, 1, lease=lease, model_id=model_id)
    in_hand.hold(job.id for job in batch)
    if batch and batch[0].attempts == 1 and batch_size > 1:
        batch += jobs.claim(engine, worker, batch_size - 1, lease=lease, model_id=model_id, first_attempts_only=True)
        in_hand.hold(job.id for job in batch)
    return batch


def retried(batch: Sequence[ClaimedJob]) -> bool:
    """A batch of one job on its second or later attempt: it may kill the process, so nothing runs beside it."""
    return bool(batch) and batch[0].attempts > 1


def run_once(
    engine: Engine,
    model: ShopEncoder,
    worker: str,
    batch_size: int,
    *,
    model_id: int | None = None,
    lease: timedelta = jobs.DEFAULT_LEASE,
    fetch: Fetch = default_fetch,
    writer: BatchWriter | None = None,
    stop: StopSignal | None = None,
    in_hand: jobs.InHand | None = None,
) -> BatchResult:
    """Claim up to `batch_size` ready jobs (of one model, `claim_batch`) and embed them; `claimed == 0`
    means no work. With a `writer`, the batch is written on its thread (the returned counts are final after
    its `wait`). The claimed jobs are held in `in_hand` until each is written, failed or released.
    """
    in_hand = in_hand or jobs.InHand()
    batch = claim_batch(engine, worker, batch_size, in_hand, model_id=model_id, lease=lease)
    if retried(batch) and writer is not None:
        writer.wait()  # a retried job may kill the process: no other batch's write may go down with it
    return embed_batch(engine, model, batch, worker, fetch=fetch, writer=writer, stop=stop, in_hand=in_hand)


def drain(
    engine: Engine,
    model: ShopEncoder,
    worker: str,
    batch_size: int,
    *,
    until: float,
    stop: StopSignal,
    in_hand: jobs.InHand,
    model_id: int | None = None,
    lease: timedelta = jobs.DEFAULT_LEASE,
    fetch: Fetch = default_fetch,
    on_written: Callable[[int], None] = lambda done: None,
    decode_threads: int = 0,
) -> BatchResult:
    """Embed batch after batch, each written behind the next, until no work is left, the monotonic clock
    passes `until` or `stop` is set; the counts are final.

    With `decode_threads`, a batch's images are fetched, decoded and preprocessed on that many threads at
    once, and the next batch is claimed and made ready while this one is encoded (one batch ahead, and
    never beside a retried job), so a GPU waits for no decoding. A CPU worker keeps 0: its cores run the
    encoder, and decoding beside it would only take turns with it.

    If anything raises, the error is noted on the jobs still in hand and they are left to their lease
    (the caller's heartbeat stops renewing them once `in_hand` is no longer its), then it propagates.
    """
    batches: list[BatchResult] = []
    ahead: Future[tuple[list[ClaimedJob], ReadyBatch | None]] | None = None

    def working() -> bool:
        return time.monotonic() < until and not stop.is_set()

    def claimed(decoder: Executor | None) -> tuple[list[ClaimedJob], ReadyBatch | None]:
        """The next batch, made ready unless it is a retried job (prepared only once the writes are done)."""
        batch = claim_batch(engine, worker, batch_size, in_hand, model_id=model_id, lease=lease)
        if retried(batch):
            return batch, None
        return batch, prepare_batch(
            engine, model, batch, worker, fetch=fetch, stop=stop, in_hand=in_hand, decoder=decoder
        )

    try:
        with BatchWriter(engine, worker, on_written) as writer, ExitStack() as pools:
            decoder = prefetch = None
            if decode_threads > 0:
                decoder = pools.enter_context(ThreadPoolExecutor(decode_threads, thread_name_prefix="ynet-decode"))
                prefetch = pools.enter_context(ThreadPoolExecutor(1, thread_name_prefix="ynet-prefetch"))
            while ahead is not None or working():
                batch, ready = ahead.result() if ahead is not None else claimed(decoder)
                ahead = None
                if not batch:
                    break
                if ready is None:
                    writer.wait()  # a retried job may kill the process: no other batch's write may go down with it
                    ready = prepare_batch(engine, model, batch, worker, fetch=fetch, stop=stop, in_hand=in_hand)
                elif prefetch is not None and working():
                    ahead = prefetch.submit(claimed, decoder)
                batches.append(encode_batch(engine, model, ready, worker, writer=writer, in_hand=in_hand))
    except BaseException as error:
        if ahead is not None:
            wait([ahead])  # the batch it claimed is in hand, and abandoned with the rest
        _abandon(engine, worker, in_hand, error)
        raise
    total = BatchResult()
    for batch_result in batches:  # counted once the writer has finished every batch's write
        total.add(batch_result)
    return total


def _abandon(engine: Engine, worker: str, in_hand: jobs.InHand, error: BaseException) -> None:
    job_ids = in_hand.ids()
    in_hand.drop(job_ids)
    if not job_ids:
        return
    log.error("the task died holding jobs %s; their leases will return them: %r", job_ids, error)
    try:
        jobs.note_error(engine, worker, job_ids, f"the task died: {type(error).__name__}: {error}")
    except Exception as note_error:  # the database may be what killed the task: the lease still works
        log.warning("could not record why jobs %s were abandoned: %r", job_ids, note_error)
