import pytest
import torch

from ynet_db.nn.attention import ContextAttention, TagAttention


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
