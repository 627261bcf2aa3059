from __future__ import annotations

from pathlib import Path

import pytest

from ynet_db.data.records import DatasetError, make_tag


def test_make_tag_has_one_spelling_per_tag() -> None:
    assert make_tag("color", "red") == "color:red"
    assert make_tag("Sleeve Length", " Short  Sleeve ") == "sleeve_length:short_sleeve"


@pytest.mark.parametrize(("field", "value"), [("", "red"), ("color", " "), ("a:b", "red")])
def test_make_tag_refuses_empty_parts_and_colons_in_the_field(field: str, value: str) -> None:
    with pytest.raises(ValueError, match="cannot make a tag"):
        make_tag(field, value)


def test_dataset_error_names_file_and_line() -> None:
    error = DatasetError(Path("Anno/x.txt"), "bad row", 7)
    assert (str(error), error.line, error.reason) == ("Anno/x.txt:7: bad row", 7, "bad row")
    assert str(DatasetError(Path("Anno/x.txt"), "missing")) == "Anno/x.txt: missing"
