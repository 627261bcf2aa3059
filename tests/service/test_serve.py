"""`ynet-db serve` as a backend meets it: a real server process, the real database, real HTTP."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator

import pytest
from catalogue_vectors import photo
from loopback_servers import Loopback, loopback, png_bytes
from prometheus_client.parser import text_string_to_metric_families
from serve_process import Reply, ServeProcess
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from ynet_db.images.policy import REFUSED_ADDRESS
from ynet_db.nn.model import RetrievalModel
from ynet_db.orm import product_by_external_id, similar_products
from ynet_db.search.query import search


@pytest.fixture
def images() -> Iterator[Loopback]:
    with loopback() as server:
        yield server


def png(seed: int) -> bytes:
    out = io.BytesIO()
    photo(seed).save(out, format="PNG")
    return out.getvalue()


def ids(reply: Reply) -> list[str]:
    assert reply.status == 200, reply.body
    return [row["external_id"] for row in reply.json()["rows"]]


def test_search_by_upload_gives_what_the_python_api_gives(
    served: ServeProcess, served_engine: Engine, default_model: RetrievalModel
) -> None:
    reply = served.post_form("/search", {"k": "5", "filters": '{"category": "dress"}'}, {"image": png(4)})
    expected = search(served_engine, png(4), k=5, filters={"category": "dress"}, model=default_model)
    assert ids(reply) == [row.external_id for row in expected.rows]
    body = reply.json()
    assert body["model_version"] == default_model.version and body["path"] == expected.path
    assert body["short"] is True and body["candidates_returned"] == 30  # half of the 60 products are dresses
    assert {row["category"] for row in body["rows"]} == {"dress"}
    assert set(body["timings_ms"]) == {"encode", "prefilter", "rerank"}


def test_search_by_url_fetches_under_the_policy(
    served: ServeProcess, images: Loopback, served_engine: Engine, default_model: RetrievalModel
) -> None:
    reply = served.post_json("/search", {"url": images.url("/ok.png"), "k": 3, "rerank": False})
    expected = search(served_engine, png_bytes(), k=3, rerank=False, model=default_model)
    assert ids(reply) == [row.external_id for row in expected.rows]
    assert images.hits["/ok.png"] == 1


@pytest.mark.parametrize(
    ("url", "error"),
    [
        (
            "http://169.254.169.254/latest/meta-data/",
            f"image http://169.254.169.254/latest/meta-data/: {REFUSED_ADDRESS}",
        ),
        ("file:///etc/passwd", "url: only http:// and https:// URLs are fetched"),
        ("/etc/passwd", "url: only http:// and https:// URLs are fetched"),
        (
            "gopher://example.com/x",
            "image gopher://example.com/x: has unsupported scheme 'gopher'; use a path, file://, http:// or https://",
        ),
    ],
)
def test_a_url_the_policy_refuses_is_a_422_naming_the_url(served: ServeProcess, url: str, error: str) -> None:
    reply = served.post_json("/search", {"url": url})
    assert (reply.status, reply.json()) == (422, {"error": error, "field": "url"})


def test_a_url_that_is_not_an_image_says_so(served: ServeProcess, images: Loopback) -> None:
    url = images.url("/secret")
    reply = served.post_json("/search", {"url": url})
    assert reply.status == 422 and reply.json()["field"] == "url"
    assert reply.json()["error"].startswith(f"image {url}: is not an image in a supported format")


JSON_ERRORS = [
    ({"url": "http://127.0.0.1/x.png", "k": 0}, "k", "k: Input should be greater than or equal to 1"),
    ({"url": "http://127.0.0.1/x.png", "k": 201}, "k", "k: Input should be less than or equal to 200"),
    ({"url": "http://127.0.0.1/x.png", "k": "5"}, "k", "k: Input should be a valid integer"),
    ({"url": "http://127.0.0.1/x.png", "k": True}, "k", "k: Input should be a valid integer"),
    (
        {"url": "http://127.0.0.1/x.png", "k": 50, "candidates": 10},
        "candidates",
        "candidates: must be at least k (50), got 10",
    ),
    ({"url": "http://127.0.0.1/x.png", "rerank": "yes"}, "rerank", "rerank: Input should be a valid boolean"),
    ({"url": "http://127.0.0.1/x.png", "colour": "red"}, "colour", "colour: Extra inputs are not permitted"),
    ({"k": 5}, "url", "url: Field required"),
    ({"url": ""}, "url", "url: String should have at least 1 character"),
    (
        {"url": "http://127.0.0.1/x.png", "filters": {"colour": "red"}},
        "filters",
        "unknown filter field 'colour'; allowed: category, external_id, in_stock, price, tags",
    ),
    (
        {"url": "http://127.0.0.1/x.png", "filters": {"tags": {"any": ["a\x00b"]}}},
        "filters",
        "filter 'tags': strings may not contain NUL bytes",
    ),
    (
        {"url": "http://127.0.0.1/x.png", "filters": {"price": {"gte": "cheap"}}},
        "filters",
        "filter 'price': expected a number, got str",
    ),
    ({"url": "http://127.0.0.1/x.png", "filters": ["dress"]}, "filters", "filters: Input should be a valid dictionary"),
]


@pytest.mark.parametrize(("body", "field", "error"), JSON_ERRORS)
def test_every_bad_json_value_is_a_422_naming_its_field(
    served: ServeProcess, body: dict[str, object], field: str, error: str
) -> None:
    reply = served.post_json("/search", body)
    assert (reply.status, reply.json()) == (422, {"error": error, "field": field})


def test_a_body_that_is_not_json_or_not_an_object(served: ServeProcess) -> None:
    reply = served.request("POST", "/search", b'{"url": ', {"Content-Type": "application/json"})
    assert reply.status == 400 and reply.json()["field"] is None
    assert reply.json()["error"].startswith("the body is not valid JSON")
    reply = served.request("POST", "/search", b'"\\ud800"', {"Content-Type": "application/json"})
    assert reply.status == 400 and "surrogates not allowed" in reply.json()["error"]
    reply = served.request("POST", "/search", b"[1, 2]", {"Content-Type": "application/json"})
    assert (reply.status, reply.json()) == (422, {"error": "the body must be a JSON object, got list", "field": None})
    reply = served.request("POST", "/search", b'{"url": NaN}', {"Content-Type": "application/json"})
    assert reply.status == 400 and "NaN is not a number JSON allows" in reply.json()["error"]


def test_a_body_of_another_type_is_a_415(served: ServeProcess) -> None:
    reply = served.request("POST", "/search", b"url=x", {"Content-Type": "application/x-www-form-urlencoded"})
    assert reply.status == 415 and reply.json() == {
        "error": "send the image as multipart/form-data (field 'image') or a URL as application/json",
        "field": "Content-Type",
    }


FORM_ERRORS = [
    ({"k": "5"}, {}, 422, "image", "image: attach the photo as a file field named 'image'"),
    ({"image": "not a file"}, {}, 422, "image", "image: attach the photo as a file field named 'image'"),
    (
        {},
        {"image": b"GIF89a nonsense"},
        422,
        "image",
        "image upload: is not an image in a supported format; accepted formats: JPEG, PNG, WEBP, GIF, BMP, TIFF",
    ),
    ({}, {"image": b""}, 422, "image", "image upload: is empty (0 bytes); re-upload or re-download it"),
    ({"k": "abc"}, {"image": b"x"}, 422, "k", "k: expected a whole number, got 'abc'"),
    ({"k": "-3"}, {"image": b"x"}, 422, "k", "k: expected a whole number, got '-3'"),
    ({"k": "500"}, {"image": b"x"}, 422, "k", "k: must be between 1 and 200, got 500"),
    ({"candidates": "0"}, {"image": b"x"}, 422, "candidates", "candidates: must be between 1 and 1000, got 0"),
    ({"rerank": "maybe"}, {"image": b"x"}, 422, "rerank", "rerank: expected true or false, got 'maybe'"),
    ({"filters": "{"}, {"image": b"x"}, 422, "filters", None),
    (
        {"filters": "[1]"},
        {"image": b"x"},
        422,
        "filters",
        "filters: expected a JSON object of field to condition, got list",
    ),
    (
        {"filters": '{"price": {"lt": 1e999}}'},
        {"image": b"x"},
        422,
        "filters",
        "filter 'price': expected a finite number, got inf",
    ),
    (
        {"colour": "red"},
        {"image": b"x"},
        422,
        "colour",
        "unknown field 'colour'; allowed: image, k, candidates, rerank, filters",
    ),
]


@pytest.mark.parametrize(("fields", "files", "status", "field", "error"), FORM_ERRORS)
def test_every_bad_form_value_is_a_4xx_naming_its_field(
    served: ServeProcess, fields: dict[str, str], files: dict[str, bytes], status: int, field: str, error: str | None
) -> None:
    reply = served.post_form("/search", fields, files)
    assert reply.status == status and reply.json()["field"] == field, reply.body
    if error is not None:
        assert reply.json()["error"] == error
    else:
        assert reply.json()["error"].startswith(f"{field} is not valid JSON")


def test_an_upload_over_the_limit_is_a_413_before_it_is_decoded(served: ServeProcess) -> None:
    limit = 256 * 1024  # YNET_MAX_UPLOAD_BYTES of the served process
    reply = served.post_form("/search", {}, {"image": b"\xff" * (limit + 1)})
    assert (reply.status, reply.json()) == (
        413,
        {"error": f"image: {limit + 1} bytes, over the limit of {limit}", "field": "image"},
    )
    huge = b"\xff" * (2 * limit)
    reply = served.post_form("/search", {}, {"image": huge})
    assert reply.status == 413 and reply.json()["field"] == "image"
    assert reply.json()["error"].startswith("the request body declares")


def test_a_malformed_multipart_body_is_a_400(served: ServeProcess) -> None:
    reply = served.request("POST", "/search", b"--x\r\nnonsense", {"Content-Type": "multipart/form-data"})
    assert reply.status == 400 and reply.json()["field"] is None
    assert reply.json()["error"].startswith("the multipart body cannot be read")


def test_routing_errors_are_json_too(served: ServeProcess) -> None:
    assert (served.get("/nowhere").status, served.get("/nowhere").json()) == (
        404,
        {"error": "Not Found", "field": None},
    )
    reply = served.get("/search")
    assert (reply.status, reply.json()) == (405, {"error": "Method Not Allowed", "field": None})


def hold_url_searches(served: ServeProcess, images: Loopback, count: int) -> tuple[list[threading.Thread], list[Reply]]:
    """`count` searches by URL whose fetches the loopback server holds (first byte out, then nothing)."""
    replies: list[Reply] = []
    threads = [
        threading.Thread(target=lambda: replies.append(served.post_json("/search", {"url": images.url("/held")})))
        for _ in range(count)
    ]
    for thread in threads:
        thread.start()
    for _ in range(count):
        assert images.held.acquire(timeout=60), "the held fetch never started"
    return threads, replies


def release(images: Loopback, threads: list[threading.Thread], replies: list[Reply]) -> None:
    images.release.set()
    for thread in threads:
        thread.join(60)
    # The held bodies never completed: each search by URL is refused on its field, none lost.
    assert [(reply.status, reply.json()["field"]) for reply in replies] == [(422, "url")] * len(threads)


def test_a_slow_url_does_not_hold_a_search_slot(served: ServeProcess, images: Loopback) -> None:
    # The served process has one search slot and does not wait for one: were the fetch held inside it,
    # the upload below would be answered 429.
    threads, replies = hold_url_searches(served, images, 1)
    reply = served.post_form("/search", {"k": "3"}, {"image": png(1)})
    release(images, threads, replies)
    assert reply.status == 200, reply.body
    assert len(reply.json()["rows"]) == 3


def test_a_full_service_answers_429_with_retry_after(served: ServeProcess, images: Loopback) -> None:
    # One search slot gives four fetch slots; the loopback server holds four fetches until released.
    threads, replies = hold_url_searches(served, images, 4)
    reply = served.post_json("/search", {"url": images.url("/ok.png")})
    release(images, threads, replies)
    assert (reply.status, reply.headers["retry-after"]) == (429, "1")
    assert reply.json() == {"error": "all 4 image fetch slots are busy; retry after 1 s", "field": None}
    assert images.hits["/ok.png"] == 0, "refused before any fetch"


# -- similar products ---------------------------------------------------------------------------------


def test_similar_products_are_the_orm_neighbours(served: ServeProcess, served_engine: Engine) -> None:
    reply = served.get("/products/p3/similar?k=4&filters=%7B%22category%22%3A%22skirt%22%7D")
    with Session(served_engine) as session, session.begin():
        product = product_by_external_id(session, "p3")
        expected = [other.external_id for other, _ in similar_products(session, product, 4, {"category": "skirt"})]
    assert ids(reply) == expected and "p3" not in expected
    assert reply.json()["external_id"] == "p3" and reply.json()["source"] == "import"


@pytest.fixture
def extra_products(served_engine: Engine) -> Iterator[None]:
    """'lonely' has no embedding; 'twin' is used by two sources."""
    with served_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO ynet.products (external_id, source, category, image_uri) VALUES "
                "('lonely', 'import', 'dress', '/x.jpg'), ('twin', 'import', 'dress', '/y.jpg'), "
                "('twin', 'public.items', 'dress', '/z.jpg')"
            )
        )
    yield
    with served_engine.begin() as conn:
        conn.execute(text("DELETE FROM ynet.products WHERE external_id IN ('lonely', 'twin')"))


@pytest.mark.parametrize(
    ("path", "status", "field", "error"),
    [
        ("/products/nope/similar", 404, "external_id", "no product with external id 'nope'"),
        ("/products/p1/similar?source=public.items", 404, "source", "no product with external id 'p1' in public.items"),
        (
            "/products/lonely/similar",
            409,
            "external_id",
            "product 'lonely' has no embedding under the active model yet",
        ),
        (
            "/products/twin/similar",
            409,
            "source",
            "external id 'twin' is used by several sources (import, public.items): pass source=one of them",
        ),
        ("/products/p1/similar?k=0", 422, "k", "k: Input should be greater than or equal to 1"),
        (
            "/products/p1/similar?k=ten",
            422,
            "k",
            "k: Input should be a valid integer, unable to parse string as an integer",
        ),
        ("/products/p1/similar?filters=%7B", 422, "filters", None),
        (
            "/products/p1/similar?filters=%7B%22in_stock%22%3A1%7D",
            422,
            "filters",
            "filter 'in_stock': expected true or false, got int",
        ),
        ("/products/a%00b/similar", 422, "external_id", "external_id: may not contain NUL characters"),
        ("/products/p1/similar?source=", 422, "source", "source: String should have at least 1 character"),
    ],
)
def test_every_bad_similar_request_is_a_4xx_naming_its_field(
    served: ServeProcess, extra_products: None, path: str, status: int, field: str, error: str | None
) -> None:
    reply = served.get(path)
    assert reply.status == status and reply.json()["field"] == field, reply.body
    if error is not None:
        assert reply.json()["error"] == error
    else:
        assert reply.json()["error"].startswith("filters is not valid JSON")


def test_the_twin_is_found_by_its_source(served: ServeProcess, extra_products: None) -> None:
    reply = served.get("/products/twin/similar?source=public.items")
    assert reply.status == 409 and reply.json()["error"] == "product 'twin' has no embedding under the active model yet"


# -- operations ---------------------------------------------------------------------------------------


def test_health_status_and_metrics(served: ServeProcess, default_model: RetrievalModel) -> None:
    health = served.get("/health")
    assert health.status == 200, health.body
    assert health.json()["status"] == "ok"
    assert health.json()["checks"]["model"] == {"ok": True, "detail": f"active model {default_model.version}"}
    status = served.get("/status").json()
    assert status["products"] == 60 and status["models"][0]["embedded"] == 60
    assert status["models"][0]["index"] == {"m": 16, "ef_construction": 64, "element": "vector"}
    assert status["warnings"] == []
    assert [window["window_s"] for window in status["throughput"]] == [60.0, 300.0]
    served.post_form("/search", {"k": "2"}, {"image": png(2)})
    metrics = served.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics.body.decode())
        for sample in family.samples
    }
    assert samples[("ynet_database_up", ())] == 1
    assert samples[("ynet_products", ())] == 60
    assert (
        samples[
            (
                "ynet_active_model_info",
                (("name", default_model.version.split("@")[0]), ("version", default_model.version)),
            )
        ]
        == 1
    )
    assert samples[("ynet_jobs", (("state", "done"),))] == 0
    searched = sum(v for (name, _), v in samples.items() if name == "ynet_search_queries_total")
    assert searched >= 1
    ok = samples[("ynet_http_requests_total", (("method", "POST"), ("route", "/search"), ("status", "200")))]
    assert ok >= 1
    assert samples[("ynet_search_stage_seconds_count", (("stage", "encode"),))] == searched


def test_no_active_model_is_a_503_saying_so(served: ServeProcess, served_engine: Engine) -> None:
    with served_engine.begin() as conn:
        conn.execute(text("UPDATE ynet.models SET state = 'registered' WHERE state = 'active'"))
    try:
        search_reply = served.post_form("/search", {}, {"image": png(1)})
        similar_reply = served.get("/products/p1/similar")
        health = served.get("/health")
    finally:
        with served_engine.begin() as conn:
            conn.execute(text("UPDATE ynet.models SET state = 'active'"))
    message = "no model is active: run `ynet-db model activate NAME` once its embeddings exist"
    assert (search_reply.status, search_reply.json()) == (503, {"error": message, "field": None})
    assert (similar_reply.status, similar_reply.json()) == (503, {"error": message, "field": None})
    assert health.status == 503 and health.json()["checks"]["model"] == {"ok": False, "detail": message}


def test_the_schema_documents_every_route(served: ServeProcess) -> None:
    schema = served.get("/openapi.json").json()
    assert set(schema["paths"]) == {"/search", "/products/{external_id}/similar", "/health", "/status", "/metrics"}
    body = schema["paths"]["/search"]["post"]["requestBody"]["content"]
    assert set(body) == {"multipart/form-data", "application/json"}
