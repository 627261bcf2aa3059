"""A shop calibrates the training-free context re-rank on its own catalogue, with no street photos.

    calibration = calibrate(engine, model, record)     # measured through the real query path
    store(engine, record, calibration)                 # search re-ranks with it only if it helps

Queries are augmentation-made street views (crop, mirror, light) of a sample of the catalogue's own
photos; each is answered as search answers a shopper (street branch, the SQL prefilter's candidates
from the stored vectors), and its product's rank is read before and after the re-rank at each beta of
the grid. The beta with the best top-1 is stored in the registry (`ynet.models.config ->
'context_rerank'`) with its evidence; search then re-ranks by default only where that evidence says
the re-rank beat the first stage (`ContextCalibration.helps`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import Engine, text

from ynet_db.images.decode import ImageError, decode_image
from ynet_db.images.fetch import fetch_image_bytes
from ynet_db.images.policy import FetchPolicy
from ynet_db.models.evaluate import view_seed
from ynet_db.models.registry import ModelRecord, store_calibration
from ynet_db.nn.calibration import BETAS, ContextCalibration, choose_beta
from ynet_db.search.prefilter import prefilter

if TYPE_CHECKING:
    from ynet_db.nn.model import RetrievalModel

SAMPLE = text(
    """
    SELECT p.id, p.external_id, p.image_uri
      FROM ynet.products p JOIN ynet.embeddings e ON e.product_id = p.id AND e.model_id = :model_id
     ORDER BY md5(p.external_id || :seed), p.id
     LIMIT :n
    """
)


class CalibrationRefused(RuntimeError):
    """Too few readable, embedded products to measure on; the message says how many there were."""


def calibrate(
    engine: Engine,
    model: RetrievalModel,
    record: ModelRecord,
    *,
    queries: int = 300,
    candidates: int = 256,
    seed: int = 0,
    minimum: int = 20,
    policy: FetchPolicy | None = None,
) -> ContextCalibration:
    """Choose beta on up to `queries` augmented views of embedded catalogue photos (`record`'s vectors),
    read under `policy` (default: the environment's, as the workers read them)."""
    policy = policy or FetchPolicy.from_env()
    with engine.connect() as conn:
        sample = conn.execute(SAMPLE, {"model_id": record.id, "seed": str(seed), "n": queries}).all()
    views, products = [], []
    for product_id, external_id, uri in sample:
        try:
            image = decode_image(fetch_image_bytes(uri, policy=policy), source=uri)
        except (ImageError, ValueError, OSError):
            continue  # an unreadable photo is the embedder's business (a dead job); it just is not a query
        views.append(street_view(image, external_id, seed))
        products.append(product_id)
    if len(views) < minimum:
        raise CalibrationRefused(
            f"model {record.version}: {len(views)} readable embedded products, at least {minimum} needed"
        )
    plain, by_beta = query_ranks(engine, model, record, views, products, candidates)
    return choose_beta(plain, by_beta, f"catalogue: {len(views)} augmented views of its own photos")


def street_view(image: object, external_id: str, seed: int) -> object:
    from ynet_db.nn.augment import augmented_view

    return augmented_view(image, random.Random(view_seed(external_id, seed)))  # type: ignore[arg-type]


def query_ranks(
    engine: Engine,
    model: RetrievalModel,
    target: ModelRecord,
    views: Sequence[object],
    products: Sequence[int],
    candidates: int,
) -> tuple[np.ndarray, dict[float, np.ndarray]]:
    """Each query's rank among its prefilter candidates, before and after the re-rank at each beta
    (inf where its product is not among the candidates: no re-rank can reach it)."""
    import torch

    plain = np.full(len(views), np.inf)
    by_beta = {beta: np.full(len(views), np.inf) for beta in BETAS}
    for start in range(0, len(views), 32):
        pixels = torch.stack([model.preprocess(v) for v in views[start : start + 32]])  # type: ignore[arg-type]
        street = model.encode_street(pixels)
        for offset in range(len(pixels)):
            q = start + offset
            found = prefilter(
                engine, street.vectors[offset].numpy(), candidates=candidates, with_vectors=True, model=target
            )
            own = np.array([c.product_id == products[q] for c in found.candidates])
            if not own.any():
                continue
            plain[q] = float(np.argmax(own))
            vectors = torch.from_numpy(found.vectors)
            for beta in BETAS:
                scores = model.free_rerank(street.maps[offset], vectors, beta).numpy()
                by_beta[beta][q] = float((scores[~own] > scores[own].max()).sum())
    return plain, by_beta


def store(engine: Engine, record: ModelRecord, calibration: ContextCalibration) -> None:
    """Record the calibration with the model version; search reads it with the active model."""
    store_calibration(engine, record.id, calibration.to_dict())


def load_registered_model(engine: Engine, record: ModelRecord) -> RetrievalModel:
    """The registered model as it was registered, in PyTorch (the reference the graphs are checked against)."""
    from ynet_db.config import Settings
    from ynet_db.models.serving import load_registered

    try:
        return load_registered(engine, record.id, Settings(runtime="torch", device="cpu"))
    except LookupError as error:
        raise CalibrationRefused(str(error)) from error
