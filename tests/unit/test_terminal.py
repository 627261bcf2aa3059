"""Terminal-safe text: control characters shown as escapes, everything else as it is."""

from __future__ import annotations

import pytest

from ynet_db.cli.terminal import safe


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\x1b]0;owned\x07", "\\x1b]0;owned\\x07"),  # retitles the terminal window
        ("a\x9b2Jb", "a\\x9b2Jb"),  # C1 CSI: clears the screen on some terminals
        ("a\x7fb\x00c", "a\\x7fb\\x00c"),
        ("two\nlines\r\tx", "two\\x0alines\\x0d\\x09x"),
        ("abc\u202edcba", "abc\\u202edcba"),  # right-to-left override
        ("caf\udce9", "caf\\udce9"),  # an undecodable byte kept by surrogateescape
        ("Robe d'été 夏 ×2 — ok", "Robe d'été 夏 ×2 — ok"),
    ],
)
def test_safe_escapes_control_characters_only(text: str, shown: str) -> None:
    assert safe(text) == shown


def test_safe_takes_any_object() -> None:
    assert safe(ValueError("bad\x1bthing")) == "bad\\x1bthing"
