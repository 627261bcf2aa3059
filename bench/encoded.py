"""A generated benchmark encoded by the serving model, once: the scale benchmark's real vectors.

Every shop photo goes through the shop encoder with its product's tags, as a worker embeds a catalogue
row (decode, preprocess, `encode_shop`), and every street photo through the street encoder, as a query
is encoded (decode, preprocess, `encode_street`); batches of 32 on the runtime the workers use (ONNX
Runtime on a CPU). The vectors are cached in one .npz per dataset under the model's version, so a second
run, or another benchmark, reads them instead of encoding again.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import click
import numpy as np
import torch
from tqdm import tqdm

from ynet_db.data import load_dataset
from ynet_db.data.synth import MANIFEST
from ynet_db.images.decode import decode_image
from ynet_db.nn.model import RetrievalModel

BATCH = 32
CACHE = Path("bench-data/vectors")
T = TypeVar("T")


@dataclass(frozen=True)
class EncodedCatalogue:
    """Products (in item id order) with their shop vectors, and every street photo's query vector."""

    model_version: str
    item_ids: np.ndarray
    """[N] str: the dataset's item ids."""
    categories: np.ndarray
    """[N] str."""
    shop: np.ndarray
    """[N, D] float32 unit vectors: what the database stores for each product."""
    street: np.ndarray
    """[S, D] float32 unit vectors: what a street photo's query searches with."""
    street_product: np.ndarray
    """[S] int: the product (row of `shop`) each street photo shows."""
    street_paths: np.ndarray
    """[S] str: each street photo's path relative to the dataset root."""
    seconds: dict[str, float]
    """Encoding time of the shop and the street photos, and images/s (from the run that filled the cache)."""

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.npz")  # written whole, then renamed: a killed run leaves no cache
        np.savez(
            partial,
            model_version=self.model_version,
            item_ids=self.item_ids,
            categories=self.categories,
            shop=self.shop,
            street=self.street,
            street_product=self.street_product,
            street_paths=self.street_paths,
            seconds=json.dumps(self.seconds),
        )
        partial.rename(path)

    @classmethod
    def read(cls, path: Path) -> EncodedCatalogue:
        with np.load(path) as data:
            return cls(
                model_version=str(data["model_version"]),
                item_ids=data["item_ids"],
                categories=data["categories"],
                shop=data["shop"],
                street=data["street"],
                street_product=data["street_product"],
                street_paths=data["street_paths"],
                seconds=json.loads(str(data["seconds"])),
            )


def cache_path(cache_dir: Path, dataset_root: Path, model_version: str) -> Path:
    """One file per model version and dataset (named by its folder and its manifest's content)."""
    manifest = hashlib.sha256((dataset_root / MANIFEST).read_bytes()).hexdigest()[:12]
    return cache_dir / model_version / f"{dataset_root.name}-{manifest}.npz"


def encoded(dataset_root: Path, model: RetrievalModel, cache_dir: Path) -> EncodedCatalogue:
    """The dataset's vectors under `model`: read from the cache, or encoded now and cached."""
    path = cache_path(cache_dir, dataset_root, model.version)
    if path.exists():
        return EncodedCatalogue.read(path)
    catalogue = encode(dataset_root, model)
    catalogue.save(path)
    return catalogue


def encode(dataset_root: Path, model: RetrievalModel) -> EncodedCatalogue:
    dataset = load_dataset(dataset_root)
    products = [dataset.products[item] for item in sorted(dataset.products)]
    row = {product.item_id: i for i, product in enumerate(products)}
    pairs = sorted({(pair.street.path, pair.item_id) for pair in dataset.pairs})
    started = time.perf_counter()
    shop = _encode_all(
        [(p.shop_images[0].path, p.tags) for p in products],
        lambda items: model.encode_shop(_pixels(model, [path for path, _ in items]), [t for _, t in items]).vectors,
        "shop photos",
    )
    shop_s = time.perf_counter() - started
    started = time.perf_counter()
    street = _encode_all(
        [path for path, _ in pairs], lambda paths: model.encode_street(_pixels(model, paths)).vectors, "street photos"
    )
    street_s = time.perf_counter() - started
    return EncodedCatalogue(
        model_version=model.version,
        item_ids=np.array([p.item_id for p in products]),
        categories=np.array([p.category for p in products]),
        shop=shop,
        street=street,
        street_product=np.array([row[item] for _, item in pairs]),
        street_paths=np.array([str(path.relative_to(dataset_root)) for path, _ in pairs]),
        seconds={
            "shop_s": round(shop_s, 1),
            "street_s": round(street_s, 1),
            "shop_images_per_s": round(len(products) / shop_s, 2),
            "street_images_per_s": round(len(pairs) / street_s, 2),
        },
    )


def _pixels(model: RetrievalModel, paths: Sequence[Path]) -> torch.Tensor:
    return torch.stack([model.preprocess(decode_image(path.read_bytes(), source=str(path))) for path in paths])


def _encode_all(items: Sequence[T], encode_batch: Callable[[Sequence[T]], torch.Tensor], what: str) -> np.ndarray:
    with tqdm(total=len(items), desc=f"encoding {what}", unit="image", mininterval=5) as bar:
        vectors = []
        for batch in _batches(items, BATCH):
            vectors.append(encode_batch(batch).numpy().astype(np.float32))
            bar.update(len(batch))
    return np.concatenate(vectors)


def _batches(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def serving_model(threads: int) -> RetrievalModel:
    """The model workers serve (YNET_MODEL, else the shipped default) on the runtime they use."""
    from ynet_db.config import Settings
    from ynet_db.models.serving import load_configured

    torch.set_num_threads(threads)
    return load_configured(Settings.from_env(), threads)


@click.command()
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--cache", default=CACHE, show_default=True, type=click.Path(file_okay=False, path_type=Path), help="Vector cache."
)
@click.option("--threads", default=2, show_default=True, type=click.IntRange(1), help="Encoder threads.")
def main(dataset: Path, cache: Path, threads: int) -> None:
    """Encode DATASET's shop and street photos with the serving model, once (cached under its version)."""
    model = serving_model(threads)
    catalogue = encoded(dataset, model, cache)
    click.echo(
        f"{cache_path(cache, dataset, model.version)}: {len(catalogue.shop)} products, "
        f"{len(catalogue.street)} street photos, {catalogue.seconds}"
    )


if __name__ == "__main__":
    main()
