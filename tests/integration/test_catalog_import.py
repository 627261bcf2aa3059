"""Catalogue import: good rows land, bad rows are reported with line and reason, nothing is half-written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from ynet_db.catalog import import_catalog
from ynet_db.cli import main
from ynet_db.config import Settings
from ynet_db.db.models import EmbeddingJob, Model, Product


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
