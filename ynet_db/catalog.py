"""Catalogue import: products in from CSV or JSON Lines, idempotent on the shop's id.

Every row is validated before anything is written; good rows are upserted in batches, each batch one
transaction, and bad rows are reported with their line number and reason. Re-importing the same file
changes nothing; a changed image (by content hash) or changed tags make embedding work through the
database triggers, a changed price or title does not.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, literal_column, or_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError

from ynet_db.db.models import Product
from ynet_db.fetch import read_local_file
from ynet_db.fetch_policy import REFUSED_ADDRESS, FetchPolicy
from ynet_db.image_uri import validate_image_uri
from ynet_db.images import ImageError

FIELDS = ("id", "title", "category", "tags", "image", "price", "stock")
MAX_ID_LENGTH = 200
MAX_TAG_LENGTH = 200
TAG_PATTERN = re.compile(r"^[^\x00-\x1f\x7f]+$")


class RowError(ValueError):
    """A catalogue row that cannot be imported; the message says why."""


@dataclass(frozen=True)
class CatalogRow:
    external_id: str
    title: str
    category: str
    tags: tuple[str, ...]
    image_uri: str
    image_sha256: str | None
    price: Decimal | None
    stock: int | None
    extra: dict[str, Any]

    def values(self) -> dict[str, Any]:
        return {
            "external_id": self.external_id,
            "title": self.title,
            "category": self.category,
            "tags": list(self.tags),
            "image_uri": self.image_uri,
            "image_sha256": self.image_sha256,
            "price": self.price,
            "stock": self.stock,
            "extra": self.extra,
        }


@dataclass(frozen=True)
class Rejection:
    line: int
    external_id: str | None
    reason: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f" (id {self.external_id!r})" if self.external_id else "")
        return f"{where}: {self.reason}"


@dataclass
class ImportSummary:
    source: Path
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.added + self.updated + self.unchanged + len(self.rejected)

    def __str__(self) -> str:
        return (
            f"{self.source}: {self.total} rows: {self.added} added, {self.updated} updated, "
            f"{self.unchanged} unchanged, {len(self.rejected)} rejected"
        )


# -- reading ------------------------------------------------------------------------------------


def read_records(path: Path) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    """(line number, raw record or the reason it could not be read) for each row of a CSV or JSONL file."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        yield from _read_csv(path)
    elif suffix in (".jsonl", ".ndjson", ".json"):
        yield from _read_jsonl(path)
    else:
        raise RowError(f"{path}: unknown catalogue format {suffix!r}; use .csv or .jsonl (JSON Lines)")


def _read_csv(path: Path) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = {"id", "category", "image"} - set(reader.fieldnames or ())
        if missing:
            raise RowError(f"{path}: the header lacks the column(s) {', '.join(sorted(missing))}")
        line = reader.line_num
        for record in reader:
            start, line = line + 1, reader.line_num
            if None in record:
                yield start, RowError(f"{len(record[None])} more fields than the header has")  # type: ignore[index]
                continue
            yield start, {key: value for key, value in record.items() if value not in (None, "")}


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    with path.open(encoding="utf-8-sig") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as error:
                yield number, RowError(f"not valid JSON ({error.msg} at column {error.colno})")
                continue
            if not isinstance(record, dict):
                yield number, RowError(f"expected a JSON object, got {type(record).__name__}")
                continue
            yield number, record


# -- validating ---------------------------------------------------------------------------------


def parse_record(record: dict[str, Any], base_dir: Path, policy: FetchPolicy | None = None) -> CatalogRow:
    """Validate one raw record; image paths are resolved against `base_dir` and hashed, under `policy`
    (default: no local file outside `base_dir`, URLs only to public addresses)."""
    external_id = _required_text(record, "id")
    if len(external_id) > MAX_ID_LENGTH:
        raise RowError(f"id is longer than {MAX_ID_LENGTH} characters")
    policy = (policy or FetchPolicy()).or_root(base_dir)
    image_uri, image_sha256 = _image(_required_text(record, "image"), base_dir, policy)
    return CatalogRow(
        external_id=external_id,
        title=str(record.get("title", "")).strip(),
        category=_required_text(record, "category"),
        tags=parse_tags(record.get("tags", [])),
        image_uri=image_uri,
        image_sha256=image_sha256,
        price=_price(record.get("price")),
        stock=_stock(record.get("stock")),
        extra={key: value for key, value in record.items() if key not in FIELDS},
    )


def _required_text(record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    if value is None or not str(value).strip():
        raise RowError(f"missing {key}")
    if not isinstance(value, (str, int)):
        raise RowError(f"{key} must be text, got {type(value).__name__}")
    return str(value).strip()


def parse_tags(value: Any) -> tuple[str, ...]:
    """Tags as a JSON list, or in CSV as 'a|b|c' or a JSON array; sorted and de-duplicated."""
    if isinstance(value, str):
        value = _tags_from_text(value)
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise RowError("unreadable tags: expected a list of strings")
    tags = {tag.strip() for tag in value if tag.strip()}
    for tag in tags:
        if len(tag) > MAX_TAG_LENGTH or not TAG_PATTERN.match(tag):
            raise RowError(f"unreadable tag {tag[:40]!r}: control characters or over {MAX_TAG_LENGTH} characters")
    return tuple(sorted(tags))


def _tags_from_text(text: str) -> Any:
    text = text.strip()
    if not text.startswith("["):
        return text.split("|")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise RowError(f"unreadable tags: {text[:40]!r} is not a JSON array ({error.msg})") from None


def _image(location: str, base_dir: Path, policy: FetchPolicy) -> tuple[str, str | None]:
    """The stored image URI and, for local files, the content hash (remote ones are hashed on fetch)."""
    try:
        uri = validate_image_uri(location)
        if not uri.is_local:
            if policy.literal_refused(uri.host):  # a name is checked when a worker resolves it
                raise ImageError(location, REFUSED_ADDRESS)
            return location, None
        assert uri.path is not None
        path = uri.path.expanduser()
        path = path if path.is_absolute() else base_dir / path
        real = policy.local_path(path, location)
        if not real.exists():
            raise RowError(f"image not found: {path.absolute()}")
        return str(real), hashlib.sha256(read_local_file(real, location, policy)).hexdigest()
    except ImageError as error:
        raise RowError(str(error)) from None


def _price(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        price = Decimal(str(value))
    except InvalidOperation:
        raise RowError(f"price {value!r} is not a number") from None
    if not price.is_finite() or price < 0:
        raise RowError(f"price {value!r} must be a non-negative number")
    return price


def _stock(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise RowError(f"stock {value!r} is not a whole number") from None


def validate(path: Path, policy: FetchPolicy | None = None) -> Iterator[tuple[int, CatalogRow | Rejection]]:
    """Each row of the file, parsed, or rejected with its reason; later duplicates of an id are rejected.
    Local images are read under `policy`, by default (and when it has no root) only under the file's folder."""
    policy = (policy or FetchPolicy.from_env()).or_root(path.parent)
    first_seen: dict[str, int] = {}
    for line, record in read_records(path):
        if isinstance(record, RowError):
            yield line, Rejection(line, None, str(record))
            continue
        raw_id = record.get("id")
        external_id = str(raw_id).strip() if isinstance(raw_id, (str, int)) else None
        try:
            row = parse_record(record, path.parent, policy)
        except RowError as error:
            yield line, Rejection(line, external_id, str(error))
            continue
        if row.external_id in first_seen:
            yield line, Rejection(line, row.external_id, f"duplicate id, first on line {first_seen[row.external_id]}")
            continue
        first_seen[row.external_id] = line
        yield line, row


# -- writing ------------------------------------------------------------------------------------


def _upsert_statement(rows: list[dict[str, Any]]) -> Any:
    statement = insert(Product).values(rows)
    incoming = statement.excluded
    changed = or_(
        *(
            getattr(Product, column).is_distinct_from(getattr(incoming, column))
            for column in ("title", "category", "tags", "image_uri", "image_sha256", "price", "stock", "extra")
        )
    )
    return statement.on_conflict_do_update(
        index_elements=[Product.source, Product.external_id],
        set_={column: getattr(incoming, column) for column in rows[0] if column != "external_id"},
        where=changed,
        # xmax is 0 for a freshly inserted row version; unchanged rows are not returned at all.
    ).returning(Product.external_id, literal_column("(xmax = 0)").label("inserted"))


def _write_batch(engine: Engine, batch: list[tuple[int, CatalogRow]], summary: ImportSummary) -> None:
    try:
        with engine.begin() as connection:
            result = connection.execute(_upsert_statement([row.values() for _, row in batch])).all()
    except DBAPIError as error:
        if len(batch) == 1:
            line, row = batch[0]
            reason = str(error.orig).splitlines()[0] if error.orig else str(error)
            summary.rejected.append(Rejection(line, row.external_id, f"the database refused the row: {reason}"))
            return
        # One row the database refuses must not sink its batch: write them one by one instead.
        for item in batch:
            _write_batch(engine, [item], summary)
        return
    inserted = sum(1 for _, was_inserted in result if was_inserted)
    summary.added += inserted
    summary.updated += len(result) - inserted
    summary.unchanged += len(batch) - len(result)


def import_catalog(
    engine: Engine,
    path: Path,
    *,
    batch_size: int = 500,
    progress: Callable[[int], None] | None = None,
    policy: FetchPolicy | None = None,
) -> ImportSummary:
    """Import a CSV or JSON Lines catalogue; `progress` is called with the number of rows done. Local
    images are read under `policy` (default: the environment's settings), or under the file's folder
    when the policy has no root."""
    summary = ImportSummary(path)
    batch: list[tuple[int, CatalogRow]] = []
    for line, item in validate(path, policy):
        if isinstance(item, Rejection):
            summary.rejected.append(item)
        else:
            batch.append((line, item))
        if len(batch) >= batch_size:
            _write_batch(engine, batch, summary)
            batch = []
        if progress is not None:
            progress(1)
    if batch:
        _write_batch(engine, batch, summary)
    return summary


def count_rows(path: Path) -> int:
    """Rows in the file, for a progress bar (CSV header excluded; quoted newlines may over-count)."""
    with path.open("rb") as handle:
        lines = sum(1 for line in handle if line.strip())
    return max(lines - 1, 0) if path.suffix.lower() == ".csv" else lines


def write_rejections(rejections: Iterable[Rejection], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["line", "id", "reason"])
        for rejection in rejections:
            writer.writerow([rejection.line, rejection.external_id or "", rejection.reason])
