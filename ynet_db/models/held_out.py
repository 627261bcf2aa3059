"""Register a catalogue-trained checkpoint, and activate it only where it beats the model that serves.

    outcome = register_checked(engine, checkpoint, held_out_products, split, device="cpu")
    outcome.decision.activated, outcome.decision.reason

Both models search the held-out products in catalogue mode (`evaluate_model(..., catalogue=True)`: an
augmentation-made street view of each product's photo, or its second photo, against the others' photos),
on the same queries. The rule and the stored record are in evidence.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, text

from ynet_db.config import Settings
from ynet_db.data.records import Product, RetrievalDataset
from ynet_db.models import evidence
from ynet_db.models.evaluate import KS, evaluate_model, topk_accuracy
from ynet_db.models.evidence import Decision, HeldOutEvidence, Scores, Split
from ynet_db.models.registry import ActiveModelChanged, ModelIdentity, ModelRecord, activate, register
from ynet_db.nn.calibration import paired_standard_error
from ynet_db.nn.model import RetrievalModel


class HeldOutError(ValueError):
    """The held-out products give nothing to judge on; the message says why."""


@dataclass(frozen=True)
class Registration:
    record: ModelRecord
    """The candidate's registry row after the decision."""
    decision: Decision
    backfill_jobs: int


def compare(
    candidate: RetrievalModel,
    baseline: RetrievalModel,
    held: Mapping[str, Product],
    split: Split,
    *,
    baseline_role: str,
    progress: bool = True,
) -> HeldOutEvidence:
    """Both models' catalogue-mode top-k on the held-out products, on the queries both could read.

    First stages only: the candidate's re-rank is calibrated once its vectors are in the registry
    (`ynet-db model calibrate`), so judging a re-ranked baseline against it would judge the calibration,
    not the embedding.
    """
    dataset = RetrievalDataset("held-out products", Path("."), dict(held))
    ranks = [
        query_ranks(evaluate_model(model, dataset, catalogue=True, rerank=False, progress=progress))
        for model in (candidate, baseline)
    ]
    common = sorted(set(ranks[0]) & set(ranks[1]))
    if not common:
        raise HeldOutError(f"none of the {len(held)} held-out products has a photo both models could read")
    ours, theirs = (np.array([side[q] for q in common]) for side in ranks)
    return HeldOutEvidence(
        candidate=Scores(candidate.version, {str(k): v for k, v in topk_accuracy(ours, KS).items()}),
        baseline=Scores(baseline.version, {str(k): v for k, v in topk_accuracy(theirs, KS).items()}),
        baseline_role=baseline_role,
        queries=len(common),
        gain_standard_error=paired_standard_error((theirs < 1).astype(float), (ours < 1).astype(float)),
        split=split,
        judged_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def query_ranks(result: Mapping[str, Any]) -> dict[str, float]:
    """query -> rank of its product (inf where none of its photos was in the gallery)."""
    return {q["query"]: float("inf") if q["rank"] is None else float(q["rank"]) for q in result["per_query"]}


ACTIVE = text("SELECT id, version FROM ynet.models WHERE state = 'active'")


def active_version(engine: Engine) -> tuple[int, str] | None:
    with engine.connect() as conn:
        row = conn.execute(ACTIVE).first()
    return None if row is None else (row[0], row[1])


def register_checked(
    engine: Engine,
    checkpoint: Path,
    held: Mapping[str, Product],
    split: Split,
    *,
    device: str = "cpu",
    progress: bool = True,
) -> Registration:
    """Register the checkpoint; judge it against the active model (the shipped default where none is);
    activate it only if it won; store the evidence with its version either way."""
    candidate = RetrievalModel.load(checkpoint, device=device)
    record = register(engine, ModelIdentity.of(candidate, checkpoint))
    if record.state == "active":  # its evidence, if any, stays as it was when it was activated
        return Registration(record, Decision(None, True, "it is already the active model"), 0)
    serving = active_version(engine)
    try:
        baseline = _baseline(engine, serving, device)
    except LookupError as error:
        why = f"the active model could not be loaded here to compare with ({error}); nothing was judged"
        return _decided(engine, record, Decision(None, False, why))
    judged = compare(
        candidate, baseline, held, split, baseline_role="default" if serving is None else "active", progress=progress
    )
    if not judged.beats:
        return _decided(engine, record, Decision(judged, False, judged.reason))
    try:  # refused if another activation finished while we measured: this evidence is about another model
        activation = activate(engine, record.version, expected_active=serving[1] if serving else None)
    except ActiveModelChanged as changed:
        why = f"{judged.reason}, but the active model changed to {changed.actual or 'none'} meanwhile: judge again"
        return _decided(engine, record, Decision(judged, False, why))
    return _decided(engine, activation.model, Decision(judged, True, judged.reason), activation.backfill_jobs)


def _baseline(engine: Engine, serving: tuple[int, str] | None, device: str) -> RetrievalModel:
    """The active model as it was registered, in PyTorch; the shipped default when none is active."""
    from ynet_db.models.serving import load_registered

    if serving is None:
        return RetrievalModel.load_default(device=device)
    try:
        return load_registered(engine, serving[0], Settings(runtime="torch", device=device))
    except (OSError, ValueError, RuntimeError) as error:  # a missing or refused checkpoint file
        raise LookupError(f"{serving[1]}: {error}") from error


def _decided(engine: Engine, record: ModelRecord, decision: Decision, backfill_jobs: int = 0) -> Registration:
    with engine.begin() as conn:
        evidence.store(conn, record.id, decision)
    return Registration(record, decision, backfill_jobs)
