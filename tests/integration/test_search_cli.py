"""`ynet-db search`: the table, and the HTML page with thumbnails and attention maps."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest
from catalogue_vectors import catalogue, photo, unit_vectors
from click.testing import CliRunner
from sqlalchemy import Engine, text

from ynet_db.cli import main
from ynet_db.config import Settings
from ynet_db.db.tables import Product
from ynet_db.nn.model import RetrievalModel
from ynet_db.search.filters import DEFAULT_SCHEMA, TEXT_OPS, Field, Op, text_value


@pytest.fixture(autouse=True)
def pytorch_encoders(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about the command's output: PyTorch spares each an export of the ONNX graphs into its
    fresh data directory (seconds); the first test runs on the default runtime."""
    monkeypatch.setenv("YNET_RUNTIME", "torch")


def test_search_prints_a_table_and_writes_a_page(
    engine: Engine, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("YNET_RUNTIME")  # auto: the encoders on ONNX Runtime, as a worker's
    model = RetrievalModel.load_default()
    catalogue(engine, model.version, unit_vectors(30, model.embedding_dim, seed=1))
    shop = tmp_path / "shop.png"
    photo(3).save(shop)
    with engine.begin() as conn:  # one product with a real image; the rest have none (a placeholder)
        conn.execute(text("UPDATE ynet.products SET image_uri = :uri, title = '<b>x</b>'"), {"uri": str(shop)})
    query = tmp_path / "query.png"
    photo(4).save(query)
    monkeypatch.setenv("YNET_DATABASE_URL", str(settings.database_url))
    monkeypatch.setenv("YNET_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("YNET_IMAGE_ROOTS", str(tmp_path))  # the shop image may be inlined
    out = tmp_path / "page.html"
    args = ["search", str(query), "--k", "3", "--category", "dress", "--rerank", "--html", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"model {model.version}, exact prefilter, 15/256 candidates (short), re-ranked"
    assert lines[1].split() == ["rank", "external", "id", "category", "distance", "re-rank", "title"]
    assert len(lines) == 2 + 3 + 1 and lines[-1] == f"wrote {out}"
    page = out.read_text()
    assert page.count("data:image/jpeg;base64,") == 1 + 3 * 2  # query, then thumbnail + attention per result
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
    graphs = sorted(path.name.split("-")[-2] for path in (settings.data_dir / "onnx").glob("*.onnx"))
    assert graphs == ["shop", "street"]  # the query was encoded on ONNX Runtime


def test_search_refuses_a_bad_filter_with_its_message(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    query = tmp_path / "query.png"
    photo(4).save(query)
    monkeypatch.setenv("YNET_DATABASE_URL", str(settings.database_url))
    result = CliRunner().invoke(main, ["search", str(query), "--tag", "a\x00b", "--no-rerank"])
    assert result.exit_code == 1
    assert "Error: filter 'tags': strings may not contain NUL bytes" in result.output


def _unreadable_images(directory: Path) -> dict[str, str]:
    """product external id -> an image location the page cannot show, by kind."""
    listening = socket.socket(socket.AF_UNIX)
    listening.bind(str(directory / "image.sock"))  # closed with the test's process; the path is what matters
    os.mkfifo(directory / "image.fifo")  # opening it would wait forever for a writer
    (directory / "notes.jpg").write_text("not an image")
    return {
        "p0": str(directory / "image.sock"),
        "p1": str(directory / "image.fifo"),
        "p2": "/" + "x" * 5000 + ".jpg",
        "p3": str(directory / "missing.jpg"),
        "p4": str(directory / "notes.jpg"),
        "p5": "http://[::1/x.jpg",
    }


def test_search_html_writes_the_page_when_result_images_cannot_be_shown(
    engine: Engine, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = RetrievalModel.load_default()
    catalogue(engine, model.version, unit_vectors(6, model.embedding_dim, seed=1))
    images = _unreadable_images(tmp_path)
    with engine.begin() as conn:
        for external_id, uri in images.items():
            conn.execute(
                text("UPDATE ynet.products SET image_uri = :uri WHERE external_id = :id"),
                {"uri": uri, "id": external_id},
            )
    query = tmp_path / "query.png"
    photo(4).save(query)
    monkeypatch.setenv("YNET_DATABASE_URL", str(settings.database_url))
    monkeypatch.setenv("YNET_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("YNET_IMAGE_ROOTS", str(tmp_path))
    out = tmp_path / "page.html"
    result = CliRunner().invoke(main, ["search", str(query), "--k", "6", "--no-rerank", "--html", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert page.count("data:image/jpeg;base64,") == 1 + 6  # the query, and an attention map per result
    placeholders = re.findall(r'<div class="missing">no image: ([^<]*)</div>', page)
    assert sorted(placeholders) == [
        "does not exist",
        "is longer than 4096 characters",
        "is not a regular file",  # the socket
        "is not a regular file",  # the FIFO
        "is not a valid URL (Invalid IPv6 URL)",
        "is not an image in a supported format",
    ]


def test_search_escapes_control_characters_in_what_it_prints(
    engine: Engine, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = RetrievalModel.load_default()
    catalogue(engine, model.version, unit_vectors(3, model.embedding_dim, seed=1))
    with engine.begin() as conn:  # as a shop table attached with `ynet-db attach` could hold them
        conn.execute(
            text("UPDATE ynet.products SET title = :evil, category = :evil, external_id = external_id || :evil"),
            {"evil": "\x1b]0;owned\x07"},
        )
    query = tmp_path / "query.png"
    photo(4).save(query)
    monkeypatch.setenv("YNET_DATABASE_URL", str(settings.database_url))
    result = CliRunner().invoke(main, ["search", str(query), "--k", "3", "--no-rerank"])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert result.output.count("\\x1b]0;owned\\x07") == 3 * 2  # title and id in full (the category column cuts it)


def test_the_page_inlines_only_images_the_fetch_policy_allows(
    engine: Engine, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = RetrievalModel.load_default()
    catalogue(engine, model.version, unit_vectors(30, model.embedding_dim, seed=1))
    allowed, elsewhere = tmp_path / "shop", tmp_path / "elsewhere"
    allowed.mkdir(), elsewhere.mkdir()
    photo(3).save(allowed / "shop.png")
    photo(5).save(elsewhere / "private.png")  # a real image, but outside YNET_IMAGE_ROOTS
    with engine.begin() as conn:
        conn.execute(text("UPDATE ynet.products SET image_uri = :uri"), {"uri": str(elsewhere / "private.png")})
        conn.execute(
            text("UPDATE ynet.products SET image_uri = :uri WHERE id = (SELECT min(id) FROM ynet.products)"),
            {"uri": str(allowed / "shop.png")},
        )
    query = tmp_path / "query.png"
    photo(4).save(query)
    monkeypatch.setenv("YNET_DATABASE_URL", str(settings.database_url))
    monkeypatch.setenv("YNET_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("YNET_IMAGE_ROOTS", str(allowed))
    out = tmp_path / "page.html"
    args = ["search", str(query), "--k", "30", "--candidates", "30", "--no-rerank", "--html", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    page = out.read_text()
    # The query, an attention map per result, and one thumbnail: the shop image under the root.
    assert page.count("data:image/jpeg;base64,") == 1 + 30 + 1
    assert page.count('class="missing"') == 29


def test_search_checks_and_compiles_its_filter_once(
    engine: Engine, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command builds its query once, before loading a model, and every step after uses its compiled filter."""
    model = RetrievalModel.load_default()
    catalogue(engine, model.version, unit_vectors(30, model.embedding_dim, seed=1))
    checked: list[object] = []

    def counted(name: str, value: object) -> str:
        checked.append(value)
        return text_value(name, value)

    monkeypatch.setitem(
        DEFAULT_SCHEMA.fields, "category", Field(Product.category, {"eq": Op(counted, TEXT_OPS["eq"].build)})
    )
    query = tmp_path / "query.png"
    photo(4).save(query)
    monkeypatch.setenv("YNET_DATABASE_URL", str(settings.database_url))
    monkeypatch.setenv("YNET_DATA_DIR", str(settings.data_dir))
    result = CliRunner().invoke(main, ["search", str(query), "--k", "3", "--category", "dress", "--no-rerank"])
    assert result.exit_code == 0, result.output
    assert (
        result.output.splitlines()[0]
        == f"model {model.version}, exact prefilter, 15/256 candidates (short), not re-ranked"
    )
    assert checked == ["dress"]
