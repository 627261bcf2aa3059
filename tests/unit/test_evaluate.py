import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ynet_db.data.records import Box, ImageRef, Pair, Product, RetrievalDataset
from ynet_db.models.evaluate import (
    Ranking,
    bootstrap_standard_error,
    catalogue_queries,
    evaluate_model,
    first_hit_ranks,
    paired_difference,
    plot_topk,
    query_images,
    rank_queries,
    report,
    topk_accuracy,
    view_seed,
)


@pytest.fixture(scope="module")
def default_model() -> Any:
    from ynet_db.nn.model import RetrievalModel

    torch.set_num_threads(2)
    return RetrievalModel.load_default()


def reference_ranks(q: torch.Tensor, g: torch.Tensor, qi: list[str], gi: list[str]) -> list[float]:
    out = []
    for a in range(q.shape[0]):
        scores = [float(q[a] @ g[b]) for b in range(g.shape[0])]
        matches = [scores[b] for b in range(len(gi)) if gi[b] == qi[a]]
        if not matches:
            out.append(math.inf)
            continue
        out.append(float(sum(1 for b in range(len(gi)) if gi[b] != qi[a] and scores[b] > max(matches))))
    return out


def test_ranks_and_topk_match_loops() -> None:
    g = torch.Generator().manual_seed(0)
    queries = F.normalize(torch.randn(30, 8, generator=g), dim=-1)
    gallery = F.normalize(torch.randn(25, 8, generator=g), dim=-1)
    gallery_items = [f"p{i % 12}" for i in range(25)]
    query_items = [f"p{i % 13}" for i in range(30)]  # p12 has no gallery image: never a hit
    ranks = first_hit_ranks(queries, gallery, query_items, gallery_items, chunk=7)
    assert ranks.tolist() == reference_ranks(queries, gallery, query_items, gallery_items)
    accuracy = topk_accuracy(ranks, (1, 5, 10, 20, 50))
    for k, value in accuracy.items():
        assert value == pytest.approx(sum(1 for r in ranks if r < k) / 30)


def test_reranker_order_replaces_the_short_list() -> None:
    queries = torch.tensor([[1.0, 0.0]])
    gallery = F.normalize(torch.tensor([[1.0, 0.1], [1.0, 0.2], [1.0, 0.3], [0.0, 1.0]]), dim=-1)
    items = ["a", "b", "c", "d"]
    assert first_hit_ranks(queries, gallery, ["c"], items).tolist() == [2.0]

    def prefer_c(query: int, candidates: torch.Tensor) -> torch.Tensor:
        return torch.tensor([1.0 if items[int(i)] == "c" else 0.0 for i in candidates])

    assert first_hit_ranks(queries, gallery, ["c"], items, reranker=prefer_c, rerank_depth=3).tolist() == [0.0]
    # outside the short list the re-ranker cannot help
    assert first_hit_ranks(queries, gallery, ["c"], items, reranker=prefer_c, rerank_depth=2).tolist() == [2.0]


def test_a_paired_difference_has_a_smaller_error_than_its_rows_when_they_agree() -> None:
    rng = np.random.default_rng(0)
    control = rng.integers(0, 40, size=2000).astype(np.float64)
    better = control.copy()
    better[rng.choice(np.flatnonzero(control >= 1), size=60, replace=False)] = 0  # 60 more found first
    gained = paired_difference(better, control, ks=(1, 20))
    assert gained["1"]["difference"] == pytest.approx(60 / 2000)
    assert gained["20"]["difference"] == pytest.approx(np.mean(control >= 20) - np.mean(better >= 20))
    rows = math.hypot(bootstrap_standard_error((better < 1) * 1.0), bootstrap_standard_error((control < 1) * 1.0))
    assert 0 < gained["1"]["standard_error"] < 0.75 * rows
    assert paired_difference(control, control)["1"] == {"difference": 0.0, "standard_error": 0.0}
    with pytest.raises(ValueError, match="the same queries"):
        paired_difference(control, control[:10])


def test_bootstrap_standard_error_is_close_to_the_binomial_one() -> None:
    hits = np.array([1.0] * 300 + [0.0] * 700)
    assert bootstrap_standard_error(hits, rounds=2000) == pytest.approx(math.sqrt(0.3 * 0.7 / 1000), rel=0.1)


def test_report_per_category_and_plot(tmp_path: Path) -> None:
    ranking = Ranking(np.array([0.0, 3.0, 30.0, np.inf]), ["dress", "dress", "skirt", "skirt"])
    result = report(ranking, rounds=50)
    assert result["top_k"]["1"] == 0.25 and result["top_k"]["50"] == 0.75
    assert result["per_category"]["dress"]["top_k"]["5"] == 1.0
    assert result["per_category"]["skirt"]["queries"] == 2
    plot_topk({"model": result}, tmp_path / "topk.png")
    assert (tmp_path / "topk.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def write_photo(path: Path, colour: tuple[int, int, int], stripe: int) -> ImageRef:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (96, 96), colour)
    ImageDraw.Draw(image).rectangle((stripe, 10, stripe + 20, 80), fill=(255 - colour[0], 40, 200))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return ImageRef(path)


def several_pairs_dataset(root: Path) -> RetrievalDataset:
    """Product a: three shop photos and one street photo listed in three pairs (DeepFashion lists a
    consumer photo once per shop photo of its item); product b: one of each."""
    a_shop = [write_photo(root / f"a/shop_{i}.png", (200, 30 * i, 30), 10 + 20 * i) for i in range(3)]
    b_shop = write_photo(root / "b/shop_0.png", (20, 160, 60), 60)
    a_street, b_street = (
        write_photo(root / "a/street.png", (190, 40, 40), 20),
        write_photo(root / "b/street.png", (30, 150, 70), 55),
    )
    products = {
        "a": Product("a", "dress", ("category:dress",), tuple(a_shop)),
        "b": Product("b", "skirt", ("category:skirt",), (b_shop,)),
    }
    pairs = [Pair(ImageRef(a_street.path, Box(0, 0, 90, 90 - i)), shop, "a", "test") for i, shop in enumerate(a_shop)]
    pairs.append(Pair(b_street, b_shop, "b", "test"))
    return RetrievalDataset("several-pairs", root, products, pairs)


def test_a_photo_listed_in_several_pairs_is_one_query(tmp_path: Path, default_model: Any) -> None:
    dataset = several_pairs_dataset(tmp_path)
    result = evaluate_model(default_model, dataset, progress=False)
    assert result["queries"] == 2  # counting pairs gave 4: photo a three times
    assert result["per_category"]["dress"]["queries"] == 1
    assert result["gallery"] == 4  # every shop image of a is in the gallery, each a right answer
    assert [q["products"] for q in result["per_query"]] == [["a"], ["b"]]
    for query in result["per_query"]:
        assert query["rank"] is not None and 0 <= query["rank"] < 4
        assert len(query["top"]) == 4 and {t["product"] for t in query["top"]} == {"a", "b"}
    json.dumps(result, allow_nan=False)  # the per-query results are plain JSON


def test_query_images_keep_every_product_a_photo_shows(tmp_path: Path) -> None:
    dataset = several_pairs_dataset(tmp_path)
    extra = Pair(dataset.pairs[-1].street, dataset.products["a"].shop_images[0], "a", "test")
    dataset = RetrievalDataset(dataset.name, dataset.root, dataset.products, [*dataset.pairs, extra])
    queries = query_images(dataset)
    assert [(q.ref.path.parent.name, q.items) for q in queries] == [("a", ("a",)), ("b", ("b", "a"))]
    # with crop, the same photo under two boxes is two queries
    assert len(query_images(dataset, crop=True)) == 4


def test_a_query_showing_two_products_hits_either() -> None:
    queries = torch.tensor([[1.0, 0.0]])
    gallery = F.normalize(torch.tensor([[0.0, 1.0], [1.0, 0.1], [1.0, 0.5]]), dim=-1)
    assert first_hit_ranks(queries, gallery, [("x", "z")], ["x", "y", "z"]).tolist() == [1.0]
    assert first_hit_ranks(queries, gallery, [("x", "y")], ["x", "y", "z"]).tolist() == [0.0]


def test_top_results_follow_the_rerankers_order() -> None:
    queries = torch.tensor([[1.0, 0.0]])
    gallery = F.normalize(torch.tensor([[1.0, 0.1], [1.0, 0.2], [1.0, 0.3], [0.0, 1.0]]), dim=-1)
    items = ["a", "b", "c", "d"]

    def reverse(query: int, candidates: torch.Tensor) -> torch.Tensor:
        return candidates.float()

    plain = rank_queries(queries, gallery, ["b"], items, top_n=3)
    assert plain.top == [[0, 1, 2]] and plain.ranks.tolist() == [1.0]
    reranked = rank_queries(queries, gallery, ["b"], items, reranker=reverse, rerank_depth=3, top_n=3)
    assert reranked.top == [[2, 1, 0]] and reranked.ranks.tolist() == [1.0]


def test_catalogue_queries_hold_out_a_second_photo_or_make_a_street_view(tmp_path: Path) -> None:
    dataset = several_pairs_dataset(tmp_path)
    queries, gallery = catalogue_queries(dataset.products)
    assert [(q.items, q.ref.path.name, q.view_seed is None) for q in queries] == [
        (("a",), "shop_1.png", True),
        (("b",), "shop_0.png", False),
    ]
    assert [(g.item, g.ref.path.name) for g in gallery] == [
        ("a", "shop_0.png"),
        ("a", "shop_2.png"),
        ("b", "shop_0.png"),
    ]
    view = queries[1].read()
    photo = np.asarray(Image.open(gallery[2].ref.path).convert("RGB"))
    assert view.size != (96, 96) or not np.array_equal(np.asarray(view), photo)
    assert np.array_equal(np.asarray(view), np.asarray(queries[1].read()))  # the same view every time


def test_catalogue_mode_needs_no_street_photos(tmp_path: Path, default_model: Any) -> None:
    dataset = several_pairs_dataset(tmp_path)
    catalogue_only = RetrievalDataset(dataset.name, dataset.root, dataset.products, [])
    result = evaluate_model(default_model, catalogue_only, catalogue=True, progress=False)
    assert result["mode"] == "catalogue" and result["queries"] == 2 and result["gallery"] == 3
    assert result["per_query"][1]["query"].endswith("(augmented view " + str(view_seed("b", 0)) + ")")
