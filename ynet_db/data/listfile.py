"""The DeepFashion list-file format: a count line, a header line, then whitespace-separated rows.

Every row keeps its 1-based line number so that a reader can say exactly where a file is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ynet_db.data.records import DatasetError


@dataclass(frozen=True)
class Row:
    line: int
    fields: tuple[str, ...]


def read_list_file(path: Path, *, min_fields: int, header: bool | Literal["auto"] = True) -> list[Row]:
    """The data rows of a list file, checked against its count line.

    `header="auto"` is for files whose header line some copies lack: the count line decides.
    """
    numbered = _non_blank_lines(path)
    if not numbered:
        raise DatasetError(path, "is empty; expected a count line, a header line and rows")
    count = _count(path, *numbered[0])
    rows = numbered[1:]
    if header is True or (header == "auto" and len(rows) == count + 1):
        rows = rows[1:]
    if len(rows) != count:
        raise DatasetError(path, f"the count line says {count} rows but the file has {len(rows)}; is it truncated?", 1)
    return [_row(path, number, text, min_fields) for number, text in rows]


def _non_blank_lines(path: Path) -> list[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise DatasetError(path, "does not exist") from exc
    except UnicodeDecodeError as exc:
        raise DatasetError(path, f"is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    return [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _count(path: Path, number: int, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError as exc:
        raise DatasetError(path, f"expected the number of rows, found {text.strip()[:60]!r}", number) from exc


def _row(path: Path, number: int, text: str, min_fields: int) -> Row:
    fields = tuple(text.split())
    if len(fields) < min_fields:
        raise DatasetError(
            path, f"expected at least {min_fields} fields, found {len(fields)}: {text.strip()[:80]!r}", number
        )
    return Row(number, fields)
