"""The default path (what a shop gets with no training), measured on the generated benchmark.

    python bench/default_path.py DATASET [--val-products 500] [--out bench/results/default-path.json]

Every row is the pretrained default network (EfficientNet-Lite0, 1280-d identity projection) with
training-free changes only, beside its control:
  first stage  average pooling (the control), GeM p = 3, and each with the query pooled over the
               locations its own activations pick out (the query mask); PCA-whitening fitted on the
               catalogue's own vectors
  re-rank      the training-free context re-rank of each first stage's top 256 (its control: that
               first stage), at the beta chosen on validation
Every choice (beta, the whitening's shrinkage, which variant is the default path: the best re-ranked
top-1 on validation) is made on a validation split of the TRAINING products; the test split is then
scored once and never used to choose anything. Queries are counted once each. Feature maps are
computed once and cached: every variant reuses them. With --write-calibration, each variant's beta
and its validation evidence are recorded by model version in ynet_db/checkpoints/calibrations.json.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ynet_db.models.evaluate import (
    GalleryImage,
    QueryImage,
    Reranker,
    first_hit_ranks,
    gallery_images,
    query_images,
    summary,
    write_json,
)
from ynet_db.nn.attention import power_mean
from ynet_db.nn.calibration import BETAS, ContextCalibration, choose_beta, paired_standard_error
from ynet_db.nn.config import ModelConfig
from ynet_db.nn.model import RetrievalModel

KS = (1, 5, 10, 20, 50)
GEM_POWER = 3.0
SHRINKAGES = (0.01, 0.1, 1.0)
"""Whitening's eigenvalue floor, as a share of the mean eigenvalue (chosen on validation)."""


@dataclass(frozen=True)
class Split:
    """One evaluation's cached maps: queries (street branch) and gallery (shop branch)."""

    name: str
    queries: list[QueryImage]
    query_maps: torch.Tensor
    """Tensor[Q, L, C] float16."""
    gallery: list[GalleryImage]
    gallery_maps: torch.Tensor

    @property
    def query_items(self) -> list[tuple[str, ...]]:
        return [q.items for q in self.queries]

    @property
    def gallery_items(self) -> list[str]:
        return [g.item for g in self.gallery]


def cache_key(refs: Sequence[str], side: str, size: int) -> str:
    digest = hashlib.sha256(f"{side}|{size}".encode())
    for ref in refs:
        digest.update(f"{ref}\n".encode())
    return digest.hexdigest()[:16]


@torch.inference_mode()
def branch_maps(
    model: RetrievalModel, images: Sequence[Any], side: str, cache: Path, batch_size: int = 32
) -> torch.Tensor:
    """The branch's maps [N, L, C] in float16, from the cache when this exact list was encoded before."""
    path = cache / f"{side}-{cache_key([describe(i) for i in images], side, model.config.input_size)}.safetensors"
    if path.is_file():
        return load_file(str(path))["maps"]
    from tqdm import tqdm

    network, chunks = model.network, []
    branch = network.street if side == "street" else network.shop
    for start in tqdm(range(0, len(images), batch_size), desc=f"{side} maps", unit="batch"):
        pixels = torch.stack([model.preprocess(read(i)) for i in images[start : start + batch_size]])
        chunks.append(branch(network.trunk(pixels)).half())
    maps = torch.cat(chunks)
    cache.mkdir(parents=True, exist_ok=True)
    save_file({"maps": maps.contiguous()}, str(path))
    return maps


def describe(image: Any) -> str:
    return image.describe() if isinstance(image, QueryImage) else str(image.ref.path)


def read(image: Any) -> Any:
    from ynet_db.images.dataset import read_image

    return image.read() if isinstance(image, QueryImage) else read_image(image.ref)


def pooled(
    maps: torch.Tensor, power: float, weights: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> torch.Tensor:
    """L2-normalised power-mean pooling of maps [N, L, C] (uniform weights, or `weights(block)` [n, L])."""
    out = []
    for start in range(0, len(maps), 256):
        block = maps[start : start + 256].float()
        w = weights(block) if weights is not None else torch.full(block.shape[:2], 1 / block.shape[1])
        out.append(F.normalize(power_mean(block, w[:, None], power)[:, 0], dim=-1))
    return torch.cat(out)


def first_stage(model: RetrievalModel, split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's query and catalogue vectors, pooled from the cached maps as the model pools them."""
    power = model.config.pooling_power
    return pooled(split.query_maps, power, model.query_pooling), pooled(split.gallery_maps, power)


def whitening(catalogue: torch.Tensor, shrinkage: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """PCA-whitening fitted on catalogue vectors [G, D], eigenvalues floored at `shrinkage` x their mean."""
    data = catalogue.double()
    mean = data.mean(dim=0)
    covariance = (data - mean).t() @ (data - mean) / max(len(data) - 1, 1)
    values, vectors = torch.linalg.eigh(covariance)
    values = values.clamp(min=0)
    scale = (values + shrinkage * values.mean()).rsqrt()
    projection = (vectors * scale).float()

    def apply(x: torch.Tensor) -> torch.Tensor:
        return F.normalize((x - mean.float()) @ projection, dim=-1)

    return apply


def free_reranker(model: RetrievalModel, maps: torch.Tensor, gallery: torch.Tensor, beta: float) -> Reranker:
    def rerank(query: int, candidates: torch.Tensor) -> torch.Tensor:
        return model.free_rerank(maps[query].float(), gallery[candidates], beta)

    return rerank


def ranks_of(
    split: Split, queries: torch.Tensor, gallery: torch.Tensor, reranker: Reranker | None = None
) -> np.ndarray:
    return first_hit_ranks(queries, gallery, split.query_items, split.gallery_items, reranker=reranker)


def row_result(ranks: np.ndarray, control: np.ndarray | None) -> dict[str, Any]:
    result = {"queries": len(ranks), **summary(ranks, KS, 1000)}
    if control is not None:
        result["minus_control"] = {
            str(k): {
                "difference": float(np.mean(ranks < k) - np.mean(control < k)),
                "paired_standard_error": paired_standard_error(control < k, ranks < k),
            }
            for k in (1, 20)
        }
    return result


@dataclass(frozen=True)
class Choices:
    betas: dict[str, ContextCalibration]
    shrinkage: float
    validation: dict[str, Any]


def choose_on_validation(models: dict[str, RetrievalModel], splits: dict[str, Split]) -> Choices:
    """Every choice the test rows use, made here on the validation split only (`splits`: per variant)."""
    results: dict[str, Any] = {}
    betas: dict[str, ContextCalibration] = {}
    for name, model in models.items():
        val = splits[name]
        queries, gallery = first_stage(model, val)
        plain = ranks_of(val, queries, gallery)
        by_beta = {b: ranks_of(val, queries, gallery, free_reranker(model, val.query_maps, gallery, b)) for b in BETAS}
        betas[name] = choose_beta(plain, by_beta, f"{val.name} (validation products of the training split)")
        results[name] = {
            "plain": row_result(plain, None),
            "by_beta": {str(b): row_result(r, plain) for b, r in by_beta.items()},
        }
        click.echo(
            f"validation {name}: plain top-1 {np.mean(plain < 1):.3f}; "
            + ", ".join(f"beta {b:g} {np.mean(r < 1):.3f}" for b, r in by_beta.items())
        )
    val = splits["average"]
    queries, gallery = pooled(val.query_maps, 1.0), pooled(val.gallery_maps, 1.0)
    by_shrinkage = {}
    for shrinkage in SHRINKAGES:
        white = whitening(gallery, shrinkage)
        by_shrinkage[shrinkage] = ranks_of(val, white(queries), white(gallery))
    results["whitening"] = {str(s): row_result(r, None) for s, r in by_shrinkage.items()}
    shrinkage = max(SHRINKAGES, key=lambda s: (float(np.mean(by_shrinkage[s] < 1)), s))
    return Choices(betas, shrinkage, results)


def test_rows(
    models: dict[str, RetrievalModel], splits: dict[str, Split], choices: Choices
) -> dict[str, dict[str, Any]]:
    """The test split's rows, each with its control, at the choices made on validation."""
    rows: dict[str, dict[str, Any]] = {}
    first: dict[str, np.ndarray] = {}
    for name, model in models.items():
        test = splits[name]
        queries, gallery = first_stage(model, test)
        first[name] = ranks_of(test, queries, gallery)
        beta = choices.betas[name].beta
        reranked = ranks_of(test, queries, gallery, free_reranker(model, test.query_maps, gallery, beta))
        rows[name] = row_result(first[name], first["average"] if name != "average" else None)
        rows[f"{name} + context re-rank (beta {beta:g})"] = row_result(reranked, first[name])
    test = splits["average"]
    queries, gallery = pooled(test.query_maps, 1.0), pooled(test.gallery_maps, 1.0)
    white = whitening(gallery, choices.shrinkage)
    rows[f"average + PCA-whitening (catalogue-fitted, shrinkage {choices.shrinkage:g})"] = row_result(
        ranks_of(test, white(queries), white(gallery)), first["average"]
    )
    return rows


def validation_products(train: Any, count: int, seed: int) -> Any:
    from ynet_db.data.records import RetrievalDataset

    items = sorted(train.products)
    random.Random(seed).shuffle(items)
    chosen = set(items[:count])
    pairs = [p for p in train.pairs if p.item_id in chosen]
    products = {i: p for i, p in train.products.items() if i in chosen}
    return RetrievalDataset(f"{train.name} (validation)", train.root, products, pairs)


def table(rows: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| test split | top-1 | top-5 | top-20 | top-1 minus control | top-20 minus control |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        top, se = r["top_k"], r["standard_error"]
        diff = r.get("minus_control")
        d1 = f"{diff['1']['difference']:+.3f} ± {diff['1']['paired_standard_error']:.3f}" if diff else "(control)"
        d20 = f"{diff['20']['difference']:+.3f} ± {diff['20']['paired_standard_error']:.3f}" if diff else ""
        cells = [f"{top['1']:.3f} ± {se['1']:.3f}", f"{top['5']:.3f}", f"{top['20']:.3f} ± {se['20']:.3f}", d1, d20]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@click.command()
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--val-products", default=500, show_default=True, help="Training products held out for validation.")
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--cache", type=click.Path(file_okay=False, path_type=Path), default=Path("bench-data/default-path-cache")
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench/results/default-path.json"))
@click.option("--threads", default=2, show_default=True)
@click.option(
    "--second-scale", default=320, show_default=True, help="Second input size for the two-scale rows (0: none)."
)
@click.option(
    "--write-calibration/--no-write-calibration",
    default=False,
    help="Record the default's beta and its validation evidence in ynet_db/checkpoints/calibrations.json.",
)
def default_path(
    dataset: Path,
    val_products: int,
    seed: int,
    cache: Path,
    out: Path,
    threads: int,
    second_scale: int,
    write_calibration: bool,
) -> None:
    """Measure the default path's training-free options on DATASET's test split, chosen on validation."""
    from ynet_db.data import load_dataset

    torch.set_num_threads(threads)
    began = time.perf_counter()
    data = load_dataset(dataset)
    train, test = data.split("train"), data.split("test")
    val = validation_products(train, val_products, seed)
    models = {
        name: RetrievalModel.load_default(config=config)
        for name, config in (
            ("average", ModelConfig()),
            (f"GeM p={GEM_POWER:g}", ModelConfig(pooling_power=GEM_POWER)),
            ("average, query masked", ModelConfig(query_mask=True)),
            (f"GeM p={GEM_POWER:g}, query masked", ModelConfig(pooling_power=GEM_POWER, query_mask=True)),
        )
    }
    encoder = models["average"]  # the variants differ in pooling only: all read the same maps
    second = RetrievalModel.load_default(config=ModelConfig(input_size=second_scale, map_size=second_scale // 32))
    splits: dict[str, dict[str, Split]] = {}
    for name, part in (("validation", val), ("test", test)):
        queries, gallery = query_images(part), gallery_images(part)
        one = Split(
            f"{data.name}:{name}",
            queries,
            branch_maps(encoder, queries, "street", cache),
            gallery,
            branch_maps(encoder, gallery, "shop", cache),
        )
        splits[name] = dict.fromkeys(models, one)
        click.echo(f"{name}: {len(queries)} query images ({len(part.pairs)} pairs), gallery {len(gallery)}")
        if second_scale:
            # Two input scales: each image's locations at both sizes, pooled together as one map.
            both = Split(
                one.name,
                queries,
                torch.cat([one.query_maps, branch_maps(second, queries, "street", cache)], dim=1),
                gallery,
                torch.cat([one.gallery_maps, branch_maps(second, gallery, "shop", cache)], dim=1),
            )
            for base in ("average", f"GeM p={GEM_POWER:g}"):
                splits[name][f"{base}, two scales (224 + {second_scale})"] = both
    for variant in splits["test"]:
        if variant not in models:  # the option computes exactly these joined maps (tests/unit/nn/test_scales.py)
            base = models[variant.split(", two scales")[0]].config
            models[variant] = RetrievalModel.load_default(config=base.replace(second_input_size=second_scale))
    choices = choose_on_validation(models, splits["validation"])
    rows = test_rows(models, splits["test"], choices)
    click.echo(table(rows))
    # The default path is the one-scale variant whose re-ranked top-1 is best on validation (ties: the
    # simpler); two scales are an option, not the default: about 3x the encoder's cost (README).
    one_scale = [n for n in models if "two scales" not in n]
    best = max(one_scale, key=lambda n: (choices.betas[n].top1_reranked, -one_scale.index(n)))
    targets = {name: target_checks(rows, name, choices.betas[name].beta) for name in models}
    click.echo(f"best on validation: {best}\n" + json.dumps(targets[best], indent=2))
    result = {
        "dataset": str(dataset),
        "best_on_validation": best,
        "targets": targets,
        "test": rows,
        "validation": choices.validation,
        "chosen_on_validation": {
            "betas": {name: c.to_dict() for name, c in choices.betas.items()},
            "whitening_shrinkage": choices.shrinkage,
        },
        "model_versions": {name: m.version for name, m in models.items()},
        "settings": {
            "val_products": val_products,
            "seed": seed,
            "threads": threads,
            "betas": list(BETAS),
            "second_scale": second_scale,
        },
        "seconds": time.perf_counter() - began,
    }
    write_json(result, out)
    click.echo(f"wrote {out}")
    if write_calibration:
        record_calibrations({models[n].version: choices.betas[n] for n in models})


def target_checks(rows: dict[str, dict[str, Any]], variant: str, beta: float) -> dict[str, Any]:
    """The issue's targets for one variant as the default path, each number beside its control (test split)."""
    control, default = rows["average"], rows[variant]
    path = rows[f"{variant} + context re-rank (beta {beta:g})"]
    return {
        "default_path": f"{variant} + context re-rank (beta {beta:g})",
        "default_path_over_average_top1": path["top_k"]["1"] / max(control["top_k"]["1"], 1e-9),
        "default_path_minus_average_top20": path["top_k"]["20"] - control["top_k"]["20"],
        "rerank_minus_its_first_stage": path["minus_control"],
        "first_stage_top1": default["top_k"]["1"],
    }


def record_calibrations(calibrations: dict[str, ContextCalibration]) -> None:
    from ynet_db.nn.model import CALIBRATIONS

    stored = json.loads(CALIBRATIONS.read_text(encoding="utf-8")) if CALIBRATIONS.is_file() else {}
    stored.update({version: c.to_dict() for version, c in calibrations.items()})
    CALIBRATIONS.write_text(json.dumps(stored, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    click.echo(f"recorded {', '.join(calibrations)} in {CALIBRATIONS}")


if __name__ == "__main__":
    default_path()
