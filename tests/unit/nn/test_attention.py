import numpy as np
import pytest
import torch

from ynet_db.nn.attention import ContextAttention, TagAttention, free_context, power_mean


def reference_tag_attention(
    maps: torch.Tensor, tags: torch.Tensor, weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    pooled, all_weights = [], []
    for b in range(maps.shape[0]):
        e = [sum(float(weight[c, t]) * float(tags[b, t]) for t in range(tags.shape[1])) for c in range(maps.shape[2])]
        scores = torch.tensor(
            [sum(float(maps[b, l, c]) * e[c] for c in range(maps.shape[2])) for l in range(maps.shape[1])],
            dtype=torch.float64,
        )
        a = torch.exp(scores - scores.max())
        a = a / a.sum()
        all_weights.append(a)
        pooled.append(sum(a[l] * maps[b, l] for l in range(maps.shape[1])))
    return torch.stack(pooled), torch.stack(all_weights)


def test_tag_attention_matches_loops_and_sums_to_one(generator: torch.Generator) -> None:
    maps = torch.randn(3, 5, 4, generator=generator, dtype=torch.float64)
    tags = (torch.rand(3, 6, generator=generator) > 0.5).double()
    attention = TagAttention(6, 4).double()
    with torch.no_grad():
        attention.weight.normal_(generator=generator)
    pooled, weights = attention(maps, tags)
    expected_pooled, expected_weights = reference_tag_attention(maps, tags, attention.weight.detach())
    assert weights.shape == (3, 5) and pooled.shape == (3, 4)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(weights, expected_weights)
    torch.testing.assert_close(pooled, expected_pooled)


def test_zero_initialised_tag_attention_is_average_pooling(generator: torch.Generator) -> None:
    maps = torch.randn(2, 49, 16, generator=generator)
    pooled, weights = TagAttention(7, 16)(maps, torch.ones(2, 7))
    torch.testing.assert_close(weights, torch.full((2, 49), 1 / 49))
    torch.testing.assert_close(pooled, maps.mean(dim=1))


@pytest.mark.parametrize("form", ["linear", "dot", "mlp"])
def test_context_forms_start_as_average_pooling(form: str, generator: torch.Generator) -> None:
    maps = torch.randn(2, 9, 8, generator=generator)
    contexts = torch.randn(2, 5, 8, generator=generator)
    queries, weights = ContextAttention(form, 8, 9, hidden=4)(maps, contexts)  # type: ignore[arg-type]
    assert queries.shape == (2, 5, 8) and weights.shape == (2, 5, 9)
    torch.testing.assert_close(weights, torch.full((2, 5, 9), 1 / 9))
    torch.testing.assert_close(queries, maps.mean(dim=1, keepdim=True).expand(2, 5, 8))


def test_linear_context_scores_match_loops(generator: torch.Generator) -> None:
    attention = ContextAttention("linear", 3, 4)
    with torch.no_grad():
        attention.u.normal_(generator=generator)
        attention.v.normal_(generator=generator)
    maps = torch.randn(1, 4, 3, generator=generator)
    contexts = torch.randn(1, 2, 3, generator=generator)
    with torch.no_grad():
        scores = attention.scores(maps, contexts)
    for n in range(2):
        for l in range(4):
            expected = sum(attention.u.detach()[c] * maps[0, l, c] for c in range(3)) + sum(
                attention.v.detach()[c, l] * contexts[0, n, c] for c in range(3)
            )
            assert float(scores[0, n, l]) == pytest.approx(float(expected), abs=1e-5)
    _, weights = attention(maps, contexts)
    torch.testing.assert_close(weights.sum(-1), torch.ones(1, 2))


def reference_free_context_scores(
    street_map: np.ndarray, candidates: np.ndarray, beta: float, power: float
) -> list[float]:
    """Slow and plain: for each candidate, softmax over locations of beta * cosine, weighted power mean,
    normalised, minus its squared distance to the normalised candidate."""
    scores = []
    for c in candidates.astype(np.float64):
        c = c / np.linalg.norm(c)
        logits = [beta * float(m @ c) / float(np.linalg.norm(m)) for m in street_map.astype(np.float64)]
        top = max(logits)
        weights = [np.exp(v - top) for v in logits]
        weights = [w / sum(weights) for w in weights]
        pooled = np.zeros_like(c)
        for w, m in zip(weights, street_map.astype(np.float64), strict=True):
            pooled += w * np.maximum(m, 1e-6) ** power if power != 1.0 else w * m
        pooled = pooled ** (1.0 / power) if power != 1.0 else pooled
        q = pooled / np.linalg.norm(pooled)
        scores.append(-float(((q - c) ** 2).sum()))
    return scores


@pytest.fixture(scope="module")
def real_maps() -> tuple[torch.Tensor, torch.Tensor]:
    """The default model's street map of one real (drawn) photo and the shop vectors of five others."""
    from ynet_db.data.garments import sample_garment
    from ynet_db.data.scenes import shop_photo, street_photo
    from ynet_db.nn.model import RetrievalModel

    model = RetrievalModel.load_default()
    rng = np.random.default_rng(0)
    garments = [sample_garment(rng) for _ in range(5)]
    street = street_photo(garments[0], [], 224, rng).image
    shops = [shop_photo(g, [garments[(i + 1) % 5]], 224, rng).image for i, g in enumerate(garments)]
    street_map = model.encode_street(model.preprocess(street)[None]).maps[0]
    shop = model.encode_shop(torch.stack([model.preprocess(s) for s in shops]), [[]] * 5).vectors
    return street_map, shop


@pytest.mark.parametrize(("beta", "power"), [(0.0, 1.0), (5.0, 1.0), (10.0, 1.0), (5.0, 3.0)])
def test_free_context_rerank_matches_a_numpy_loop_on_real_maps(
    beta: float, power: float, real_maps: tuple[torch.Tensor, torch.Tensor]
) -> None:
    from ynet_db.nn.config import ModelConfig
    from ynet_db.nn.model import RetrievalModel

    street_map, shop = real_maps
    assert street_map.shape == (49, 1280) and float(street_map.min()) >= 0  # ReLU6 map of the default model
    model = RetrievalModel.load_default(config=ModelConfig(pooling_power=power))
    scores = model.free_rerank(street_map, shop, beta)
    expected = reference_free_context_scores(street_map.numpy(), shop.numpy(), beta, power)
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-4, atol=1e-5)


def test_free_context_at_beta_zero_is_the_first_stage(real_maps: tuple[torch.Tensor, torch.Tensor]) -> None:
    street_map, shop = real_maps
    queries, weights = free_context(street_map[None], shop[None], 0.0)
    torch.testing.assert_close(weights, torch.full((1, 5, 49), 1 / 49))
    torch.testing.assert_close(queries[0], street_map.mean(dim=0).expand(5, -1))


def test_power_mean_is_gem_under_uniform_weights(generator: torch.Generator) -> None:
    maps = torch.rand(2, 9, 4, generator=generator, dtype=torch.float64)
    uniform = torch.full((2, 1, 9), 1 / 9, dtype=torch.float64)
    expected = maps.pow(3).mean(dim=1, keepdim=True).pow(1 / 3)
    torch.testing.assert_close(power_mean(maps, uniform, 3.0), expected)
    torch.testing.assert_close(power_mean(maps, uniform, 1.0), maps.mean(dim=1, keepdim=True))
