"""The fetch policy where images enter: catalogue import, the worker's fetch and search, on a real database."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from loopback_servers import Loopback, loopback
from PIL import Image
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from ynet_db.db.tables import EmbeddingJob, Model, Product
from ynet_db.images.policy import REFUSED_ADDRESS, REFUSED_FILE, FetchPolicy, FetchRefused
from ynet_db.ingestion.catalog import import_catalog
from ynet_db.ingestion.embed import run_once
from ynet_db.search.query import search


@pytest.fixture
def server() -> Iterator[Loopback]:
    with loopback() as running:
        yield running


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "shop"
    folder.mkdir()
    Image.new("RGB", (32, 32), (200, 0, 0)).save(folder / "red.png")
    Image.new("RGB", (32, 32), (0, 0, 200)).save(tmp_path / "outside.png")
    (folder / "escape.png").symlink_to(tmp_path / "outside.png")
    return folder


def write_catalogue(folder: Path, images: Sequence[str]) -> Path:
    path = folder / "catalogue.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "category", "image"])
        writer.writerows([f"p{i}", "dress", image] for i, image in enumerate(images))
    return path


# -- import -----------------------------------------------------------------------------------------------


def test_import_reads_images_only_under_the_catalogue_folder(
    engine: Engine, images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("YNET_IMAGE_ROOTS", raising=False)
    refused = ["/etc/hostname", "file:///etc/shadow", "../outside.png", "escape.png", "/proc/self/environ"]
    path = write_catalogue(images, ["red.png", (images / "red.png").as_uri().replace("file:", "FILE:"), *refused])
    summary = import_catalog(engine, path)
    assert summary.added == 2
    assert [(r.line, r.reason) for r in summary.rejected] == [
        (line, f"image {location}: {REFUSED_FILE}") for line, location in enumerate(refused, start=4)
    ]


def test_import_rejects_malformed_and_internal_urls_with_their_line(
    engine: Engine, images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("YNET_ALLOWED_HOSTS", raising=False)
    rows = [
        ("http://[::1/x.jpg", "is not a valid URL (Invalid IPv6 URL)"),
        ("http://shop.example:99999/x.jpg", "is not a valid URL (bad port: Port out of range 0-65535)"),
        ("http://shop example/x.jpg", "is not a valid URL (it contains a space); percent-encode it as %20"),
        ("http://" + "a" * 64 + ".example/x.jpg", "is not a valid URL (bad host name: encoding with 'idna' codec"),
        ("http://127.0.0.1:8080/x.jpg", REFUSED_ADDRESS),
        ("http://169.254.169.254/latest/meta-data/", REFUSED_ADDRESS),
        ("http://[::ffff:10.0.0.1]/x.jpg", REFUSED_ADDRESS),
    ]
    path = write_catalogue(images, ["https://shop.example/ok.jpg", *(location for location, _ in rows)])
    summary = import_catalog(engine, path)
    assert summary.added == 1
    assert [r.line for r in summary.rejected] == list(range(3, 3 + len(rows)))
    for rejection, (location, reason) in zip(summary.rejected, rows, strict=True):
        assert rejection.reason.startswith(f"image {location}: {reason}")
    monkeypatch.setenv("YNET_ALLOWED_HOSTS", "127.0.0.1")
    assert import_catalog(engine, write_catalogue(images, ["http://127.0.0.1:8080/x.jpg"])).rejected == []


def test_configured_roots_replace_the_catalogue_folder(engine: Engine, images: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    summary = import_catalog(engine, write_catalogue(images, ["red.png"]), policy=FetchPolicy(roots=(elsewhere,)))
    assert [r.reason for r in summary.rejected] == [f"image red.png: {REFUSED_FILE}"]


# -- the worker ------------------------------------------------------------------------------------------


@dataclass
class Encoding:
    vectors: torch.Tensor


class MeanColour:
    """A stand-in for the network (3 + 1 dimensions): enough to show which items were embedded."""

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(image, dtype=np.float32)).mean(dim=(0, 1)) / 255

    def encode_shop(self, pixels: torch.Tensor, tags: Sequence[Sequence[str]]) -> Encoding:
        return Encoding(torch.cat([pixels, torch.ones(len(pixels), 1)], dim=1))


def add_products(engine: Engine, uris: Sequence[str]) -> None:
    """As an attached table or a direct insert would: no import in between to check them."""
    with Session(engine) as session:
        session.add(Model(name="test", version="test@1", embedding_dim=4, weights_sha256="0" * 64, state="active"))
        session.flush()
        session.add_all(
            Product(external_id=f"p{i}", category="dress", tags=["color:red"], image_uri=uri)
            for i, uri in enumerate(uris)
        )
        session.commit()


def last_errors(engine: Engine) -> dict[str, str | None]:
    with Session(engine) as session:
        rows = session.execute(select(Product.image_uri, EmbeddingJob.last_error).join(EmbeddingJob.product))
        return {uri: error for uri, error in rows}


def test_the_worker_fetches_under_the_policy_and_its_errors_reveal_nothing(
    engine: Engine, images: Path, server: Loopback, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("YNET_IMAGE_ROOTS", str(images))
    monkeypatch.delenv("YNET_ALLOWED_HOSTS", raising=False)
    closed = Loopback()
    closed_port = closed.port
    closed.server_close()
    refused_urls = [server.url("/secret"), f"http://127.0.0.1:{closed_port}/secret", "http://[::1]:9/x.jpg"]
    refused_files = ["/etc/hostname", "/no/such/file.png", str(images / "escape.png"), str(images / "../outside.png")]
    malformed = "http://[::1/x.jpg"
    add_products(engine, [str(images / "red.png"), *refused_urls, *refused_files, malformed])

    result = run_once(engine, MeanColour(), "w1", batch_size=20)

    assert (result.claimed, result.done) == (9, 1)
    assert server.hits["/secret"] == 0
    errors = last_errors(engine)
    assert errors[str(images / "red.png")] is None
    for uri in refused_urls:
        assert errors[uri] == f"fetch: image {uri}: {REFUSED_ADDRESS}"
    for uri in refused_files:
        assert errors[uri] == f"fetch: image {uri}: {REFUSED_FILE}"
    assert errors[malformed] == f"fetch: image {malformed}: is not a valid URL (Invalid IPv6 URL)"


def test_the_worker_fetches_from_an_allowed_host(
    engine: Engine, server: Loopback, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("YNET_ALLOWED_HOSTS", "127.0.0.0/8")
    add_products(engine, [server.url("/ok.png")])
    assert run_once(engine, MeanColour(), "w1", batch_size=4).done == 1


# -- search ------------------------------------------------------------------------------------------------


class Unloaded:
    """A model that must not be reached: the policy refuses the query before any model work."""


@pytest.mark.parametrize("query", ["/etc/hostname", "file:///etc/passwd", "http://127.0.0.1:{port}/secret"])
def test_search_fetches_a_query_under_the_policy(
    engine: Engine, server: Loopback, query: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("YNET_IMAGE_ROOTS", raising=False)
    monkeypatch.delenv("YNET_ALLOWED_HOSTS", raising=False)
    with pytest.raises(FetchRefused):
        search(engine, query.format(port=server.port), model=Unloaded())  # type: ignore[arg-type]
    assert server.hits["/secret"] == 0
