"""`ynet-db search`: the table, and the HTML page with thumbnails and attention maps."""

from __future__ import annotations

from pathlib import Path

import pytest
from catalogue_vectors import catalogue, photo, unit_vectors
from click.testing import CliRunner
from sqlalchemy import Engine, text

from ynet_db.cli import main
from ynet_db.config import Settings
from ynet_db.nn.model import RetrievalModel


def test_search_prints_a_table_and_writes_a_page(
    engine: Engine, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
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


def test_search_refuses_a_bad_filter_with_its_message(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    query = tmp_path / "query.png"
    photo(4).save(query)
    monkeypatch.setenv("YNET_DATABASE_URL", str(settings.database_url))
    result = CliRunner().invoke(main, ["search", str(query), "--tag", "a\x00b", "--no-rerank"])
    assert result.exit_code == 1
    assert "Error: filter 'tags': strings may not contain NUL bytes" in result.output


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
