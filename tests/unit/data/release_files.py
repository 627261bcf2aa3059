"""Writers for small copies of the two release formats, in the releases' own spelling."""

from __future__ import annotations

import json
from pathlib import Path


def write_list(path: Path, header: str, rows: list[str]) -> None:
    """A DeepFashion list file: count line, header line, rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([str(len(rows)), header, *rows]) + "\n", encoding="utf-8")


def replace_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


BLOUSE = "img/CLOTHING/Blouse/id_00000001"
DRESS = "img/DRESSES/Lace_Dress/id_00000002"
TEE = "img/TOPS/T_Shirt/id_00000003"


def write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value), encoding="utf-8")
