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
from typing import Any, TextIO

from sqlalchemy import Engine, literal_column, or_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError

from ynet_db.db.tables import Product
from ynet_db.images.decode import ImageError
from ynet_db.images.fetch import read_local_file
from ynet_db.images.policy import REFUSED_ADDRESS, FetchPolicy
from ynet_db.images.uri import validate_image_uri

FIELDS = ("id", "title", "category", "tags", "image", "price", "stock")
MAX_ID_LENGTH = 200
MAX_CATEGORY_LENGTH = 200
MAX_TITLE_LENGTH = 1000
MAX_IMAGE_LOCATION_LENGTH = 4096
MAX_TAGS = 200
MAX_TAG_LENGTH = 200
MAX_STOCK = 2**31 - 1
"""ynet.products.stock is a PostgreSQL integer."""
MAX_LINE_CHARS = 1024 * 1024
"""A JSON Lines record longer than this is rejected unread (CSV fields are bounded by csv.field_size_limit)."""
MAX_JSON_DEPTH = 32
# No C0 or C1 control characters, DEL, or lone surrogates (undecodable bytes); a title may hold line breaks.
TEXT_PATTERN = re.compile(r"[^\x00-\x1f\x7f-\x9f\ud800-\udfff]+")
TITLE_PATTERN = re.compile(r"[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]+")
STOCK_PATTERN = re.compile(r"\s*[0-9]{1,10}\s*")
_SURROGATE = re.compile(r"[\udc80-\udcff]")
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_JSON_BRACKET = re.compile(r"[\[\]{}]")


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
    """(line number, raw record or the reason it could not be read) for each row of a CSV or JSONL file.

    Raises RowError only for what spoils the whole file (unknown format, a bad header); everything
    wrong with one line (bad UTF-8, broken JSON or CSV, an over-long field) is that line's rejection.
    """
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson", ".json"):
        raise RowError(f"{path}: unknown catalogue format {suffix!r}; use .csv or .jsonl (JSON Lines)")
    if not path.is_file():
        raise RowError(f"{path}: not a regular file")
    yield from _read_csv(path) if suffix == ".csv" else _read_jsonl(path)


def _open_text(path: Path, newline: str | None) -> TextIO:
    # Undecodable bytes become lone surrogates instead of an exception, so one bad line is one rejection.
    return path.open(encoding="utf-8-sig", errors="surrogateescape", newline=newline)


def _undecodable(text: str) -> RowError | None:
    match = _SURROGATE.search(text)
    if match is None:
        return None
    return RowError(f"not valid UTF-8 (byte 0x{ord(match.group()) - 0xDC00:02x} at character {match.start() + 1})")


def _read_csv(path: Path) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    with _open_text(path, newline="") as handle:
        reader = csv.reader(handle)
        header = _csv_header(path, reader)
        line = reader.line_num
        while True:
            start = line + 1
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as error:  # e.g. a field over csv.field_size_limit(): the reader goes on after it
                line = reader.line_num
                yield start, RowError(f"unreadable CSV ({error})")
                continue
            line = reader.line_num
            if fields:
                yield start, _csv_record(header, fields)


def _csv_header(path: Path, reader: Any) -> list[str]:
    try:
        header: list[str] = next(reader, [])
    except csv.Error as error:
        raise RowError(f"{path}: unreadable CSV header ({error})") from None
    if (bad := _undecodable(",".join(header))) is not None:
        raise RowError(f"{path}: the header is {bad}")
    missing = {"id", "category", "image"} - set(header)
    if missing:
        raise RowError(f"{path}: the header lacks the column(s) {', '.join(sorted(missing))}")
    first: dict[str, int] = {}
    for column, name in enumerate(header, start=1):
        if name in first:
            raise RowError(f"{path}: the header names the column {name!r} twice (columns {first[name]} and {column})")
        first[name] = column
    return header


def _csv_record(header: list[str], fields: list[str]) -> dict[str, Any] | RowError:
    if len(fields) > len(header):
        return RowError(f"{len(fields) - len(header)} more fields than the header has")
    for value in fields:
        if (bad := _undecodable(value)) is not None:
            return bad
    return {key: value for key, value in zip(header, fields) if value != ""}


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    with _open_text(path, newline=None) as handle:
        for number, text in enumerate(_bounded_lines(handle), start=1):
            if isinstance(text, RowError):
                yield number, text
            elif text.strip():
                yield number, _json_record(text)


def _bounded_lines(handle: TextIO) -> Iterator[str | RowError]:
    """The file's lines; one longer than MAX_LINE_CHARS is skipped to its end and reported, never held whole."""
    while text := handle.readline(MAX_LINE_CHARS + 1):
        if len(text) <= MAX_LINE_CHARS or text.endswith("\n"):
            yield text
            continue
        while text and not text.endswith("\n"):
            text = handle.readline(MAX_LINE_CHARS)
        yield RowError(f"line longer than {MAX_LINE_CHARS} characters")


def _json_record(text: str) -> dict[str, Any] | RowError:
    try:
        if (bad := _undecodable(text)) is not None:
            return bad
        _check_json_depth(text)
        record = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except RowError as error:
        return error
    except json.JSONDecodeError as error:
        return RowError(f"not valid JSON ({error.msg} at column {error.colno})")
    if not isinstance(record, dict):
        return RowError(f"expected a JSON object, got {type(record).__name__}")
    return record


def _check_json_depth(text: str) -> None:
    """Refuse deep nesting before json.loads, whose recursion would end in RecursionError (or worse)."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return
    depth = 0
    for bracket in _JSON_BRACKET.findall(_JSON_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_JSON_DEPTH:
            raise RowError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys are unique: json.loads would keep the last of two, silently."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise RowError(f"the key {key[:40]!r} appears twice in one object")
        seen.add(key)
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise RowError(f"{name} is not a JSON number")


# -- validating ---------------------------------------------------------------------------------


def parse_record(record: dict[str, Any], base_dir: Path, policy: FetchPolicy | None = None) -> CatalogRow:
    """Validate one raw record; image paths are resolved against `base_dir` and hashed, under `policy`
    (default: no local file outside `base_dir`, URLs only to public addresses)."""
    external_id = _text(record, "id", MAX_ID_LENGTH, required=True)
    category = _text(record, "category", MAX_CATEGORY_LENGTH, required=True)
    location = _text(record, "image", MAX_IMAGE_LOCATION_LENGTH, required=True)
    title = _text(record, "title", MAX_TITLE_LENGTH, required=False, pattern=TITLE_PATTERN)
    tags = parse_tags(record.get("tags", []))
    price, stock = _price(record.get("price")), _stock(record.get("stock"))
    policy = (policy or FetchPolicy()).or_root(base_dir)
    image_uri, image_sha256 = _image(location, base_dir, policy)
    return CatalogRow(
        external_id=external_id,
        title=title,
        category=category,
        tags=tags,
        image_uri=image_uri,
        image_sha256=image_sha256,
        price=price,
        stock=stock,
        extra={key: value for key, value in record.items() if key not in FIELDS},
    )


def _text(
    record: dict[str, Any], key: str, max_length: int, *, required: bool, pattern: re.Pattern[str] = TEXT_PATTERN
) -> str:
    """A text field, stripped: a string (or, as spreadsheets write ids, an integer), bounded, printable."""
    value = record.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if value is not None and not isinstance(value, str):
        raise RowError(f"{key} must be text, got {type(value).__name__}")
    text = (value or "").strip()
    if not text and required:
        raise RowError(f"missing {key}")
    if len(text) > max_length:
        raise RowError(f"{key} is longer than {max_length} characters")
    if text and not pattern.fullmatch(text):
        raise RowError(f"{key} {text[:40]!r} contains control characters")
    return text


def parse_tags(value: Any) -> tuple[str, ...]:
    """Tags as a JSON list, or in CSV as 'a|b|c' or a JSON array; sorted and de-duplicated."""
    if isinstance(value, str):
        value = _tags_from_text(value)
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise RowError("unreadable tags: expected a list of strings")
    tags = {tag.strip() for tag in value if tag.strip()}
    if len(tags) > MAX_TAGS:
        raise RowError(f"{len(tags)} tags; a product may have at most {MAX_TAGS}")
    for tag in sorted(tags):
        if len(tag) > MAX_TAG_LENGTH or not TEXT_PATTERN.fullmatch(tag):
            raise RowError(f"unreadable tag {tag[:40]!r}: control characters or over {MAX_TAG_LENGTH} characters")
    return tuple(sorted(tags))


def _tags_from_text(text: str) -> Any:
    text = text.strip()
    if not text.startswith("["):
        return text.split("|")
    try:
        _check_json_depth(text)
        return json.loads(text, parse_constant=_no_constant)
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
    """A count: a non-negative whole number, as JSON writes one or as digits in text (never 1.9 or true)."""
    if value is None:
        return None
    if isinstance(value, str) and STOCK_PATTERN.fullmatch(value):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_STOCK:
        raise RowError(f"stock {value!r} must be a whole number from 0 to {MAX_STOCK}")
    return value


def validate(path: Path, policy: FetchPolicy | None = None) -> Iterator[tuple[int, CatalogRow | Rejection]]:
    """Each row of the file, parsed, or rejected with its reason; later duplicates of an id are rejected.
    Local images are read under `policy`, by default (and when it has no root) only under the file's folder."""
    policy = (policy or FetchPolicy.from_env()).or_root(path.parent)
    first_seen: dict[str, int] = {}
    for line, record in read_records(path):
        if isinstance(record, RowError):
            yield line, Rejection(line, None, str(record))
            continue
        try:
            row = parse_record(record, path.parent, policy)
        except RowError as error:
            yield line, Rejection(line, _id_for_report(record), str(error))
            continue
        if row.external_id in first_seen:
            yield line, Rejection(line, row.external_id, f"duplicate id, first on line {first_seen[row.external_id]}")
            continue
        first_seen[row.external_id] = line
        yield line, row


def _id_for_report(record: dict[str, Any]) -> str | None:
    try:
        return _text(record, "id", MAX_ID_LENGTH, required=True) or None
    except RowError:
        return None  # an unusable id is reported by its line alone


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
    """Import a CSV or JSON Lines catalogue; `progress` is called with the number of rows validated.

    The whole file is read and validated before the first write, so a file that cannot be read
    (unknown format, bad header) writes nothing, and a bad row is a rejection, never a half import.
    Local images are read under `policy` (default: the environment's settings), or under the file's
    folder when the policy has no root.
    """
    summary = ImportSummary(path)
    good: list[tuple[int, CatalogRow]] = []
    for line, item in validate(path, policy):
        if isinstance(item, Rejection):
            summary.rejected.append(item)
        else:
            good.append((line, item))
        if progress is not None:
            progress(1)
    for start in range(0, len(good), batch_size):
        _write_batch(engine, good[start : start + batch_size], summary)
    summary.rejected.sort(key=lambda rejection: rejection.line)  # the database's refusals come last otherwise
    return summary


def count_rows(path: Path) -> int:
    """Rows in the file, for a progress bar (CSV header excluded; quoted newlines may over-count)."""
    if not path.is_file():
        return 0  # a FIFO would block here; import_catalog refuses it with a reason
    with path.open("rb") as handle:
        lines = sum(1 for line in handle if line.strip())
    return max(lines - 1, 0) if path.suffix.lower() == ".csv" else lines


def write_rejections(rejections: Iterable[Rejection], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["line", "id", "reason"])
        for rejection in rejections:
            writer.writerow([rejection.line, rejection.external_id or "", rejection.reason])
