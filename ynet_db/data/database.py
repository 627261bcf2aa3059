"""The shop's catalogue in the database (`ynet.products`) as training products, its photos copied locally.

Training reads each photo many times (trunk features, made street views, the held-out check), so every
product's image is fetched once, under the fetch policy the workers apply (YNET_IMAGE_ROOTS,
YNET_ALLOWED_HOSTS: docs/design.md#7-inputs-are-untrusted), checked by the safe decoder, and kept in a
folder under its content hash. A product whose image cannot be fetched or decoded is skipped and listed
with the reason, never dropped silently: a shop must know which products its model never saw.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from tqdm import tqdm

from ynet_db.data.records import ImageRef, Product
from ynet_db.db import tables
from ynet_db.images.decode import ImageError, decode_image
from ynet_db.images.fetch import fetch_image_bytes
from ynet_db.images.policy import FetchPolicy

FETCH_THREADS = 8
"""Fetching is waiting on disks and servers, not computing: a few at a time."""


@dataclass(frozen=True)
class CatalogueRow:
    key: str
    """The product's name in training: its external id, prefixed by its source when it is an attached table's."""
    category: str
    tags: tuple[str, ...]
    image_uri: str


@dataclass(frozen=True)
class DatabaseCatalogue:
    products: dict[str, Product]
    skipped: list[str]
    """'key: image URI: reason' for each product left out."""
    rows: int


def catalogue_rows(engine: Engine) -> Iterator[CatalogueRow]:
    """Every product, in id order."""
    query = select(
        tables.Product.external_id,
        tables.Product.source,
        tables.Product.category,
        tables.Product.tags,
        tables.Product.image_uri,
    ).order_by(tables.Product.id)
    with Session(engine) as session:
        for external_id, source, category, tags, image_uri in session.execute(query.execution_options(yield_per=1000)):
            key = external_id if source == "import" else f"{source}:{external_id}"
            yield CatalogueRow(key, category, tuple(tags or ()), image_uri)


def local_copy(row: CatalogueRow, policy: FetchPolicy, folder: Path) -> Path:
    """The row's image, fetched and decoded once, written as `folder/<sha256>.image`; `ImageError` otherwise."""
    data = fetch_image_bytes(row.image_uri, policy=policy)
    decode_image(data, source=row.image_uri)  # refuse what training could not read, with its reason
    path = folder / f"{hashlib.sha256(data).hexdigest()}.image"
    if not path.is_file():
        partial = path.with_name(f"{path.name}.{id(row)}.partial")  # threads may write the same photo
        partial.write_bytes(data)
        partial.replace(path)
    return path


def read_catalogue(engine: Engine, policy: FetchPolicy, folder: Path, *, progress: bool = True) -> DatabaseCatalogue:
    """The database's products with a readable image, their photos copied into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = list(catalogue_rows(engine))
    products: dict[str, Product] = {}
    skipped: list[str] = []

    def fetch(row: CatalogueRow) -> Path | str:
        try:
            return local_copy(row, policy, folder)
        except ImageError as error:  # its text names the image: 'image URI: reason'
            return f"{row.key}: {error}"
        except (ValueError, OSError) as error:  # e.g. a full disk for the copy
            return f"{row.key}: image {row.image_uri}: {error}"

    with ThreadPoolExecutor(FETCH_THREADS) as pool:
        copies = tqdm(pool.map(fetch, rows), total=len(rows), desc="catalogue photos", disable=not progress)
        for row, copy in zip(rows, copies, strict=True):
            if isinstance(copy, str):
                skipped.append(copy)
            elif row.key in products:  # only an attached table's id shaped like 'source:id' can do this
                skipped.append(f"{row.key}: another product has the same name")
            else:
                products[row.key] = Product(row.key, row.category, row.tags, (ImageRef(copy),))
    return DatabaseCatalogue(products, skipped, len(rows))
