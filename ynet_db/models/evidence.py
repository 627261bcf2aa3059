"""The evidence a model version was activated, or kept back, on: its held-out check against what served.

A catalogue-trained model (`ynet-db train --from-catalogue --register`) is searched in catalogue mode on
products its training never saw, beside the model that was active then (the shipped default where none
was), on the same queries. It is activated only where it beat that model by more than the paired standard
error of the top-1 gain without losing top-20 (the rule a re-rank must pass, `ContextCalibration.helps`);
otherwise it stays registered with the reason. The record is kept with the version
(`ynet.models.config -> 'held_out_check'`), so `ynet-db model list` can say why a version serves or not.
No torch here: the registry's listing reads it without loading a model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection, Engine, text

CONFIG_KEY = "held_out_check"


class EvidenceError(ValueError):
    """A stored held-out check that cannot be read; the message names the field."""


@dataclass(frozen=True)
class Split:
    """Which products were held out: `split_products(catalogue, held_out_share, seed)`."""

    seed: int
    held_out_share: float
    held_out_products: int
    trained_products: int
    catalogue_sha256: str
    source: str
    """Where the catalogue came from: 'database' or a file's path."""


@dataclass(frozen=True)
class Scores:
    version: str
    top_k: dict[str, float]
    """Catalogue-mode top-k accuracy on the held-out queries, keys '1', '5', '10', '20', '50'."""


@dataclass(frozen=True)
class HeldOutEvidence:
    candidate: Scores
    baseline: Scores
    baseline_role: str
    """'active' (the model serving when it was judged) or 'default' (none was active: the shipped default)."""
    queries: int
    gain_standard_error: float
    """Paired bootstrap standard error of the top-1 gain, over the same queries."""
    split: Split
    judged_at: str
    """ISO 8601, UTC."""
    reranked: bool = False
    """Whether either side re-ranked: no, both are judged by their first stage (see `held_out.compare`)."""

    @property
    def gain(self) -> float:
        return self.candidate.top_k["1"] - self.baseline.top_k["1"]

    @property
    def beats(self) -> bool:
        """More than one standard error better at top-1, and top-20 not lower: a tie keeps what serves."""
        not_lower = self.candidate.top_k["20"] >= self.baseline.top_k["20"]
        return self.gain > self.gain_standard_error and not_lower

    @property
    def reason(self) -> str:
        against = f"the {self.baseline_role} model {self.baseline.version}"
        if self.beats:
            return f"beats {against}"
        if self.candidate.top_k["20"] < self.baseline.top_k["20"]:
            return (
                f"does not beat {against}: top-20 {self.candidate.top_k['20']:.3f} is below its "
                f"{self.baseline.top_k['20']:.3f}"
            )
        return (
            f"does not beat {against}: the top-1 gain {self.gain:+.3f} is not above its standard error "
            f"{self.gain_standard_error:.3f}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "gain": self.gain, "beats": self.beats, "reason": self.reason}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HeldOutEvidence:
        return cls(
            candidate=_scores(_field(data, "candidate", Mapping), "candidate"),
            baseline=_scores(_field(data, "baseline", Mapping), "baseline"),
            baseline_role=_field(data, "baseline_role", str),
            queries=_field(data, "queries", int),
            gain_standard_error=float(_field(data, "gain_standard_error", float)),
            split=_split(_field(data, "split", Mapping)),
            judged_at=_field(data, "judged_at", str),
            reranked=_field(data, "reranked", bool),
        )


@dataclass(frozen=True)
class Decision:
    """What became of a judged version: activated (a back-fill started, or serving at once) or kept back."""

    evidence: HeldOutEvidence | None
    activated: bool
    reason: str
    """Why, in a sentence: the evidence's reason, or why there is none (the baseline could not be loaded)."""

    def to_dict(self) -> dict[str, Any]:
        judged = {} if self.evidence is None else self.evidence.to_dict()
        return {**judged, "activated": self.activated, "reason": self.reason}


def _field(data: Mapping[str, Any], name: str, kind: type) -> Any:
    if name not in data:
        raise EvidenceError(f"held-out check: field {name!r} is missing")
    value = data[name]
    accepted: type | tuple[type, ...] = (int, float) if kind is float else kind
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, accepted):
        raise EvidenceError(f"held-out check: field {name!r} is {value!r}, expected {kind.__name__}")
    return value


def _scores(data: Mapping[str, Any], side: str) -> Scores:
    top_k = _field(data, "top_k", Mapping)
    for k in ("1", "20"):
        value = top_k.get(k)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise EvidenceError(f"held-out check: field '{side}.top_k.{k}' is {value!r}, expected float")
    return Scores(_field(data, "version", str), {str(k): float(v) for k, v in top_k.items()})


def _split(data: Mapping[str, Any]) -> Split:
    return Split(
        seed=_field(data, "seed", int),
        held_out_share=float(_field(data, "held_out_share", float)),
        held_out_products=_field(data, "held_out_products", int),
        trained_products=_field(data, "trained_products", int),
        catalogue_sha256=_field(data, "catalogue_sha256", str),
        source=_field(data, "source", str),
    )


# jsonb_set only replaces a key of an object: a config that is not one (never written by ynet-db) starts afresh.
STORE = text(
    """
    UPDATE ynet.models
       SET config = jsonb_set(CASE WHEN jsonb_typeof(config) = 'object' THEN config ELSE '{}'::jsonb END,
                              '{held_out_check}', CAST(:evidence AS jsonb))
     WHERE id = :id
    """
)


def store(conn: Connection, model_id: int, decision: Decision) -> None:
    conn.execute(STORE, {"evidence": json.dumps(decision.to_dict()), "id": model_id})


def stored(engine: Engine, model_id: int) -> dict[str, Any] | None:
    with engine.connect() as conn:
        value = conn.execute(
            text("SELECT config -> 'held_out_check' FROM ynet.models WHERE id = :id"), {"id": model_id}
        ).scalar()
    return value if isinstance(value, dict) else None


def summaries(conn: Connection) -> dict[int, str]:
    """model id -> one line on its held-out check, for every model that has one."""
    rows = conn.execute(
        text(
            "SELECT id, config -> 'held_out_check' FROM ynet.models "
            "WHERE jsonb_typeof(config) = 'object' AND config ? 'held_out_check' ORDER BY id"
        )
    )
    return {model_id: summary(value) for model_id, value in rows}


def summary(value: Any) -> str:
    """'held-out top-1 0.450 vs active 0.260 on 120 products: activated (beats ...)'; never raises."""
    if not isinstance(value, dict):
        return f"held-out check unreadable (a {type(value).__name__}, not an object)"
    outcome = "activated" if value.get("activated") is True else "not activated"
    reason = value.get("reason")
    reason = reason if isinstance(reason, str) else "no reason recorded"
    if "candidate" not in value:  # nothing was compared (the baseline could not be loaded)
        return f"held-out check: {outcome}: {reason}"
    try:
        evidence = HeldOutEvidence.from_dict(value)
    except EvidenceError as error:
        return f"held-out check unreadable ({error}); {outcome}"
    return (
        f"held-out top-1 {evidence.candidate.top_k['1']:.3f} vs {evidence.baseline_role} "
        f"{evidence.baseline.top_k['1']:.3f} (± {evidence.gain_standard_error:.3f}), top-20 "
        f"{evidence.candidate.top_k['20']:.3f} vs {evidence.baseline.top_k['20']:.3f} on "
        f"{evidence.queries} products, {evidence.judged_at[:10]}: {outcome} ({reason})"
    )
