"""Top-k retrieval accuracy (docs/method.md#evaluation-protocol), per category, with bootstrap errors.

A query is a street photo, counted once however many pairs list it (DeepFashion's partition file
lists a consumer photo once per shop photo of its item; counting pairs would weight a photo by its
item's shop photos). The gallery is every shop image of the evaluated products (plus, as an option,
distractor images that match no query). A query's rank is the number of gallery images of *other*
products scored above the best image of its own product(s); top-k accuracy is the share of queries
whose rank is below k.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ynet_db.data.records import ImageRef, Product, RetrievalDataset

KS = (1, 5, 10, 20, 50)
RERANK_DEPTH = 256
TOP_RESULTS = 5
"""Results kept per query in the JSON."""
# Rescores one query's short list: (query index, candidate gallery indices) -> scores, higher better.
Reranker = Callable[[int, torch.Tensor], torch.Tensor]
# A query's right product, or the several products one photo shows.
QueryItems = str | Collection[str]


@dataclass(frozen=True)
class Ranking:
    ranks: np.ndarray
    """Per query: how many other products' gallery images scored above its own (inf if none in gallery)."""
    categories: list[str]


@dataclass(frozen=True)
class QueryRanks:
    ranks: np.ndarray
    """As `Ranking.ranks`."""
    top: list[list[int]]
    """Per query, the gallery indices of its first results in the final (re-ranked) order."""


def first_hit_ranks(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    query_items: Sequence[QueryItems],
    gallery_items: Sequence[str],
    *,
    reranker: Reranker | None = None,
    rerank_depth: int = RERANK_DEPTH,
    chunk: int = 256,
) -> np.ndarray:
    """Cosine-similarity ranks of normalised vectors; with `reranker`, its order replaces the top `rerank_depth`."""
    return rank_queries(
        queries, gallery, query_items, gallery_items, reranker=reranker, rerank_depth=rerank_depth, chunk=chunk
    ).ranks


def rank_queries(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    query_items: Sequence[QueryItems],
    gallery_items: Sequence[str],
    *,
    reranker: Reranker | None = None,
    rerank_depth: int = RERANK_DEPTH,
    chunk: int = 256,
    top_n: int = 0,
) -> QueryRanks:
    """`first_hit_ranks`, and each query's first `top_n` gallery indices in the final order."""
    wanted = [{item} if isinstance(item, str) else set(item) for item in query_items]
    item_ids = {item: i for i, item in enumerate(sorted(set(gallery_items).union(*wanted)))}
    gallery_codes = torch.tensor([item_ids[i] for i in gallery_items], dtype=torch.int64)
    ranks = np.full(len(query_items), np.inf)
    top: list[list[int]] = []
    for start in range(0, len(query_items), chunk):
        scores = queries[start : start + chunk].float() @ gallery.float().t()
        for offset, row in enumerate(scores):
            q = start + offset
            match = torch.isin(gallery_codes, torch.tensor([item_ids[i] for i in wanted[q]], dtype=torch.int64))
            ranks[q], first = rank_one(row, match, reranker, q, rerank_depth, top_n)
            top.append(first)
    return QueryRanks(ranks, top)


def rank_one(
    scores: torch.Tensor, match: torch.Tensor, reranker: Reranker | None, query: int, depth: int, top_n: int
) -> tuple[float, list[int]]:
    """(rank of the best match, first `top_n` gallery indices) of one query's scores."""
    rank = float(int((scores[~match] > scores[match].max()).sum())) if match.any() else float("inf")
    if reranker is None or (rank >= depth and top_n == 0):
        return rank, torch.topk(scores, min(top_n, scores.numel())).indices.tolist()
    short = torch.topk(scores, min(depth, scores.numel())).indices
    new_scores = reranker(query, short)
    order = short[torch.argsort(-new_scores, stable=True)]  # ties keep the first stage's order
    first = order[:top_n].tolist()
    short_match = match[short]
    if rank >= depth or not short_match.any():  # ties at the cut can push the match out of the short list
        return rank, first
    # The match is in the short list: only the re-ranker's order of that list matters.
    best_new = new_scores[short_match].max()
    return float((new_scores[~short_match] > best_new).sum()), first


def topk_accuracy(ranks: np.ndarray, ks: Sequence[int] = KS) -> dict[int, float]:
    return {k: float(np.mean(ranks < k)) if len(ranks) else 0.0 for k in ks}


def bootstrap_standard_error(hits: np.ndarray, rounds: int = 1000, seed: int = 0) -> float:
    """Standard deviation of the mean of `hits` over resamplings of the queries with replacement."""
    if len(hits) == 0:
        return 0.0
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, len(hits), size=(rounds, len(hits)))
    return float(hits[samples].mean(axis=1).std(ddof=1))


def paired_difference(
    ranks: np.ndarray, control: np.ndarray, ks: Sequence[int] = KS, rounds: int = 1000
) -> dict[str, dict[str, float]]:
    """Top-k of `ranks` less top-k of `control`, the same queries ranked by two models, each difference with
    its paired bootstrap standard error (the queries resampled together): far smaller than the two rows'
    own errors combined when both models find the same easy queries."""
    if ranks.shape != control.shape:
        raise ValueError(f"paired rankings need the same queries: {ranks.shape} against {control.shape}")
    out: dict[str, dict[str, float]] = {}
    for k in ks:
        gained = (ranks < k).astype(np.float64) - (control < k).astype(np.float64)
        out[str(k)] = {"difference": float(gained.mean()), "standard_error": bootstrap_standard_error(gained, rounds)}
    return out


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


def distractor_refs(folder: Path) -> list[ImageRef]:
    """Every image file under `folder`: gallery entries that match no query."""
    return [ImageRef(p) for p in sorted(folder.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]


@dataclass(frozen=True)
class QueryImage:
    ref: ImageRef
    items: tuple[str, ...]
    """The products it shows: any shop image of any of them is a right answer (usually one product)."""
    category: str
    view_seed: int | None = None
    """Set for an augmentation-made street view of `ref` (catalogue mode), drawn with this seed."""

    def read(self) -> Any:
        from ynet_db.images.dataset import read_image

        image = read_image(self.ref)
        if self.view_seed is None:
            return image
        from ynet_db.nn.augment import augmented_view

        return augmented_view(image, random.Random(self.view_seed))

    def describe(self) -> str:
        return str(self.ref.path) if self.view_seed is None else f"{self.ref.path} (augmented view {self.view_seed})"


@dataclass(frozen=True)
class GalleryImage:
    item: str
    ref: ImageRef
    tags: tuple[str, ...]


def query_images(dataset: RetrievalDataset, *, crop: bool = False) -> list[QueryImage]:
    """Each street photo of the split once, in the order the pairs first list it, with every product it
    is paired with (uncropped, the same photo under two boxes is one query)."""
    fix = _ref_fixer(crop)
    seen: dict[ImageRef, list[str]] = {}
    for pair in dataset.pairs:
        items = seen.setdefault(fix(pair.street), [])
        if pair.item_id not in items:
            items.append(pair.item_id)
    return [QueryImage(ref, tuple(items), dataset.products[items[0]].category) for ref, items in seen.items()]


def gallery_images(dataset: RetrievalDataset, *, crop: bool = False) -> list[GalleryImage]:
    fix = _ref_fixer(crop)
    return [
        GalleryImage(item, fix(ref), p.tags) for item, p in sorted(dataset.products.items()) for ref in p.shop_images
    ]


def catalogue_queries(products: Mapping[str, Product], seed: int = 0) -> tuple[list[QueryImage], list[GalleryImage]]:
    """Queries a catalogue makes of itself, and the rest of it as the gallery.

    A product with a second photo gives that photo as its query, and it leaves the gallery; a product
    with one photo gives an augmentation-made street view of it (a crop, mirror, light change), and
    the photo stays. Deterministic for a seed.
    """
    queries: list[QueryImage] = []
    gallery: list[GalleryImage] = []
    for item, product in sorted(products.items()):
        images = [uncropped(ref) for ref in product.shop_images]
        if not images:
            continue
        if len(images) > 1:
            queries.append(QueryImage(images[1], (item,), product.category))
            kept = [images[0], *images[2:]]
        else:
            queries.append(QueryImage(images[0], (item,), product.category, view_seed=view_seed(item, seed)))
            kept = images
        gallery.extend(GalleryImage(item, ref, product.tags) for ref in kept)
    return queries, gallery


def catalogue_file(path: Path) -> tuple[RetrievalDataset, list[str]]:
    """A catalogue import file (CSV or JSON Lines) as a dataset of products without pairs, for the
    catalogue mode; rows it cannot use are returned as 'file:line: reason'."""
    from ynet_db.ingestion.catalog import Rejection, validate

    products: dict[str, Product] = {}
    problems: list[str] = []
    for line, row in validate(path):
        if isinstance(row, Rejection):
            problems.append(f"{path}:{line}: {row.reason}")
        elif row.image_uri.lower().startswith(("http://", "https://")):
            problems.append(f"{path}:{line}: {row.image_uri} is remote; only local copies of the photos are read here")
        else:
            products[row.external_id] = Product(
                row.external_id, row.category, row.tags, (ImageRef(Path(row.image_uri)),)
            )
    return RetrievalDataset(path.name, path.parent, products), problems


def view_seed(item: str, seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}|{item}".encode()).digest()[:8], "big")


def uncropped(ref: ImageRef) -> ImageRef:
    return ImageRef(ref.path, None)


def _ref_fixer(crop: bool) -> Callable[[ImageRef], ImageRef]:
    return (lambda r: r) if crop else uncropped


@dataclass(frozen=True)
class Encoded:
    """A model's vectors of one evaluation's queries and gallery (the readable images only)."""

    queries: list[QueryImage]
    vectors: torch.Tensor
    """Tensor[Q, D] the first stage's query vectors."""
    maps: torch.Tensor
    """Tensor[Q, L, D] the query maps, for re-ranking."""
    gallery: list[GalleryImage]
    gallery_vectors: torch.Tensor
    unreadable: list[str]


def encode_evaluation(
    model: Any,
    queries: Sequence[QueryImage],
    gallery: Sequence[GalleryImage],
    *,
    batch_size: int = 32,
    progress: bool = True,
) -> Encoded:
    """Encode the gallery with the shop branch and the queries with the street branch, as search does.

    Images that cannot be read are left out and listed under 'unreadable'; they never stop the run.
    """
    unreadable: list[str] = []
    (gallery_vectors, _), gallery_ok = encode_images(
        model, [g.ref for g in gallery], [g.tags for g in gallery], "shop", batch_size, progress, unreadable
    )
    (vectors, maps), query_ok = encode_images(model, list(queries), None, "street", batch_size, progress, unreadable)
    return Encoded(
        [queries[i] for i in query_ok], vectors, maps, [gallery[i] for i in gallery_ok], gallery_vectors, unreadable
    )


def score_evaluation(encoded: Encoded, reranker: Reranker | None = None, top_n: int = TOP_RESULTS) -> dict[str, Any]:
    """Top-k accuracy of encoded queries, overall and per category, and each query's own result."""
    ranked = rank_queries(
        encoded.vectors,
        encoded.gallery_vectors,
        [q.items for q in encoded.queries],
        [g.item for g in encoded.gallery],
        reranker=reranker,
        top_n=top_n,
    )
    result = report(Ranking(ranked.ranks, [q.category for q in encoded.queries]))
    result["per_query"] = [
        per_query(query, rank, [encoded.gallery[i] for i in first])
        for query, rank, first in zip(encoded.queries, ranked.ranks, ranked.top, strict=True)
    ]
    return result


def per_query(query: QueryImage, rank: float, first: Sequence[GalleryImage]) -> dict[str, Any]:
    return {
        "query": query.describe(),
        "products": list(query.items),
        "rank": None if np.isinf(rank) else int(rank),
        "top": [{"product": g.item, "image": str(g.ref.path)} for g in first],
    }


def evaluate_model(
    model: Any,
    dataset: RetrievalDataset,
    *,
    crop: bool = False,
    distractors: Path | None = None,
    rerank: bool | None = None,
    catalogue: bool = False,
    batch_size: int = 32,
    progress: bool = True,
) -> dict[str, Any]:
    """Encode a split's street photos (each once) and shop images with a RetrievalModel; report top-k.

    `dataset` is one split (`RetrievalDataset.split(...)`). With `catalogue`, no street photos are
    used: the queries are the split's own catalogue images (`catalogue_queries`). `rerank`: None
    re-ranks as search does, only where the model's re-ranker was measured to help.
    """
    if rerank is None:
        rerank = bool(model.rerank_measured_to_help)
    encoded = encode_evaluation(
        model, *evaluation_sets(dataset, crop, distractors, catalogue), batch_size=batch_size, progress=progress
    )
    result = score_evaluation(encoded, model_reranker(model, encoded) if rerank else None)
    result.update(
        model=model.version,
        gallery=len(encoded.gallery),
        distractors=sum(1 for g in encoded.gallery if g.item.startswith("distractor:")),
        reranked=rerank,
        mode="catalogue" if catalogue else "street",
        unreadable=encoded.unreadable,
    )
    return result


def evaluation_sets(
    dataset: RetrievalDataset, crop: bool, distractors: Path | None, catalogue: bool
) -> tuple[list[QueryImage], list[GalleryImage]]:
    if catalogue:
        queries, gallery = catalogue_queries(dataset.products)
    else:
        queries, gallery = query_images(dataset, crop=crop), gallery_images(dataset, crop=crop)
    if distractors is not None:
        gallery += [GalleryImage(f"distractor:{ref.path}", ref, ()) for ref in distractor_refs(distractors)]
    return queries, gallery


def model_reranker(model: Any, encoded: Encoded, beta: float | None = None) -> Reranker:
    """The model's own re-rank of a short list, or the training-free one at `beta`."""

    def rerank(query: int, candidates: torch.Tensor) -> torch.Tensor:
        if beta is None:
            return model.rerank(encoded.maps[query], encoded.gallery_vectors[candidates])
        return model.free_rerank(encoded.maps[query], encoded.gallery_vectors[candidates], beta)

    return rerank


def encode_images(
    model: Any,
    images: Sequence[Any],
    tags: Sequence[Sequence[str]] | None,
    side: str,
    batch_size: int,
    progress: bool,
    unreadable: list[str],
) -> tuple[tuple[torch.Tensor, torch.Tensor], list[int]]:
    """(vectors [N, D], street maps or an empty tensor) of the readable images, and their indices.

    `images` are `ImageRef`s or objects with a `read()` method (a `QueryImage`).
    """
    from tqdm import tqdm

    from ynet_db.images.dataset import read_image

    vectors, maps, kept = [], [], []
    for start in tqdm(range(0, len(images), batch_size), desc=f"{side} images", disable=not progress, unit="batch"):
        pixels, rows = [], []
        for index in range(start, min(start + batch_size, len(images))):
            image = images[index]
            try:
                pixels.append(model.preprocess(image.read() if hasattr(image, "read") else read_image(image)))
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
