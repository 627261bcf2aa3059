"""The shapes every dataset reader produces, whatever the release format on disk.

A retrieval dataset is a set of products (each with tags and shop images) and street-to-shop pairs:
a street (consumer) photo of a product and one of its shop photos, in a split. Splits are by product.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Box:
    """A crop in pixel coordinates, right and bottom exclusive."""

    left: int
    top: int
    right: int
    bottom: int

    def __post_init__(self) -> None:
        if self.right <= self.left or self.bottom <= self.top:
            raise ValueError(f"empty box {self}")


@dataclass(frozen=True)
class ImageRef:
    """One image file, with the release's bounding box of the product where it has one."""

    path: Path
    box: Box | None = None


@dataclass(frozen=True)
class Product:
    item_id: str
    category: str
    tags: tuple[str, ...]
    """Category and attribute values as 'field:value' strings, e.g. 'category:dress', 'color:red'."""
    shop_images: tuple[ImageRef, ...]


@dataclass(frozen=True)
class Pair:
    street: ImageRef
    shop: ImageRef
    item_id: str
    split: str
    """'train', 'val' or 'test'."""


@dataclass
class RetrievalDataset:
    name: str
    root: Path
    products: dict[str, Product]
    pairs: list[Pair] = field(default_factory=list)

    def split(self, name: str) -> RetrievalDataset:
        """The pairs of one split and only the products they name (the gallery of that split)."""
        pairs = [p for p in self.pairs if p.split == name]
        ids = {p.item_id for p in pairs}
        products = {i: p for i, p in self.products.items() if i in ids}
        return RetrievalDataset(f"{self.name}:{name}", self.root, products, pairs)

    @property
    def splits(self) -> list[str]:
        return sorted({p.split for p in self.pairs})


class DatasetError(ValueError):
    """A dataset file that does not follow its release format; the message names the file and line."""

    def __init__(self, path: Path, reason: str, line: int | None = None) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}")


def make_tag(field: str, value: str) -> str:
    """The 'field:value' tag for an attribute, lower-case with runs of spaces as '_'.

    One spelling per tag whatever the release wrote ('Short Sleeve', 'short  sleeve'), so a tag
    vocabulary built from one dataset matches the tags of another.
    """
    field_part, value_part = _tag_part(field), _tag_part(value)
    if not field_part or not value_part or ":" in field_part:
        raise ValueError(f"cannot make a tag of field {field!r} and value {value!r}")
    return f"{field_part}:{value_part}"


def _tag_part(text: str) -> str:
    return "_".join(text.lower().split())
