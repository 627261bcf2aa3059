"""The frozen trunk's outputs, computed once per image (and view) and cached on disk.

Training only changes the branches above the trunk, so every epoch would recompute the same trunk
outputs; caching them makes training practical on a CPU (the trunk is ~7/8 of the compute).
Images that cannot be decoded are recorded with their error and left out, never crash the run.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from ynet_db.data.records import ImageRef
from ynet_db.nn.augment import augmented_view
from ynet_db.nn.config import ModelConfig
from ynet_db.nn.ynet import Trunk

ImageReader = Callable[[ImageRef], Image.Image]


@dataclass(frozen=True)
class TrunkFeatures:
    features: torch.Tensor
    """Tensor[N, V, C, H, W] float16: V views per image, view 0 the plain image."""
    ok: torch.Tensor
    """Tensor[N] bool: False where the image could not be read (its features are zeros)."""
    errors: dict[int, str]


def default_reader() -> ImageReader:
    from ynet_db.images.dataset import read_image

    return read_image


def cache_key(config: ModelConfig, refs: Sequence[ImageRef], views: int, seed: int) -> str:
    digest = hashlib.sha256()
    trunk = [config.weights_sha256, config.trunk_blocks, config.input_size, config.mean, config.std, views, seed]
    digest.update(json.dumps(trunk).encode())
    for ref in refs:
        stat = ref.path.stat() if ref.path.exists() else None
        stamp = (stat.st_size, stat.st_mtime_ns) if stat else None
        digest.update(f"{ref.path}|{ref.box}|{stamp}\n".encode())
    return digest.hexdigest()[:16]


def image_views(image: Image.Image, views: int, rng: random.Random) -> list[Image.Image]:
    return [image] + [augmented_view(image, rng) for _ in range(views - 1)]


@torch.inference_mode()
def compute_trunk_features(
    trunk: Trunk,
    config: ModelConfig,
    refs: Sequence[ImageRef],
    *,
    views: int = 1,
    seed: int = 0,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    reader: ImageReader | None = None,
    progress: str | None = None,
) -> TrunkFeatures:
    if config.scales.several:
        raise ValueError("trunk features are cached at one input size: a model with two cannot be trained")
    read = reader or default_reader()
    rng = random.Random(seed)
    trunk = trunk.to(device).eval()
    chunks: list[torch.Tensor] = []
    ok = torch.ones(len(refs), dtype=torch.bool)
    errors: dict[int, str] = {}
    for start in tqdm(range(0, len(refs), batch_size), desc=progress, disable=progress is None, unit="batch"):
        pixels: list[torch.Tensor] = []
        for index in range(start, min(start + batch_size, len(refs))):
            try:
                image = read(refs[index])
            except (ValueError, OSError) as error:  # ImageError is a ValueError; files may vanish
                ok[index], errors[index] = False, str(error)
                image = Image.new("RGB", (config.input_size, config.input_size))
            pixels.extend(config.preprocess(view) for view in image_views(image, views, rng))
        out = trunk(torch.stack(pixels).to(device)).half().cpu()
        chunks.append(out.view(-1, views, *out.shape[1:]))
    features = torch.cat(chunks) if chunks else torch.zeros(0, views, 1, 1, 1, dtype=torch.float16)
    features[~ok] = 0
    return TrunkFeatures(features, ok, errors)


def cached_trunk_features(
    trunk: Trunk,
    config: ModelConfig,
    refs: Sequence[ImageRef],
    cache_dir: Path | None,
    **options: object,
) -> TrunkFeatures:
    """`compute_trunk_features`, kept in `cache_dir` under a key of the config, files and options."""
    if cache_dir is None:
        return compute_trunk_features(trunk, config, refs, **options)  # type: ignore[arg-type]
    views = int(options.get("views", 1))  # type: ignore[call-overload]
    seed = int(options.get("seed", 0))  # type: ignore[call-overload]
    path = cache_dir / f"trunk-{cache_key(config, refs, views, seed)}.safetensors"
    if path.is_file():
        with safe_open(str(path), framework="pt") as handle:
            errors = {int(k): v for k, v in json.loads((handle.metadata() or {}).get("errors", "{}")).items()}
            return TrunkFeatures(handle.get_tensor("features"), handle.get_tensor("ok").bool(), errors)
    result = compute_trunk_features(trunk, config, refs, **options)  # type: ignore[arg-type]
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    tensors = {"features": result.features.contiguous(), "ok": result.ok.to(torch.uint8)}
    save_file(tensors, str(partial), metadata={"errors": json.dumps(result.errors)})
    partial.replace(path)
    return result
