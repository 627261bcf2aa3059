"""Jobs -> embeddings in one process: per-item failures, hash checks, encoder isolation, the registry."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import Session

from ynet_db import jobs
from ynet_db.db.models import Embedding, EmbeddingJob, Model, Product
from ynet_db.embed import BatchWriter, embed_batch, run_once
from ynet_db.model_registry import ModelIdentity, activate, promote_if_complete, register

DIM = 4


@dataclass
class Encoding:
    vectors: torch.Tensor


class ColourEncoder:
    """A stand-in for the network: the mean colour, so tests check which image each vector came from."""

    def __init__(self, refuse_red: bool = False) -> None:
        self.refuse_red = refuse_red
        self.calls: list[int] = []

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(image, dtype=np.float32)).mean(dim=(0, 1)) / 255

    def encode_shop(self, pixels: torch.Tensor, tags: Sequence[Sequence[str]]) -> Encoding:
        self.calls.append(len(pixels))
        if self.refuse_red and bool((pixels[:, 0] > 0.9).any()):
            raise RuntimeError("the network rejects red")
        return Encoding(torch.cat([pixels, torch.ones(len(pixels), 1)], dim=1))


@pytest.fixture(autouse=True)
def images_under_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`run_once`'s default fetch reads local images only under YNET_IMAGE_ROOTS; these tests write them here."""
    monkeypatch.setenv("YNET_IMAGE_ROOTS", str(tmp_path))


def write_png(path: Path, colour: tuple[int, int, int]) -> Path:
    Image.new("RGB", (64, 64), colour).save(path)
    return path


def add_model(engine: Engine, state: str = "active", version: str = "test@1") -> int:
    with Session(engine) as session:
        model = Model(name="test", version=version, embedding_dim=DIM, weights_sha256="0" * 64, state=state)
        session.add(model)
        session.commit()
        return model.id


def add_products(engine: Engine, uris: Sequence[str], sha256: Sequence[str | None] | None = None) -> None:
    hashes = sha256 or [None] * len(uris)
    with Session(engine) as session:
        session.add_all(
            Product(external_id=f"p{i}", category="dress", tags=["color:red"], image_uri=uri, image_sha256=digest)
            for i, (uri, digest) in enumerate(zip(uris, hashes, strict=True))
        )
        session.commit()


def job_states(engine: Engine) -> dict[str, str]:
    with Session(engine) as session:
        rows = session.execute(select(Product.external_id, EmbeddingJob.state).join(EmbeddingJob.product))
        return {key: value for key, value in rows}


def embedding_count(engine: Engine) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(Embedding)) or 0


def test_bad_items_are_recorded_and_the_rest_of_the_batch_is_embedded(engine: Engine, tmp_path: Path) -> None:
    add_model(engine)
    good = [write_png(tmp_path / f"{i}.png", (0, 40 * i, 0)) for i in range(3)]
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff not really a jpeg")
    add_products(engine, [str(p) for p in good] + [str(corrupt), str(tmp_path / "missing.png")])

    result = run_once(engine, ColourEncoder(), "w1", batch_size=10)

    assert (result.claimed, result.done, result.dead, result.retry) == (5, 3, 1, 1)
    assert job_states(engine) == {"p0": "done", "p1": "done", "p2": "done", "p3": "dead", "p4": "retry"}
    with Session(engine) as session:
        stored = session.scalars(select(Embedding).join(Embedding.product).where(Product.external_id == "p2")).one()
        errors = dict(
            session.execute(select(Product.external_id, EmbeddingJob.last_error).join(EmbeddingJob.product)).all()
        )
    assert stored.image_sha256 == hashlib.sha256(good[2].read_bytes()).hexdigest()
    assert list(stored.embedding) == pytest.approx([0, 80 / 255, 0, 1], abs=1e-6)
    assert errors["p3"].startswith("decode: image") and "not an image" in errors["p3"]
    assert errors["p4"].startswith("fetch: image") and "does not exist" in errors["p4"]


def test_a_retryable_item_ends_dead_after_its_attempts(engine: Engine, tmp_path: Path) -> None:
    add_model(engine)
    add_products(engine, [str(tmp_path / "missing.png")])
    with Session(engine) as session:
        session.execute(update(EmbeddingJob).values(max_attempts=2))
        session.commit()
    for expected in ("retry", "dead"):
        result = run_once(engine, ColourEncoder(), "w1", batch_size=1)
        assert result.claimed == 1
        assert job_states(engine) == {"p0": expected}
        with Session(engine) as session:  # skip the backoff instead of sleeping through it
            session.execute(update(EmbeddingJob).values(run_after=func.now()))
            session.commit()
    assert run_once(engine, ColourEncoder(), "w1", batch_size=1).claimed == 0


def test_an_image_that_changed_after_import_is_refused(engine: Engine, tmp_path: Path) -> None:
    add_model(engine)
    image = write_png(tmp_path / "a.png", (1, 2, 3))
    add_products(engine, [str(image)], ["0" * 64])
    result = run_once(engine, ColourEncoder(), "w1", batch_size=1)
    assert result.dead == 1 and embedding_count(engine) == 0
    assert "the file changed after import" in result.errors[0]


def test_an_encoder_failure_costs_only_the_item_that_caused_it(engine: Engine, tmp_path: Path) -> None:
    add_model(engine)
    colours = [(0, 0, 0), (255, 0, 0), (0, 0, 255)]
    add_products(engine, [str(write_png(tmp_path / f"{i}.png", c)) for i, c in enumerate(colours)])
    encoder = ColourEncoder(refuse_red=True)
    result = run_once(engine, encoder, "w1", batch_size=3)
    assert encoder.calls == [3, 1, 1, 1]  # the batch once, then each item alone
    assert job_states(engine) == {"p0": "done", "p1": "retry", "p2": "done"}
    assert result.errors == ["job 2: encode: RuntimeError('the network rejects red')"]


def test_a_lost_lease_writes_nothing(engine: Engine, tmp_path: Path) -> None:
    add_model(engine)
    add_products(engine, [str(write_png(tmp_path / "a.png", (9, 9, 9)))])
    claimed = jobs.claim(engine, "w1", 1)
    with Session(engine) as session:  # another worker took it over after the lease expired
        session.execute(update(EmbeddingJob).values(claimed_by="w2"))
        session.commit()
    result = embed_batch(engine, ColourEncoder(), claimed, "w1")
    assert (result.done, result.stale, embedding_count(engine)) == (0, 1, 0)


def identity(version: str) -> ModelIdentity:
    return ModelIdentity("test", version, DIM, "0" * 64, {"model": {}, "checkpoint": None})


def test_first_activation_is_immediate_and_a_later_one_backfills_then_switches(engine: Engine, tmp_path: Path) -> None:
    add_products(engine, [str(write_png(tmp_path / f"{i}.png", (i, i, i))) for i in range(3)])
    first = register(engine, identity("test@1"))
    assert register(engine, identity("test@1")) == first and first.state == "registered"

    started = activate(engine, "test@1")
    assert (started.model.state, started.backfill_jobs) == ("active", 3)
    run_once(engine, ColourEncoder(), "w1", batch_size=10, model_id=first.id)

    second = register(engine, identity("test@2"))
    backfill = activate(engine, "test@2")
    assert (backfill.model.state, backfill.backfill_jobs) == ("backfilling", 3)
    run_once(engine, ColourEncoder(), "w1", batch_size=2, model_id=second.id)
    assert promote_if_complete(engine) is None  # 2 of 3 covered: search stays on the first model

    run_once(engine, ColourEncoder(), "w1", batch_size=2, model_id=second.id)
    promoted = promote_if_complete(engine)
    assert promoted is not None and promoted.version == "test@2" and promoted.state == "active"
    with Session(engine) as session:
        assert dict(session.execute(select(Model.version, Model.state)).all()) == {
            "test@1": "retired",
            "test@2": "active",
        }


def test_a_writer_writes_each_batch_behind_the_next_and_counts_once_written(engine: Engine, tmp_path: Path) -> None:
    add_model(engine)
    add_products(engine, [str(write_png(tmp_path / f"{i}.png", (10 * i, 0, 0))) for i in range(5)])
    heard: list[int] = []
    with BatchWriter(engine, "w1", on_written=heard.append) as writer:
        first = run_once(engine, ColourEncoder(), "w1", batch_size=3, writer=writer)
        second = run_once(engine, ColourEncoder(), "w1", batch_size=3, writer=writer)
        assert first.done == 3, "the first write was waited for before the second began"
        assert run_once(engine, ColourEncoder(), "w1", batch_size=3, writer=writer).claimed == 0
    assert (second.claimed, second.done, heard) == (2, 2, [3, 2])
    assert set(job_states(engine).values()) == {"done"} and embedding_count(engine) == 5


def test_a_failed_write_surfaces_and_leaves_its_jobs_to_the_lease(
    engine: Engine, empty_engine: Engine, tmp_path: Path
) -> None:
    add_model(engine)
    add_products(engine, [str(write_png(tmp_path / "0.png", (200, 0, 0)))])
    writer = BatchWriter(empty_engine, "w1")  # a database without ynet's schema: the write fails
    run_once(engine, ColourEncoder(), "w1", batch_size=1, writer=writer)
    with pytest.raises(ProgrammingError, match="ynet.embedding_jobs"):
        writer.close()
    assert job_states(engine) == {"p0": "running"} and embedding_count(engine) == 0
