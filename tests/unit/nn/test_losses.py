import pytest
import torch
import torch.nn.functional as F

from ynet_db.nn.losses import context_triplet_loss, triplet_loss


def sq(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = F.normalize(a, dim=0), F.normalize(b, dim=0)
    return float(sum((x - y) ** 2 for x, y in zip(a.tolist(), b.tolist())))


def reference_shifted(anchors: torch.Tensor, positives: torch.Tensor, margin: float, shifts: int) -> float:
    n = anchors.shape[0]
    terms = []
    for i in range(n):
        for s in range(1, shifts + 1):
            j = (i + s) % n
            terms.append(max(0.0, sq(anchors[i], positives[i]) - sq(anchors[i], positives[j]) + margin))
    return sum(terms) / len(terms)


def reference_hardest(anchors: torch.Tensor, positives: torch.Tensor, margin: float) -> float:
    n = anchors.shape[0]
    terms = []
    for i in range(n):
        hardest = min(sq(anchors[i], positives[j]) for j in range(n) if j != i)
        terms.append(max(0.0, sq(anchors[i], positives[i]) - hardest + margin))
    return sum(terms) / n


def test_shifted_triplet_loss_matches_loops(generator: torch.Generator) -> None:
    anchors, positives = torch.randn(6, 5, generator=generator), torch.randn(6, 5, generator=generator)
    loss = triplet_loss(anchors, positives, margin=0.5, mining="shifted", shifts=4)
    assert float(loss) == pytest.approx(reference_shifted(anchors, positives, 0.5, 4), abs=1e-5)


def test_hardest_triplet_loss_matches_loops(generator: torch.Generator) -> None:
    anchors, positives = torch.randn(7, 5, generator=generator), torch.randn(7, 5, generator=generator)
    loss = triplet_loss(anchors, positives, margin=0.3, mining="hardest")
    assert float(loss) == pytest.approx(reference_hardest(anchors, positives, 0.3), abs=1e-5)


def test_rows_of_the_same_product_are_not_negatives() -> None:
    anchors = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    positives = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    same = triplet_loss(anchors, positives, margin=0.3, groups=torch.tensor([5, 5]))
    assert float(same) == 0.0
    assert float(triplet_loss(anchors, positives, margin=0.3)) == pytest.approx(0.3)


def test_context_loss_matches_loops(generator: torch.Generator) -> None:
    scores = -torch.rand(3, 4, generator=generator) * 2
    expected = (
        sum(max(0.0, -float(scores[b, 0]) + float(scores[b, k]) + 0.3) for b in range(3) for k in range(1, 4)) / 9
    )
    assert float(context_triplet_loss(scores, 0.3)) == pytest.approx(expected, abs=1e-6)
