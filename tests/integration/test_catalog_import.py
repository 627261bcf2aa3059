"""Catalogue import: good rows land, bad rows are reported with line and reason, nothing is half-written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from PIL import Image
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from ynet_db.cli import main
from ynet_db.config import Settings
from ynet_db.db.tables import EmbeddingJob, Model, Product
from ynet_db.images.decode import ImageLimits
from ynet_db.ingestion.catalog import import_catalog


@pytest.fixture
def images(tmp_path: Path) -> Path:
    for name, colour in (("red.jpg", "red"), ("blue.jpg", "blue")):
        Image.new("RGB", (32, 32), colour).save(tmp_path / name)
    return tmp_path


@pytest.fixture
def active_model(engine: Engine) -> None:
    with Session(engine) as session:
        session.add(Model(name="m", version="m@test", embedding_dim=4, weights_sha256="0" * 64, state="active"))
        session.commit()


def _write_csv(directory: Path, *rows: str) -> Path:
    path = directory / "catalog.csv"
    path.write_text("id,title,category,tags,image,price,stock\n" + "\n".join(rows) + "\n")
    return path


def _products(engine: Engine) -> dict[str, Product]:
    with Session(engine) as session:
        return {p.external_id: p for p in session.scalars(select(Product))}


def _jobs(engine: Engine) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(EmbeddingJob)) or 0


def test_bad_rows_are_reported_and_good_rows_land(engine: Engine, images: Path) -> None:
    path = _write_csv(
        images,
        "a1,Red dress,dress,color:red|sleeve:long,red.jpg,19.90,3",  # line 2
        ",No id,dress,,red.jpg,,",  # line 3
        'a2,Bad tags,dress,"[""color:red""",red.jpg,,',  # line 4
        "a1,Again,dress,,blue.jpg,,",  # line 5
        "a3,Missing image,dress,,nowhere.jpg,,",  # line 6
        "a4,Blue shirt,shirt,color:blue,blue.jpg,abc,",  # line 7
        "a5,Blue shirt,shirt,color:blue,blue.jpg,5,",  # line 8
    )
    summary = import_catalog(engine, path, batch_size=2)
    assert (summary.added, summary.updated, summary.unchanged) == (2, 0, 0)
    assert [(r.line, r.external_id) for r in summary.rejected] == [
        (3, None),
        (4, "a2"),
        (5, "a1"),
        (6, "a3"),
        (7, "a4"),
    ]
    reasons = [r.reason for r in summary.rejected]
    assert reasons[0] == "missing id"
    assert reasons[1].startswith("unreadable tags: '[\"color:red\"' is not a JSON array")
    assert reasons[2] == "duplicate id, first on line 2"
    assert reasons[3] == f"image not found: {images / 'nowhere.jpg'}"
    assert reasons[4] == "price 'abc' is not a number"
    products = _products(engine)
    assert sorted(products) == ["a1", "a5"]
    red = products["a1"]
    assert (red.title, red.tags, str(red.price), red.stock) == ("Red dress", ["color:red", "sleeve:long"], "19.90", 3)
    assert red.image_uri == str(images / "red.jpg") and red.image_sha256 and len(red.image_sha256) == 64


def test_reimport_is_idempotent(engine: Engine, images: Path, active_model: None) -> None:
    path = _write_csv(images, "a1,Red dress,dress,color:red,red.jpg,10,1", "a2,Blue,shirt,,blue.jpg,,")
    import_catalog(engine, path)
    again = import_catalog(engine, path)
    assert (again.added, again.updated, again.unchanged, again.rejected) == (0, 0, 2, [])
    assert _jobs(engine) == 2


def test_price_change_updates_without_work_and_image_change_makes_work(
    engine: Engine, images: Path, active_model: None
) -> None:
    import_catalog(engine, _write_csv(images, "a1,Red dress,dress,color:red,red.jpg,10,1"))
    summary = import_catalog(engine, _write_csv(images, "a1,Red dress,dress,color:red,red.jpg,12,0"))
    assert (summary.added, summary.updated) == (0, 1)
    assert _jobs(engine) == 1
    (images / "red.jpg").write_bytes((images / "blue.jpg").read_bytes())  # same path, new content
    summary = import_catalog(engine, _write_csv(images, "a1,Red dress,dress,color:red,red.jpg,12,0"))
    assert summary.updated == 1
    assert _jobs(engine) == 2


def test_jsonl_with_broken_lines(engine: Engine, images: Path) -> None:
    path = images / "catalog.jsonl"
    lines = [
        json.dumps({"id": "j1", "category": "dress", "tags": ["color:red"], "image": "red.jpg", "brand": "acme"}),
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"id": "j2", "category": "dress", "tags": "color:red", "image": "red.jpg"}),
        json.dumps({"id": "j3", "category": "dress", "tags": [1, 2], "image": "red.jpg"}),
        "",
        json.dumps({"id": "j4", "category": "dress", "image": "https://shop.example/4.jpg"}),
    ]
    path.write_text("\n".join(lines) + "\n")
    summary = import_catalog(engine, path)
    assert [(r.line, r.reason.split(" (")[0]) for r in summary.rejected] == [
        (2, "not valid JSON"),
        (3, "expected a JSON object, got list"),
        (5, "unreadable tags: expected a list of strings"),
    ]
    products = _products(engine)
    assert sorted(products) == ["j1", "j2", "j4"]
    assert products["j1"].extra == {"brand": "acme"}
    assert products["j4"].image_sha256 is None, "remote images are hashed when a worker fetches them"


def test_a_row_the_database_refuses_does_not_sink_its_batch(engine: Engine, images: Path) -> None:
    path = _write_csv(images, "a1,ok,dress,,red.jpg,1,", "a2,too dear,dress,,red.jpg,1e15,", "a3,ok,dress,,red.jpg,2,")
    summary = import_catalog(engine, path, batch_size=10)
    assert summary.added == 2
    assert [(r.line, r.external_id) for r in summary.rejected] == [(3, "a2")]
    assert summary.rejected[0].reason.startswith("the database refused the row: numeric field overflow")
    assert sorted(_products(engine)) == ["a1", "a3"]


def test_cli_reports_rejections_and_exit_status(engine: Engine, images: Path, settings: Settings) -> None:
    path = _write_csv(images, "a1,Red,dress,,red.jpg,,", ",x,dress,,red.jpg,,")
    rejects = images / "rejects.csv"
    env = {"YNET_DATABASE_URL": settings.database_url, "YNET_DATA_DIR": str(settings.data_dir)}
    result = CliRunner().invoke(main, ["catalog", "import", str(path), "--rejects", str(rejects)], env=env)
    assert result.exit_code == 3, result.output
    assert "2 rows: 1 added, 0 updated, 0 unchanged, 1 rejected" in result.output
    assert "rejected line 3: missing id" in result.output
    assert rejects.read_text().splitlines() == ["line,id,reason", "3,,missing id"]


def test_unknown_format_is_a_clear_error(engine: Engine, tmp_path: Path, settings: Settings) -> None:
    path = tmp_path / "catalog.xlsx"
    path.write_bytes(b"PK")
    env = {"YNET_DATABASE_URL": settings.database_url, "YNET_DATA_DIR": str(settings.data_dir)}
    result = CliRunner().invoke(main, ["catalog", "import", str(path)], env=env)
    assert result.exit_code == 1
    assert "unknown catalogue format '.xlsx'; use .csv or .jsonl" in result.output


def _cli(settings: Settings, *args: str) -> Result:
    env = {"YNET_DATABASE_URL": settings.database_url, "YNET_DATA_DIR": str(settings.data_dir)}
    return CliRunner().invoke(main, list(args), env=env)


def _jsonl(directory: Path, *lines: bytes) -> Path:
    path = directory / "catalog.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _row(external_id: str, **fields: object) -> bytes:
    return json.dumps({"id": external_id, "category": "dress", "image": "red.jpg", **fields}).encode()


def test_bad_utf8_is_one_rejected_line(engine: Engine, images: Path) -> None:
    csv_path = images / "catalog.csv"
    csv_path.write_bytes(
        b"id,category,image,title\nu1,dress,red.jpg,ok\nu2,dress,red.jpg,caf\xe9\nu3,dress,red.jpg,ok\n"
    )
    summary = import_catalog(engine, csv_path, batch_size=1)
    assert [(r.line, r.reason) for r in summary.rejected] == [(3, "not valid UTF-8 (byte 0xe9 at character 4)")]
    jsonl_path = _jsonl(images, _row("j1"), b'{"id": "j2", "title": "\xff"}', _row("j3"))
    summary = import_catalog(engine, jsonl_path, batch_size=1)
    assert [(r.line, r.reason) for r in summary.rejected] == [(2, "not valid UTF-8 (byte 0xff at character 24)")]
    assert sorted(_products(engine)) == ["j1", "j3", "u1", "u3"]


def test_deep_json_and_long_csv_fields_are_rejected_lines(engine: Engine, images: Path) -> None:
    deep = b'{"id": "deep", "category": "dress", "image": "red.jpg", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    summary = import_catalog(engine, _jsonl(images, _row("j1"), deep, _row("j3")), batch_size=1)
    assert [(r.line, r.reason) for r in summary.rejected] == [(2, "JSON nested deeper than 32 levels")]
    long_field = "x" * 140_000
    path = _write_csv(images, "c1,ok,dress,,red.jpg,,", f"c2,{long_field},dress,,red.jpg,,", "c3,ok,dress,,red.jpg,,")
    summary = import_catalog(engine, path, batch_size=1)
    assert [(r.line, r.reason) for r in summary.rejected] == [
        (3, "unreadable CSV (field larger than field limit (131072))")
    ]
    assert sorted(_products(engine)) == ["c1", "c3", "j1", "j3"]


def test_a_repeated_header_column_is_refused_and_nothing_is_written(
    engine: Engine, images: Path, settings: Settings
) -> None:
    path = images / "catalog.csv"
    path.write_text("id,category,image,title,id\na1,dress,red.jpg,Red,a2\n")
    result = _cli(settings, "catalog", "import", str(path))
    assert result.exit_code == 1, result.output
    assert "the header names the column 'id' twice (columns 1 and 5)" in result.output
    assert _products(engine) == {}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (1.9, "stock 1.9 must be a whole number from 0 to 2147483647"),
        (True, "stock True must be a whole number from 0 to 2147483647"),
        ("1.9", "stock '1.9' must be a whole number from 0 to 2147483647"),
        (-1, "stock -1 must be a whole number from 0 to 2147483647"),
        ("-1", "stock '-1' must be a whole number from 0 to 2147483647"),
        (2**31, "stock 2147483648 must be a whole number from 0 to 2147483647"),
    ],
)
def test_stock_must_be_a_non_negative_whole_number(engine: Engine, images: Path, value: object, reason: str) -> None:
    path = _jsonl(images, _row("s1", stock=value), _row("s2", stock="7"), _row("s3", stock=0))
    summary = import_catalog(engine, path)
    assert [(r.line, r.reason) for r in summary.rejected] == [(1, reason)]
    assert {k: p.stock for k, p in _products(engine).items()} == {"s2": 7, "s3": 0}


def test_ids_titles_and_tags_are_typed_and_bounded(engine: Engine, images: Path) -> None:
    path = _jsonl(
        images,
        json.dumps({"id": True, "category": "dress", "image": "red.jpg"}).encode(),
        _row("evil\x1b]0;owned\x07"),
        _row("x" * 201),
        _row("t1", title="t" * 1001),
        _row("t2", tags=[f"tag:{i}" for i in range(201)]),
        _row("t3", tags=["t" * 201]),
        _row("t4", category="dress\x9b2J"),
        _row("ok", title="Red dress\nsize M", tags=[f"tag:{i}" for i in range(200)]),
        b'{"id": "dup", "category": "dress", "image": "red.jpg", "category": "shirt"}',
        b'{"id": "nan", "category": "dress", "image": "red.jpg", "price": NaN}',
    )
    summary = import_catalog(engine, path)
    assert [(r.line, r.external_id, r.reason) for r in summary.rejected] == [
        (1, None, "id must be text, got bool"),
        (2, None, "id 'evil\\x1b]0;owned\\x07' contains control characters"),
        (3, None, "id is longer than 200 characters"),
        (4, "t1", "title is longer than 1000 characters"),
        (5, "t2", "201 tags; a product may have at most 200"),
        (6, "t3", f"unreadable tag {'t' * 40!r}: control characters or over 200 characters"),
        (7, "t4", "category 'dress\\x9b2J' contains control characters"),
        (9, None, "the key 'category' appears twice in one object"),
        (10, None, "NaN is not a JSON number"),
    ]
    assert sorted(_products(engine)) == ["ok"]


def test_image_size_is_bounded_and_file_urls_are_case_insensitive(engine: Engine, images: Path) -> None:
    huge = images / "huge.jpg"
    with huge.open("wb") as handle:
        handle.truncate(ImageLimits().max_bytes + 1)  # sparse: no disk written
    path = _jsonl(images, _row("big", image="huge.jpg"), _row("url", image=f"FILE://{images / 'red.jpg'}"))
    summary = import_catalog(engine, path)
    assert [(r.line, r.reason) for r in summary.rejected] == [
        (1, f"image huge.jpg: is larger than the limit of {ImageLimits().max_bytes} bytes")
    ]
    assert _products(engine)["url"].image_uri == str(images / "red.jpg")


def test_cli_lists_every_bad_line_with_exit_status_3_and_prints_no_control_characters(
    engine: Engine, images: Path, settings: Settings
) -> None:
    deep = b'{"id": "deep", "category": "dress", "image": "red.jpg", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    evil_image = _row("evil", image="\x1b]0;owned\x07.jpg")
    path = _jsonl(images, _row("j1"), b'{"id": "\xff"}', deep, evil_image, _row("j5"))
    path = path.rename(images / "\x1b]0;owned\x07.jsonl")
    result = _cli(settings, "catalog", "import", str(path), "--batch-size", "1")
    assert result.exit_code == 3, result.output
    assert f"{images}/\\x1b]0;owned\\x07.jsonl: 5 rows: 2 added, 0 updated, 0 unchanged, 3 rejected" in result.output
    assert "rejected line 2: not valid UTF-8" in result.output
    assert "rejected line 3: JSON nested deeper than 32 levels" in result.output
    assert "rejected line 4 (id 'evil'): image '\\x1b]0;owned\\x07.jpg' contains control characters" in result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert sorted(_products(engine)) == ["j1", "j5"]


def test_an_over_long_jsonl_line_is_rejected_unread(engine: Engine, images: Path) -> None:
    long_line = _row("long", blob="x" * 1024 * 1024)
    summary = import_catalog(engine, _jsonl(images, _row("j1"), long_line, _row("j3")))
    assert [(r.line, r.reason) for r in summary.rejected] == [(2, "line longer than 1048576 characters")]
    assert sorted(_products(engine)) == ["j1", "j3"]
