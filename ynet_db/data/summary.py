"""Counts that say what a retrieval dataset holds: per split, per category, per tag.

`products_per_tag_set` answers whether tags alone could identify a product: with many products per
combination of tags, an embedding has to look at the pixels.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ynet_db.data.records import RetrievalDataset


@dataclass(frozen=True)
class SplitCounts:
    products: int
    pairs: int
    street_images: int
    shop_images: int


@dataclass(frozen=True)
class DatasetSummary:
    name: str
    splits: dict[str, SplitCounts]
    categories: dict[str, int]
    """Products per category."""
    tags: dict[str, int]
    """Products per tag."""
    tag_sets: int
    """Distinct combinations of tags."""
    products_per_tag_set: float


def summarise(dataset: RetrievalDataset) -> DatasetSummary:
    products = dataset.products.values()
    tag_sets = Counter(frozenset(product.tags) for product in products)
    return DatasetSummary(
        name=dataset.name,
        splits={name: _split_counts(dataset.split(name)) for name in dataset.splits},
        categories=dict(sorted(Counter(product.category for product in products).items())),
        tags=dict(sorted(Counter(tag for product in products for tag in product.tags).items())),
        tag_sets=len(tag_sets),
        products_per_tag_set=len(dataset.products) / len(tag_sets) if tag_sets else 0.0,
    )


def _split_counts(split: RetrievalDataset) -> SplitCounts:
    return SplitCounts(
        products=len(split.products),
        pairs=len(split.pairs),
        street_images=len({pair.street.path for pair in split.pairs}),
        shop_images=len({image.path for product in split.products.values() for image in product.shop_images}),
    )
