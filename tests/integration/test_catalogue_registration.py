"""A shop's catalogue-only model, from its database to activation with evidence (issue 9 item 5).

Real database, real models (tiny training: one epoch), the real `ynet-db` command: the catalogue is read
from `ynet.products` with its photos under the fetch policy, broken photos are skipped and counted, and
the result is activated only where the held-out products say it beats the active model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from sqlalchemy import Engine, text

from ynet_db.cli import main
from ynet_db.config import Settings
from ynet_db.data.database import read_catalogue
from ynet_db.data.records import ImageRef, Product
from ynet_db.images.policy import FetchPolicy
from ynet_db.models import evidence
from ynet_db.models.evidence import Split
from ynet_db.models.held_out import register_checked
from ynet_db.models.registry import Activation, ModelIdentity, activate, find, register
from ynet_db.nn.checkpoint import CheckpointInfo, differing_tensors, save_checkpoint
from ynet_db.nn.config import ModelConfig
from ynet_db.nn.model import RetrievalModel, build_network
from ynet_db.nn.tags import TagVocabulary

PRODUCTS = 30
"""Held out at the CLI's 20%: 6 products to judge on."""


def garment_photos(folder: Path, n: int) -> list[tuple[Path, tuple[str, ...]]]:
    """`n` drawn shop photos (a product beside another garment) and the product's tags."""
    from ynet_db.data.garments import sample_garment
    from ynet_db.data.scenes import shop_photo

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    garments = [sample_garment(rng) for _ in range(n)]
    photos = []
    for i, garment in enumerate(garments):
        path = folder / f"{i}.jpg"
        shop_photo(garment, [garments[(i + 1) % n]], 160, rng).image.save(path)
        photos.append((path, garment.tags))
    return photos


def insert_products(engine: Engine, rows: list[tuple[str, str, tuple[str, ...]]]) -> None:
    with engine.begin() as conn:
        for external_id, uri, tags in rows:
            conn.execute(
                text(
                    "INSERT INTO ynet.products (external_id, category, tags, image_uri) "
                    "VALUES (:id, 'top', CAST(:tags AS text[]), :uri)"
                ),
                {"id": external_id, "uri": uri, "tags": list(tags)},
            )


@pytest.fixture
def shop(engine: Engine, tmp_path: Path) -> Path:
    """30 products with readable photos under the image root, and three whose photo cannot be used."""
    root = tmp_path / "photos"
    photos = garment_photos(root, PRODUCTS)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    outside = tmp_path / "elsewhere.jpg"
    outside.write_bytes(photos[0][0].read_bytes())
    insert_products(engine, [(f"p{i:02d}", str(path), tags) for i, (path, tags) in enumerate(photos)])
    insert_products(
        engine,
        [
            ("broken", str(root / "broken.jpg"), ("color:red",)),
            ("outside", str(outside), ()),
            ("missing", str(root / "gone.jpg"), ()),
        ],
    )
    return root


def poor_checkpoint(path: Path, seed: int = 5) -> Path:
    """A deliberately poor model: the street and shop branches project onto unrelated random directions,
    so a photo's vector says nothing about its product's stored one (chance level)."""
    config = ModelConfig(name="poor", projection="linear", embedding_dim=16)
    network = build_network(config, 0)
    base = {k: v.clone() for k, v in network.state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for projection in (network.street_projection, network.shop_projection):
            projection.linear.weight.copy_(torch.randn(projection.linear.weight.shape, generator=g))
    info = CheckpointInfo(config, TagVocabulary(()), "poor", {})
    save_checkpoint(path, info, differing_tensors(network.state_dict(), base))
    return path


def register_active(engine: Engine, model: RetrievalModel, checkpoint: Path | None) -> str:
    version = register(engine, ModelIdentity.of(model, checkpoint)).version
    assert activate(engine, version).model.state == "active"
    return version


def states(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT version, state FROM ynet.models")).all())


def use_database(monkeypatch: pytest.MonkeyPatch, settings: Settings, root: Path | None = None) -> None:
    monkeypatch.setenv("YNET_DATABASE_URL", str(settings.database_url))
    monkeypatch.setenv("YNET_DATA_DIR", str(settings.data_dir))
    if root is not None:
        monkeypatch.setenv("YNET_IMAGE_ROOTS", str(root))


def model_list(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> str:
    use_database(monkeypatch, settings)
    result = CliRunner().invoke(main, ["model", "list"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def held_out(photos: Path, count: int) -> dict[str, Product]:
    paths = sorted(photos.glob("[0-9]*.jpg"), key=lambda p: int(p.stem))[:count]
    return {f"p{i}": Product(f"p{i}", "top", (), (ImageRef(p),)) for i, p in enumerate(paths)}


SPLIT = Split(
    seed=0, held_out_share=0.2, held_out_products=6, trained_products=24, catalogue_sha256="0" * 64, source="test"
)


def test_the_database_catalogue_is_read_under_the_fetch_policy_and_skips_are_named(
    engine: Engine, shop: Path, tmp_path: Path
) -> None:
    read = read_catalogue(engine, FetchPolicy(roots=(shop,)), tmp_path / "copies", progress=False)
    assert (read.rows, len(read.products)) == (PRODUCTS + 3, PRODUCTS)
    assert sorted(problem.split(":")[0] for problem in read.skipped) == ["broken", "missing", "outside"]
    reasons = {problem.split(":")[0]: problem for problem in read.skipped}
    assert "local files are only read under YNET_IMAGE_ROOTS" in reasons["outside"]
    assert "does not exist" in reasons["missing"]
    assert f"image {shop / 'broken.jpg'}" in reasons["broken"]
    first = read.products["p00"]
    assert first.tags and first.shop_images[0].path.parent == tmp_path / "copies"
    assert first.shop_images[0].path.read_bytes() == (shop / "0.jpg").read_bytes()  # a copy, named by content


def test_trained_from_the_database_it_beats_a_poor_active_model_and_is_activated(
    engine: Engine, shop: Path, tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    poor = poor_checkpoint(tmp_path / "poor" / "model.safetensors")
    poor_version = register_active(engine, RetrievalModel.load(poor), poor)
    use_database(monkeypatch, settings, shop)
    out = tmp_path / "trained"
    args = ["train", "--from-catalogue", "--register", "--out", str(out), "--epochs", "1", "--embedding-dim", "16"]
    result = CliRunner().invoke(main, [*args, "--device", "cpu"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"read {PRODUCTS} of {PRODUCTS + 3} products from the database; 3 skipped" in result.output
    assert sum(line.startswith("skipped ") for line in result.output.splitlines()) == 3
    trained = RetrievalModel.load(out / "model.safetensors").version
    assert f"{trained}: activated: back-filling {PRODUCTS + 3} products" in result.output
    assert f"beats the active model {poor_version}" in result.output
    assert states(engine) == {poor_version: "active", trained: "backfilling"}  # search switches once back-filled

    with engine.connect() as conn:
        record = find(conn, trained)
    stored = evidence.stored(engine, record.id)
    assert stored is not None and stored["activated"] is True and stored["beats"] is True
    judged = evidence.HeldOutEvidence.from_dict(stored)
    assert judged.baseline.version == poor_version and judged.baseline_role == "active"
    assert judged.queries == 6 and judged.split.held_out_products == 6 and judged.split.trained_products == 24
    assert judged.split.source == "database" and judged.gain > judged.gain_standard_error
    listing = model_list(monkeypatch, settings)
    line = next(line for line in listing.splitlines() if line.startswith("    held-out top-1"))
    assert f"vs active {judged.baseline.top_k['1']:.3f}" in line and "on 6 products" in line
    assert line.endswith(f"activated (beats the active model {poor_version})")


def test_a_model_that_loses_to_the_active_one_is_registered_but_not_activated(
    engine: Engine, shop: Path, tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = RetrievalModel.load_default()
    active = register_active(engine, default, None)
    poor = poor_checkpoint(tmp_path / "poor" / "model.safetensors")
    outcome = register_checked(engine, poor, held_out(shop, 6), SPLIT, progress=False)
    assert not outcome.decision.activated and outcome.record.state == "registered"
    judged = outcome.decision.evidence
    assert judged is not None and judged.baseline.version == active and judged.baseline_role == "active"
    assert judged.baseline.top_k["1"] > judged.candidate.top_k["1"]
    assert outcome.decision.reason.startswith(f"does not beat the active model {active}: the top-1 gain -")
    assert states(engine) == {active: "active", outcome.record.version: "registered"}
    with engine.connect() as conn:
        queued = conn.execute(
            text("SELECT count(*) FROM ynet.embedding_jobs WHERE model_id = :id"), {"id": outcome.record.id}
        )
    assert queued.scalar() == 0  # no back-fill for a model that is not activated
    listing = model_list(monkeypatch, settings)
    assert f"vs active {judged.baseline.top_k['1']:.3f}" in listing
    assert f"not activated ({outcome.decision.reason})" in listing


def test_with_no_active_model_the_check_is_against_the_shipped_default(
    engine: Engine, shop: Path, tmp_path: Path
) -> None:
    poor = poor_checkpoint(tmp_path / "poor" / "model.safetensors")
    outcome = register_checked(engine, poor, held_out(shop, 6), SPLIT, progress=False)
    judged = outcome.decision.evidence
    assert judged is not None and judged.baseline_role == "default"
    assert judged.baseline.version == RetrievalModel.load_default().version
    assert not outcome.decision.activated and outcome.record.state == "registered"
    assert "does not beat the default model" in outcome.decision.reason


def test_an_active_model_that_cannot_be_loaded_keeps_the_new_one_back_with_the_reason(
    engine: Engine, shop: Path, tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = poor_checkpoint(tmp_path / "gone" / "model.safetensors", seed=6)
    active = register_active(engine, RetrievalModel.load(gone), gone)
    gone.unlink()
    candidate = poor_checkpoint(tmp_path / "candidate" / "model.safetensors")
    outcome = register_checked(engine, candidate, held_out(shop, 6), SPLIT, progress=False)
    assert not outcome.decision.activated and outcome.decision.evidence is None
    assert outcome.decision.reason.startswith(f"the active model could not be loaded here to compare with ({active}: ")
    assert states(engine)[active] == "active"
    assert "held-out check: not activated: the active model could not be loaded" in model_list(monkeypatch, settings)


def test_train_from_an_empty_database_says_how_many_products_it_found(
    engine: Engine, tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_database(monkeypatch, settings, tmp_path)
    result = CliRunner().invoke(main, ["train", "--from-catalogue", "--out", str(tmp_path / "m")])
    assert result.exit_code == 1
    assert "read 0 of 0 products from the database; 0 skipped" in result.output
    assert "the database: 0 usable products; catalogue training needs at least 10" in result.output
    refused = CliRunner().invoke(main, ["train", "--register", "--out", str(tmp_path / "m")])
    assert refused.exit_code == 2 and "--register goes with --from-catalogue" in refused.output
    missing = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "m")])
    assert missing.exit_code == 2 and "DATASET" in missing.output and "is needed" in missing.output


def test_a_winner_judged_against_a_model_replaced_meanwhile_is_kept_back(
    engine: Engine, shop: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The switch lands after every check `register_checked` could make itself, just before `activate` locks:
    only `activate(expected_active=...)`, checking under the registry's locks, sees it."""
    judged_against = register_active(engine, RetrievalModel.load_default(), None)
    other = register(engine, ModelIdentity("other", "other@1", 16, "0" * 64, {})).version

    def wins(candidate: RetrievalModel, baseline: RetrievalModel, held: object, split: Split, **_: object) -> Any:
        return evidence.HeldOutEvidence(
            candidate=evidence.Scores(candidate.version, dict.fromkeys(("1", "5", "10", "20", "50"), 1.0)),
            baseline=evidence.Scores(baseline.version, dict.fromkeys(("1", "5", "10", "20", "50"), 0.0)),
            baseline_role="active",
            queries=6,
            gain_standard_error=0.1,
            split=split,
            judged_at="2026-12-03T10:00:00+00:00",
        )

    def activate_after_another_switch(*args: Any, **kwargs: Any) -> Activation:
        with engine.begin() as conn:  # as the dispatcher's promotion of another model would
            conn.execute(text("UPDATE ynet.models SET state = 'retired' WHERE state = 'active'"))
            conn.execute(text("UPDATE ynet.models SET state = 'active' WHERE version = :v"), {"v": other})
        return activate(*args, **kwargs)

    monkeypatch.setattr("ynet_db.models.held_out.compare", wins)
    monkeypatch.setattr("ynet_db.models.held_out.activate", activate_after_another_switch)
    candidate = poor_checkpoint(tmp_path / "candidate" / "model.safetensors")
    outcome = register_checked(engine, candidate, held_out(shop, 6), SPLIT, progress=False)
    assert not outcome.decision.activated and outcome.backfill_jobs == 0
    assert outcome.decision.reason == (
        f"beats the active model {judged_against}, but the active model changed to {other} meanwhile: judge again"
    )
    assert states(engine) == {judged_against: "retired", other: "active", outcome.record.version: "registered"}
