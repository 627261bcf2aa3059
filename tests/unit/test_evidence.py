"""The held-out check's rule and its stored record (no database: the registry's side is in
tests/integration/test_catalogue_registration.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from ynet_db.models.evidence import Decision, EvidenceError, HeldOutEvidence, Scores, Split, summary

SPLIT = Split(0, 0.2, 120, 480, "a" * 64, "database")


def judged(candidate: tuple[float, float], active: tuple[float, float], error: float = 0.01) -> HeldOutEvidence:
    def scores(version: str, top: tuple[float, float]) -> Scores:
        return Scores(version, {"1": top[0], "5": 0.5, "20": top[1]})

    return HeldOutEvidence(
        scores("new@1", candidate), scores("old@1", active), "active", 120, error, SPLIT, "2025-01-02T03:04:05+00:00"
    )


def test_a_gain_beyond_one_standard_error_without_losing_top20_beats() -> None:
    assert judged((0.045, 0.30), (0.026, 0.30)).beats
    assert judged((0.045, 0.30), (0.026, 0.30)).reason == "beats the active model old@1"


def test_a_tie_or_a_gain_within_the_error_keeps_the_active_model() -> None:
    tie = judged((0.03, 0.30), (0.03, 0.30))
    assert not tie.beats
    assert (
        tie.reason
        == "does not beat the active model old@1: the top-1 gain +0.000 is not above its standard error 0.010"
    )
    assert not judged((0.035, 0.30), (0.03, 0.30)).beats


def test_losing_top20_keeps_the_active_model_whatever_top1_says() -> None:
    worse = judged((0.20, 0.29), (0.03, 0.30))
    assert not worse.beats
    assert worse.reason == "does not beat the active model old@1: top-20 0.290 is below its 0.300"


def test_the_record_round_trips_and_the_listing_line_says_why() -> None:
    evidence = judged((0.045, 0.31), (0.026, 0.30))
    stored = Decision(evidence, True, evidence.reason).to_dict()
    assert HeldOutEvidence.from_dict(stored) == evidence
    assert stored["beats"] is True and stored["activated"] is True and stored["gain"] == pytest.approx(0.019)
    assert summary(stored) == (
        "held-out top-1 0.045 vs active 0.026 (± 0.010), top-20 0.310 vs 0.300 on 120 products, 2025-01-02: "
        "activated (beats the active model old@1)"
    )
    kept = Decision(replace(evidence, baseline_role="default"), False, "does not beat").to_dict()
    assert summary(kept).endswith(
        "vs default 0.026 (± 0.010), top-20 0.310 vs 0.300 on 120 products, 2025-01-02: not activated (does not beat)"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("candidate"), "field 'candidate' is missing"),
        (lambda d: d["baseline"]["top_k"].update({"1": "high"}), "field 'baseline.top_k.1' is 'high', expected float"),
        (lambda d: d.update(queries=True), "field 'queries' is True, expected int"),
        (lambda d: d["split"].pop("seed"), "field 'seed' is missing"),
        (lambda d: d.update(judged_at=5), "field 'judged_at' is 5, expected str"),
    ],
)
def test_a_malformed_record_is_refused_by_field_and_listed_as_unreadable(change: Any, message: str) -> None:
    evidence = judged((0.045, 0.31), (0.026, 0.30))
    stored = Decision(evidence, True, evidence.reason).to_dict()
    change(stored)
    with pytest.raises(EvidenceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        HeldOutEvidence.from_dict(stored)
    line = summary(stored)
    assert line.startswith("held-out check") and "activated" in line


def test_a_listing_line_never_fails_on_what_the_column_holds() -> None:
    assert summary([1, 2]) == "held-out check unreadable (a list, not an object)"
    assert summary({"activated": False, "reason": "the active model could not be loaded"}) == (
        "held-out check: not activated: the active model could not be loaded"
    )
    assert summary({"reason": 5}) == "held-out check: not activated: no reason recorded"
