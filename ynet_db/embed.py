"""Jobs -> shop embeddings: fetch, hash, decode, encode in one micro-batch, write back.

One bad item never fails its batch (design principle 2). Each item's failure is classified and
recorded with `jobs.fail`:
- the bytes cannot be fetched (missing file, HTTP error, timeout, I/O error): retryable, because a
  file server or CDN comes back; attempts and backoff bound it, then the job is dead;
- the bytes are not a usable image, or not the image the catalogue hashed: permanent, because the
  same bytes will fail the same way.
The encoder runs once per batch; if the batch as a whole raises, each item is encoded alone so
the culprit is found and the others still get their embeddings.

A worker's loop writes each batch on a thread (`BatchWriter`) while it embeds the next one: the
database's share of the time (the HNSW insert, the commit) then overlaps the encoder's, one write in
flight at a time. A write that fails surfaces at the next batch or at the end of the loop, and the
batch behind it was claimed but never written: the lease brings both batches' jobs back.

An item can also kill its process outright (a decoder crash, the OOM killer): nothing is recorded,
and its whole batch comes back when the lease expires. So a job on its second or later attempt is
embedded alone: a killer then takes only itself down, and ends dead after its attempts, while its
former batch-mates are embedded. Before it, the previous batch's write is waited for, so that write
does not go down with it either. (A first attempt that kills takes the write in flight along: those
jobs come back once, and are then embedded alone.)
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

import torch
from PIL import Image
from sqlalchemy import Engine

from ynet_db import jobs
from ynet_db.fetch import Cancelled, fetch_image_bytes
from ynet_db.fetch_policy import FetchPolicy
from ynet_db.images import ImageError, decode_image
from ynet_db.jobs import ClaimedJob

log = logging.getLogger(__name__)

FETCH_TIMEOUT_S = 10.0

Fetch = Callable[[str], bytes]


class ShopEncoder(Protocol):
    """What embedding needs of a model (`ynet_db.nn.model.RetrievalModel` is one)."""

    def preprocess(self, image: Image.Image) -> torch.Tensor: ...

    def encode_shop(self, pixels: torch.Tensor, tags: Sequence[Sequence[str]]) -> object: ...


class ItemFailure(Exception):
    """One item of a batch failed; `permanent` says whether another attempt could succeed."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


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
        self.errors.extend(other.errors)


def default_fetch(location: str) -> bytes:
    """A fetch under the policy the environment's settings describe (YNET_IMAGE_ROOTS, YNET_ALLOWED_HOSTS)."""
    return fetch_image_bytes(location, policy=FetchPolicy.from_env(), timeout_s=FETCH_TIMEOUT_S)


def policy_fetch(policy: FetchPolicy, cancelled: Cancelled | None = None) -> Fetch:
    """A fetch under `policy`; when `cancelled()` turns true (a warm shutdown), a fetch in flight stops."""
    return functools.partial(fetch_image_bytes, policy=policy, timeout_s=FETCH_TIMEOUT_S, cancelled=cancelled)


def prepare(job: ClaimedJob, model: ShopEncoder, fetch: Fetch = default_fetch) -> Prepared:
    """Bytes -> hash -> safe decode -> model input, or an `ItemFailure` that says whether to retry."""
    try:
        data = fetch(job.image_uri)
    except (ImageError, OSError, TimeoutError) as error:
        raise ItemFailure(f"fetch: {error}", permanent=False) from error
    digest = hashlib.sha256(data).hexdigest()
    if job.image_sha256 is not None and job.image_sha256 != digest:
        raise ItemFailure(
            f"image {job.image_uri}: its bytes hash to {digest}, the catalogue says {job.image_sha256}; "
            "the file changed after import, re-import the product",
            permanent=True,
        )
    try:
        image = decode_image(data, source=job.image_uri)
    except ImageError as error:
        raise ItemFailure(f"decode: {error}", permanent=True) from error
    return Prepared(job, digest, model.preprocess(image))


def encode(model: ShopEncoder, items: Sequence[Prepared]) -> list[torch.Tensor | ItemFailure]:
    """One forward pass for the batch; item by item only when the batch as a whole fails."""
    try:
        return list(_vectors(model, items))
    except Exception as error:  # e.g. out of memory, or one input the network rejects
        if len(items) == 1:
            return [ItemFailure(f"encode: {error!r}", permanent=False)]
        log.warning("batch of %d failed to encode (%r); encoding item by item", len(items), error)
        return [result for item in items for result in encode(model, [item])]


def _vectors(model: ShopEncoder, items: Sequence[Prepared]) -> torch.Tensor:
    encoding = model.encode_shop(torch.stack([item.pixels for item in items]), [item.job.tags for item in items])
    vectors: torch.Tensor = encoding.vectors  # type: ignore[attr-defined]
    return vectors


class BatchWriter:
    """Writes batches (`jobs.complete_batch`) on one thread, one write in flight: `write` waits for the
    previous batch's write, then starts this one's and returns. `close` (or leaving the `with`) waits for
    the last. A batch's `done` and `stale` counts are final once its write is waited for; `on_written`
    hears how many jobs each write finished."""

    def __init__(self, engine: Engine, worker: str, on_written: Callable[[int], None] = lambda done: None) -> None:
        self.engine, self.worker, self.on_written = engine, worker, on_written
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="ynet-writer")
        self._in_flight: tuple[Future[set[int]], int, BatchResult] | None = None

    def write(self, finished: Sequence[jobs.Finished], result: BatchResult) -> None:
        self.wait()
        future = self._thread.submit(jobs.complete_batch, self.engine, self.worker, finished)
        self._in_flight = (future, len(finished), result)

    def wait(self) -> None:
        if self._in_flight is None:
            return
        future, written, result = self._in_flight
        self._in_flight = None
        done = future.result()
        result.tally(written, done)
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
) -> BatchResult:
    """Embed claimed jobs and record each outcome; never raises for a single item's failure. With a
    `writer` the embeddings are written behind the caller's back (counts final after `writer.wait`)."""
    result = BatchResult(claimed=len(batch))
    prepared: list[Prepared] = []
    for job in batch:
        try:
            prepared.append(prepare(job, model, fetch))
        except ItemFailure as failure:
            _record_failure(engine, job, worker, failure, result)
    if not prepared:
        return result
    finished = []
    for item, outcome in zip(prepared, encode(model, prepared), strict=True):
        if isinstance(outcome, ItemFailure):
            _record_failure(engine, item.job, worker, outcome, result)
        else:
            finished.append(jobs.Finished(item.job, outcome.numpy(), item.sha256))
    if writer is None:
        result.tally(len(finished), jobs.complete_batch(engine, worker, finished))
    else:
        writer.write(finished, result)
    return result


def _record_failure(engine: Engine, job: ClaimedJob, worker: str, failure: ItemFailure, result: BatchResult) -> None:
    state = jobs.fail(engine, job, worker, str(failure), permanent=failure.permanent)
    log.info("job %s (product %s) failed, now %s: %s", job.id, job.product_id, state, failure)
    result.errors.append(f"job {job.id}: {failure}")
    if state == "dead":
        result.dead += 1
    elif state == "retry":
        result.retry += 1
    else:
        result.stale += 1


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
) -> BatchResult:
    """Claim up to `batch_size` ready jobs (of one model) and embed them; `claimed == 0` means no work.

    The first job is claimed alone: a retried one is embedded alone (see the module's notes). Otherwise
    the rest of the batch is filled with first attempts only, so no retried job shares a batch's fate.
    With a `writer`, the batch is written on its thread (the returned counts are final after its `wait`).
    """
    batch = jobs.claim(engine, worker, 1, lease=lease, model_id=model_id)
    if batch and batch[0].attempts == 1 and batch_size > 1:
        batch += jobs.claim(engine, worker, batch_size - 1, lease=lease, model_id=model_id, first_attempts_only=True)
    elif batch and writer is not None:
        writer.wait()  # a retried job may kill the process: no other batch's write may go down with it
    return embed_batch(engine, model, batch, worker, fetch=fetch, writer=writer)
