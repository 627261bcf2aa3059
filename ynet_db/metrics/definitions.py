"""Every metric ynet-db exports, defined once (Prometheus naming: `ynet_` prefix, base units, `_total`).

Workers, the dispatcher and the HTTP service import the ones they update from here; docs/metrics.md says
what each means and which alerts to set. The gauges read from the database at scrape time (jobs by
state, the active model) are in `database.py`, the exposition (multiprocess mode, the port) in
`exposition.py`.

Under a Celery prefork worker with `--metrics-port` every process writes its values into a shared
directory (prometheus_client's multiprocess mode), so the parent reports what its children did:
`multiprocess_mode` says how a gauge's per-process values add up.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""One millisecond (a decode of a thumbnail) to 30 s (a batch of large images on a busy CPU)."""
CANDIDATE_COUNTS = (1, 5, 10, 20, 50, 100, 200, 256, 500, 1000)
"""Up to `filters.MAX_CANDIDATES`; 256 is the search API's default."""

EMBED_STAGES = ("fetch", "decode", "encode", "write")
SEARCH_STAGES = ("encode", "prefilter", "rerank")

# -- the embedding path (workers/tasks.py -> embed.py) ---------------------------------------------------

EMBEDDINGS_WRITTEN = Counter("ynet_embeddings_written_total", "Embeddings written back, each finishing its job.")
EMBED_STAGE_SECONDS = Histogram(
    "ynet_embed_stage_seconds",
    "Seconds per embedding stage: fetch and decode per image, encode and write per batch.",
    ["stage"],
    buckets=SECONDS,
)
EMBED_FAILURES = Counter(
    "ynet_embed_failures_total",
    "Items whose embedding failed, by the stage that failed (fetch, decode, prepare, encode).",
    ["stage"],
)

# -- the dispatcher (workers/dispatcher.py) ------------------------------------------------------------

DISPATCH_TASKS_SENT = Counter("ynet_dispatch_tasks_sent_total", "Embedding tasks the dispatcher sent to the broker.")
LEASES_EXPIRED = Counter(
    "ynet_jobs_lease_expired_total", "Jobs whose lease expired (a worker died or hung) and that went back to the queue."
)

# -- search (search.py, in the HTTP service or a search worker) ------------------------------------------

SEARCH_STAGE_SECONDS = Histogram(
    "ynet_search_stage_seconds",
    "Seconds per search stage and query: encode (the query's share of its batch), prefilter (SQL), rerank.",
    ["stage"],
    buckets=SECONDS,
)
SEARCH_QUERIES = Counter(
    "ynet_search_queries_total",
    "Queries answered, by prefilter path (ann: the HNSW index, exact: a scan) and whether CtxYNet re-ranked.",
    ["path", "reranked"],
)
SEARCH_SHORT = Counter(
    "ynet_search_short_total",
    "Queries whose prefilter returned fewer candidates than asked (the filter matched fewer).",
)
SEARCH_CANDIDATES = Histogram(
    "ynet_search_candidates", "Candidates the prefilter short-listed per query.", buckets=CANDIDATE_COUNTS
)

# -- the HTTP service (service/) ---------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "ynet_http_requests_total",
    "HTTP requests answered, by route template, method and status code.",
    ["route", "method", "status"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "ynet_http_request_seconds",
    "Seconds from request to response, by route template and method.",
    ["route", "method"],
    buckets=SECONDS,
)
HTTP_SEARCHES_IN_FLIGHT = Gauge(
    "ynet_http_searches_in_flight", "Searches holding a slot now.", multiprocess_mode="livesum"
)
HTTP_SEARCHES_REJECTED = Counter(
    "ynet_http_searches_rejected_total", "Searches answered 429 because every slot stayed busy past YNET_SEARCH_WAIT_S."
)
HTTP_FETCHES_IN_FLIGHT = Gauge(
    "ynet_http_fetches_in_flight", "Query image URLs being fetched now.", multiprocess_mode="livesum"
)
HTTP_FETCHES_REJECTED = Counter(
    "ynet_http_fetches_rejected_total",
    "Searches by URL answered 429 because every fetch slot stayed busy past YNET_SEARCH_WAIT_S.",
)


def observe_search(path: str, reranked: bool, short: bool, candidates: int, timings_ms: dict[str, float]) -> None:
    """One answered query (`search.SearchResult`'s fields, passed one by one so this module needs no search import)."""
    SEARCH_QUERIES.labels(path=path, reranked=str(reranked).lower()).inc()
    if short:
        SEARCH_SHORT.inc()
    SEARCH_CANDIDATES.observe(candidates)
    for stage in SEARCH_STAGES:
        if stage in timings_ms:
            SEARCH_STAGE_SECONDS.labels(stage=stage).observe(timings_ms[stage] / 1000)
