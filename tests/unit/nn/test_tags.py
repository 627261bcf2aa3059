import torch

from ynet_db.nn.model import RetrievalModel
from ynet_db.nn.tags import TagVocabulary


def test_vocabulary_is_sorted_and_counts_unknown_tags() -> None:
    vocabulary = TagVocabulary.build([["color:red", "category:dress"], ["category:dress", "pattern:stripes"]])
    assert vocabulary.tags == ("category:dress", "color:red", "pattern:stripes")
    batch = vocabulary.encode([["color:red", "color:teal"], ["color:teal"], []])
    assert batch.multi_hot.tolist() == [[0, 1, 0], [0, 0, 0], [0, 0, 0]]
    assert batch.unknown == [1, 1, 0]
    assert batch.without_known_tags == [False, True, True]


def test_default_model_falls_back_to_average_pooling_and_says_so(default_model: RetrievalModel) -> None:
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    shop = default_model.encode_shop(pixels, [["category:dress", "color:red"], []])
    assert shop.unknown_tags == [2, 0]
    assert shop.average_pooled == [True, True]
    torch.testing.assert_close(shop.attention, torch.full((2, 4), 0.25))
