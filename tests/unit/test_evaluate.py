import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ynet_db.evaluate import Ranking, bootstrap_standard_error, first_hit_ranks, plot_topk, report, topk_accuracy


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
