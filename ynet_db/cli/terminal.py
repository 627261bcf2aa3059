"""Text from the catalogue made safe to print on an operator's terminal.

Titles, ids, categories, model names and error texts come from shop files, checkpoints and fetched
URLs. Printed raw, a `\\x1b]0;...\\x07` in a title retitles the terminal window, and other escape
sequences can move the cursor, rewrite earlier lines or, on some terminals, answer back as if typed.
So every C0 and C1 control character and DEL is shown as `\\xNN`, lone surrogates (undecodable bytes)
as `\\udcNN`, and the bidirectional overrides, which make a line read differently from what it holds,
as `\\u202e` and the like.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def safe(text: object) -> str:
    """`text` as one line with every control character escaped (newlines and tabs included)."""
    return _UNSAFE.sub(_escape, str(text))
