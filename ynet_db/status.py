"""The state of the catalogue at a glance: products, embedding work by state, coverage per model."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from ynet_db.db.models import JOB_STATES, Embedding, EmbeddingJob, Model, Product

RECENT_ERRORS = 5


@dataclass(frozen=True)
class ModelCoverage:
    name: str
    version: str
    state: str
    embedded: int


@dataclass(frozen=True)
class JobError:
    external_id: str
    state: str
    attempts: int
    error: str


@dataclass(frozen=True)
class CatalogueStatus:
    products: int
    jobs: dict[str, int]
    models: list[ModelCoverage]
    recent_errors: list[JobError]

    def __str__(self) -> str:
        lines = [f"products: {self.products}"]
        jobs = ", ".join(f"{n} {state}" for state, n in self.jobs.items() if n)
        lines.append(f"jobs: {jobs or 'none'}")
        if not self.models:
            lines.append("models: none registered")
        for model in self.models:
            share = model.embedded / self.products if self.products else 0.0
            lines.append(
                f"model {model.name} ({model.version}, {model.state}): "
                f"{model.embedded}/{self.products} embedded ({share:.0%})"
            )
        for error in self.recent_errors:
            lines.append(f"error: {error.external_id} ({error.state}, attempt {error.attempts}): {error.error}")
        return "\n".join(lines)


def catalogue_status(engine: Engine) -> CatalogueStatus:
    with Session(engine) as session:
        products = session.scalar(select(func.count()).select_from(Product)) or 0
        by_state = {
            state: n
            for state, n in session.execute(select(EmbeddingJob.state, func.count()).group_by(EmbeddingJob.state))
        }
        coverage = session.execute(
            select(Model.name, Model.version, Model.state, func.count(Embedding.product_id))
            .outerjoin(Embedding, Embedding.model_id == Model.id)
            .group_by(Model.id)
            .order_by(Model.id)
        )
        errors = session.execute(
            select(Product.external_id, EmbeddingJob.state, EmbeddingJob.attempts, EmbeddingJob.last_error)
            .join(EmbeddingJob.product)
            .where(EmbeddingJob.last_error.is_not(None))
            .order_by(EmbeddingJob.updated_at.desc())
            .limit(RECENT_ERRORS)
        )
        return CatalogueStatus(
            products=products,
            jobs={state: by_state.get(state, 0) for state in JOB_STATES},
            models=[ModelCoverage(*row) for row in coverage],
            recent_errors=[JobError(*row) for row in errors],
        )
