"""The training-free context re-rank's beta, chosen on held-out queries, with the evidence for it.

A `ContextCalibration` travels with a model version (a shipped model's calibration file or checkpoint
metrics, or the registry's `config -> 'context_rerank'` for a shop's own measurement) and decides
whether search re-ranks: only where the re-rank beat the first stage it re-ranks by more than one
standard error at top-1 without losing top-20 (the rule `fit.rerank_helps` applies to a learned
re-ranker). No torch here: search reads calibrations from the database without loading a model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

BETAS: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0)
"""The grid beta is chosen from (beta 0 is the first stage itself)."""


class CalibrationError(ValueError):
    """A stored calibration that cannot be read; the message names the field."""


@dataclass(frozen=True)
class ContextCalibration:
    beta: float
    top1_plain: float
    top1_reranked: float
    top20_plain: float
    top20_reranked: float
    gain_standard_error: float
    """Paired bootstrap standard error of the top-1 gain, over the judged queries."""
    queries: int
    judged_on: str
    """What the queries were, e.g. 'synth-default:train (validation products)' or 'catalogue'."""

    @property
    def gain(self) -> float:
        return self.top1_reranked - self.top1_plain

    @property
    def helps(self) -> bool:
        return self.gain > self.gain_standard_error and self.top20_reranked >= self.top20_plain

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "helps": self.helps}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ContextCalibration:
        values: dict[str, Any] = {}
        for name, kind in (("queries", int), ("judged_on", str)):
            values[name] = _field(data, name, kind)
        for name in ("beta", "top1_plain", "top1_reranked", "top20_plain", "top20_reranked", "gain_standard_error"):
            values[name] = float(_field(data, name, float))
        if values["beta"] < 0:
            raise CalibrationError(f"context calibration: beta {values['beta']} is negative")
        return cls(**values)


def _field(data: Mapping[str, Any], name: str, kind: type) -> Any:
    if name not in data:
        raise CalibrationError(f"context calibration: field {name!r} is missing")
    value = data[name]
    accepted = (int, float) if kind is float else kind
    if isinstance(value, bool) or not isinstance(value, accepted):
        raise CalibrationError(f"context calibration: field {name!r} is {value!r}, expected {kind.__name__}")
    return value


def paired_standard_error(before: np.ndarray, after: np.ndarray, rounds: int = 1000, seed: int = 0) -> float:
    """Bootstrap standard error of mean(after - before), resampling queries with replacement."""
    if len(before) == 0:
        return 0.0
    differences = after.astype(np.float64) - before.astype(np.float64)
    samples = np.random.default_rng(seed).integers(0, len(differences), size=(rounds, len(differences)))
    return float(differences[samples].mean(axis=1).std(ddof=1))


def choose_beta(plain: np.ndarray, reranked: Mapping[float, np.ndarray], judged_on: str) -> ContextCalibration:
    """The beta whose re-rank ranks (per query, as `evaluate.first_hit_ranks` gives them) reach the best
    top-1; ties go to the smaller beta, the one nearer the first stage."""
    if not reranked:
        raise ValueError("choose_beta needs the ranks of at least one beta")
    best = max(sorted(reranked), key=lambda beta: (float(np.mean(reranked[beta] < 1)), -beta))
    ranks = reranked[best]
    return ContextCalibration(
        beta=float(best),
        top1_plain=float(np.mean(plain < 1)),
        top1_reranked=float(np.mean(ranks < 1)),
        top20_plain=float(np.mean(plain < 20)),
        top20_reranked=float(np.mean(ranks < 20)),
        gain_standard_error=paired_standard_error(plain < 1, ranks < 1),
        queries=len(plain),
        judged_on=judged_on,
    )
