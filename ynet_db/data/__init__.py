"""Retrieval datasets: readers for the release formats, and the generated benchmark.

`load_dataset(root)` reads DeepFashion Consumer-to-Shop or Street2Shop, whichever layout `root`
holds; the generated benchmark (`ynet_db.data.synth`) is written in the DeepFashion layout so that
every evaluation goes through the same reader.
"""

from __future__ import annotations

from pathlib import Path

from ynet_db.data.deepfashion import PARTITION, is_deepfashion, read_deepfashion
from ynet_db.data.records import Box, DatasetError, ImageRef, Pair, Product, RetrievalDataset, make_tag
from ynet_db.data.street2shop import JSON_DIR, PHOTO_LIST, is_street2shop, read_street2shop

__all__ = [
    "Box",
    "DatasetError",
    "ImageRef",
    "Pair",
    "Product",
    "RetrievalDataset",
    "dataset_format",
    "load_dataset",
    "make_tag",
]

FORMATS = ("deepfashion-consumer2shop", "street2shop")


def dataset_format(root: Path) -> str:
    """The release format laid out under `root`; a DatasetError says what was looked for."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(root, "is not a directory")
    if is_deepfashion(root):
        return FORMATS[0]
    if is_street2shop(root):
        return FORMATS[1]
    raise DatasetError(
        root,
        f"is neither DeepFashion Consumer-to-Shop (expected {PARTITION}) nor Street2Shop "
        f"(expected {PHOTO_LIST} and {JSON_DIR}/); `ynet-db dataset synth` writes a generated one",
    )


def load_dataset(root: Path) -> RetrievalDataset:
    root = Path(root)
    if dataset_format(root) == FORMATS[0]:
        return read_deepfashion(root)
    return read_street2shop(root)
