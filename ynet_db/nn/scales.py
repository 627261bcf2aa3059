"""Input scales: one image seen at one or two sizes, carried as ONE pixel tensor per image.

With a second input size (`ModelConfig.second_input_size`, e.g. 224 and 320) each image is resized to
both sizes and the two are laid side by side on one canvas, 3 x 320 x (224 + 320): the first at the
left, top-aligned (the rest of its column zero), the second at the right. Batching, the ONNX graphs
(one input with a dynamic batch axis), the GPU engine and the workers keep handling one tensor per image.

The network does NOT run on the canvas: `views` cuts it back into the two images, the trunk and branch
run on each, and their maps are joined into one map of 7 x 7 + 10 x 10 = 149 locations (first size
first), which every pooling and re-rank reads as it reads 49. Run on the whole canvas, the backbone's
receptive fields cross the seam and see the zero margin where each image alone sees its 'SAME' padding:
on the default network's street branch (4 smooth random pictures, measured once) the canvas's
per-location cosines to each image run alone went down to 0.52 (median 0.96; a test keeps them below
0.9), its pooled GeM vectors' to 0.970, far from the 0.9999 an ONNX graph must keep; and the canvas
holds 3.5 times the pixels of one 224 image where the two separate runs process 3.0 times.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Scales:
    """The input sizes a model sees each image at (first size first) and its map's side at each."""

    sizes: tuple[int, ...]
    map_sides: tuple[int, ...]

    @property
    def several(self) -> bool:
        return len(self.sizes) > 1

    @property
    def pixel_shape(self) -> tuple[int, int, int]:
        """One image's pixel tensor: [3, S, S] for one size, the canvas [3, max, sum] for several."""
        return (3, max(self.sizes), sum(self.sizes))

    @property
    def locations(self) -> int:
        """L: the locations of every size's map together."""
        return sum(side * side for side in self.map_sides)

    @property
    def columns(self) -> list[tuple[int, int]]:
        """(left, size) of each size's image on the canvas, first size at the left."""
        lefts = np.cumsum((0, *self.sizes[:-1]))
        return [(int(left), size) for left, size in zip(lefts, self.sizes, strict=True)]

    def pack(self, images: list[np.ndarray]) -> np.ndarray:
        """Normalised images [S_i, S_i, 3] (one a size, in order) -> the pixel array [H, W, 3]."""
        if not self.several:
            return images[0]
        canvas = np.zeros((max(self.sizes), sum(self.sizes), 3), dtype=np.float32)
        for (left, size), image in zip(self.columns, images, strict=True):
            canvas[:size, left : left + size] = image
        return canvas

    def views(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """Pixels [B, 3, H, W] -> each size's images [B, 3, S_i, S_i] (one size: the pixels as they are)."""
        if not self.several:
            return [pixels]
        if tuple(pixels.shape[1:]) != self.pixel_shape:
            raise ValueError(
                f"pixels of shape {tuple(pixels.shape[1:])}: a model with input sizes "
                f"{' and '.join(map(str, self.sizes))} takes {self.pixel_shape} (ModelConfig.preprocess)"
            )
        return [pixels[:, :, :size, left : left + size] for left, size in self.columns]

    def join(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """Each size's map [B, L_i, C] -> one map [B, L, C] (no copy for one size)."""
        return maps[0] if len(maps) == 1 else torch.cat(maps, dim=1)

    def grids(self, weights: torch.Tensor) -> list[torch.Tensor]:
        """Weights over the locations [L] -> each size's grid [side_i, side_i]."""
        if weights.shape != (self.locations,):
            raise ValueError(f"weights of shape {tuple(weights.shape)}: this model's map has {self.locations}")
        cells = [side * side for side in self.map_sides]
        return [part.reshape(side, side) for part, side in zip(weights.split(cells), self.map_sides, strict=True)]
