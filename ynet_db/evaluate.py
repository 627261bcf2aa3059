"""Top-k retrieval accuracy (method.md, "Evaluation protocol"), per category, with bootstrap errors.

A query is a street photo; the gallery is every shop image of the evaluated products (plus, as an
option, distractor images that match no query). A query's rank is the number of gallery images of
*other* products scored above the best image of its own product; top-k accuracy is the share of
queries whose rank is below k.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

KS = (1, 5, 10, 20, 50)
RERANK_DEPTH = 256
# Rescores one query's short list: (query index, candidate gallery indices) -> scores, higher better.
Reranker = Callable[[int, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Ranking:
    ranks: np.ndarray
    """Per query: how many other products' gallery images scored above its own (inf if none in gallery)."""
    categories: list[str]


def first_hit_ranks(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    query_items: Sequence[str],
    gallery_items: Sequence[str],
    *,
    reranker: Reranker | None = None,
    rerank_depth: int = RERANK_DEPTH,
    chunk: int = 256,
) -> np.ndarray:
    """Cosine-similarity ranks of normalised vectors; with `reranker`, its order replaces the top `rerank_depth`."""
    item_ids = {item: i for i, item in enumerate(sorted(set(gallery_items) | set(query_items)))}
    gallery_codes = torch.tensor([item_ids[i] for i in gallery_items])
    ranks = np.full(len(query_items), np.inf)
    for start in range(0, len(query_items), chunk):
        scores = queries[start : start + chunk].float() @ gallery.float().t()
        for offset, row in enumerate(scores):
            q = start + offset
            match = gallery_codes == item_ids[query_items[q]]
            if match.any():
                ranks[q] = rank_of_best_match(row, match, reranker, q, rerank_depth)
    return ranks


def rank_of_best_match(
    scores: torch.Tensor, match: torch.Tensor, reranker: Reranker | None, query: int, depth: int
) -> float:
    best = scores[match].max()
    rank = int((scores[~match] > best).sum())
    if reranker is None or rank >= depth:
        return float(rank)
    # The match is in the short list: only the re-ranker's order of that list matters.
    short = torch.topk(scores, min(depth, scores.numel())).indices
    new_scores = reranker(query, short)
    short_match = match[short]
    if not short_match.any():  # ties at the cut pushed the match out of the short list
        return float(rank)
    best_new = new_scores[short_match].max()
    return float((new_scores[~short_match] > best_new).sum())


def topk_accuracy(ranks: np.ndarray, ks: Sequence[int] = KS) -> dict[int, float]:
    return {k: float(np.mean(ranks < k)) if len(ranks) else 0.0 for k in ks}


def bootstrap_standard_error(hits: np.ndarray, rounds: int = 1000, seed: int = 0) -> float:
    """Standard deviation of the mean of `hits` over resamplings of the queries with replacement."""
    if len(hits) == 0:
        return 0.0
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, len(hits), size=(rounds, len(hits)))
    return float(hits[samples].mean(axis=1).std(ddof=1))


def report(ranking: Ranking, ks: Sequence[int] = KS, rounds: int = 1000) -> dict[str, Any]:
    """JSON-ready: overall and per-category top-k accuracy, each with its bootstrap standard error."""
    result = {"queries": len(ranking.ranks), **summary(ranking.ranks, ks, rounds)}
    categories = np.array(ranking.categories)
    result["per_category"] = {
        name: {"queries": int((categories == name).sum()), **summary(ranking.ranks[categories == name], ks, rounds)}
        for name in sorted(set(ranking.categories))
    }
    return result


def summary(ranks: np.ndarray, ks: Sequence[int], rounds: int) -> dict[str, Any]:
    accuracy = topk_accuracy(ranks, ks)
    errors = {k: bootstrap_standard_error((ranks < k).astype(np.float64), rounds) for k in ks}
    return {"top_k": {str(k): accuracy[k] for k in ks}, "standard_error": {str(k): errors[k] for k in ks}}


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


def plot_topk(curves: dict[str, dict[str, Any]], path: Path, title: str = "Top-k retrieval accuracy") -> None:
    """One line per named report (its 'top_k' and 'standard_error'), error bars of one standard error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for name, result in curves.items():
        ks = [int(k) for k in result["top_k"]]
        values = [result["top_k"][str(k)] for k in ks]
        errors = [result["standard_error"][str(k)] for k in ks]
        axes.errorbar(ks, values, yerr=errors, marker="o", capsize=3, label=name)
    axes.set_xscale("log")
    axes.set_xlabel("k")
    axes.set_ylabel("top-k accuracy")
    axes.set_ylim(0, 1)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def distractor_refs(folder: Path) -> list[Any]:
    """Every image file under `folder`: gallery entries that match no query."""
    from ynet_db.data.records import ImageRef

    return [ImageRef(p) for p in sorted(folder.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]


def evaluate_model(
    model: Any,
    dataset: Any,
    *,
    crop: bool = False,
    distractors: Path | None = None,
    rerank: bool = False,
    batch_size: int = 32,
    progress: bool = True,
) -> dict[str, Any]:
    """Encode a split's street photos and shop images with a RetrievalModel and report top-k accuracy.

    `dataset` is one split (`RetrievalDataset.split(...)`). Images that cannot be read are left out
    and listed under 'unreadable'; they never stop the run.
    """
    from ynet_db.data.records import ImageRef

    fix = (lambda r: r) if crop else (lambda r: ImageRef(r.path, None))
    gallery_entries = [
        (item, fix(ref), p.tags) for item, p in sorted(dataset.products.items()) for ref in p.shop_images
    ]
    if distractors is not None:
        gallery_entries += [(f"distractor:{ref.path}", ref, ()) for ref in distractor_refs(distractors)]
    unreadable: list[str] = []
    (gallery_vectors, _), gallery_ok = encode_images(
        model,
        [r for _, r, _ in gallery_entries],
        [t for _, _, t in gallery_entries],
        "shop",
        batch_size,
        progress,
        unreadable,
    )
    street_refs = [fix(p.street) for p in dataset.pairs]
    encoded, query_ok = encode_images(model, street_refs, None, "street", batch_size, progress, unreadable)
    gallery_items = [gallery_entries[i][0] for i in gallery_ok]
    pairs = [dataset.pairs[i] for i in query_ok]
    query_items = [p.item_id for p in pairs]
    queries, maps = encoded
    reranker = None
    if rerank:

        def reranker(query: int, candidates: torch.Tensor) -> torch.Tensor:
            return model.rerank(maps[query], gallery_vectors[candidates])

    ranks = first_hit_ranks(queries, gallery_vectors, query_items, gallery_items, reranker=reranker)
    result = report(Ranking(ranks, [dataset.products[i].category for i in query_items]))
    result.update(
        model=model.version,
        gallery=len(gallery_items),
        distractors=sum(1 for i in gallery_items if i.startswith("distractor:")),
        reranked=rerank,
        unreadable=unreadable,
    )
    return result


def encode_images(
    model: Any,
    refs: Sequence[Any],
    tags: Sequence[Sequence[str]] | None,
    side: str,
    batch_size: int,
    progress: bool,
    unreadable: list[str],
) -> tuple[tuple[torch.Tensor, torch.Tensor], list[int]]:
    """(vectors [N, D], street maps or an empty tensor) of the readable images, and their indices."""
    from tqdm import tqdm

    from ynet_db.images import read_image

    vectors, maps, kept = [], [], []
    for start in tqdm(range(0, len(refs), batch_size), desc=f"{side} images", disable=not progress, unit="batch"):
        pixels, rows = [], []
        for index in range(start, min(start + batch_size, len(refs))):
            try:
                pixels.append(model.preprocess(read_image(refs[index])))
                rows.append(index)
            except (ValueError, OSError) as error:
                unreadable.append(str(error))
        if not rows:
            continue
        batch = torch.stack(pixels)
        if tags is None:
            street = model.encode_street(batch)
            vectors.append(street.vectors)
            maps.append(street.maps)
        else:
            vectors.append(model.encode_shop(batch, [tags[i] for i in rows]).vectors)
        kept.extend(rows)
    dim = model.embedding_dim
    stacked = torch.cat(vectors) if vectors else torch.zeros(0, dim)
    return (stacked, torch.cat(maps) if maps else torch.zeros(0)), kept
