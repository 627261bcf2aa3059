"""The tag vocabulary: category and attribute values seen in training, as multi-hot vectors.

It is stored with the model, because the tag attention's weights are indexed by it. Tags the model
never saw (a new colour in the catalogue) carry no learned meaning: they are ignored and counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class TagBatch:
    multi_hot: torch.Tensor
    """Tensor[B, T] float32 of 0/1."""
    unknown: list[int]
    """How many of each item's tags were not in the vocabulary (and so ignored)."""
    known: list[int]

    @property
    def without_known_tags(self) -> list[bool]:
        """Items whose tag attention has nothing to go on: they are average pooled."""
        return [count == 0 for count in self.known]


@dataclass(frozen=True)
class TagVocabulary:
    tags: tuple[str, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(set(self.tags)) != len(self.tags):
            raise ValueError("tag vocabulary has duplicates")
        object.__setattr__(self, "_index", {tag: i for i, tag in enumerate(self.tags)})

    @classmethod
    def build(cls, tag_lists: Iterable[Sequence[str]]) -> TagVocabulary:
        """From the training products' tags; sorted, so the same catalogue gives the same vocabulary."""
        return cls(tuple(sorted({tag for tags in tag_lists for tag in tags})))

    def __len__(self) -> int:
        return len(self.tags)

    def __contains__(self, tag: object) -> bool:
        return tag in self._index

    def encode(self, tag_lists: Sequence[Sequence[str]]) -> TagBatch:
        multi_hot = torch.zeros(len(tag_lists), len(self.tags))
        unknown: list[int] = []
        known: list[int] = []
        for row, tags in enumerate(tag_lists):
            indices = {self._index[tag] for tag in tags if tag in self._index}
            multi_hot[row, sorted(indices)] = 1.0
            known.append(len(indices))
            unknown.append(sum(1 for tag in set(tags) if tag not in self._index))
        return TagBatch(multi_hot, unknown, known)
