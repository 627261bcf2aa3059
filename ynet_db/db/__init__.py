"""The database: the server (embedded or external), engines, the ORM models and the migrations."""

from ynet_db.db.engine import engine_from_settings, make_engine, session_factory
from ynet_db.db.tables import (
    Attachment,
    Base,
    Embedding,
    EmbeddingJob,
    Model,
    Product,
    SearchRequest,
    SearchResultRow,
    Worker,
)

__all__ = [
    "Attachment",
    "Base",
    "Embedding",
    "EmbeddingJob",
    "Model",
    "Product",
    "SearchRequest",
    "SearchResultRow",
    "Worker",
    "engine_from_settings",
    "make_engine",
    "session_factory",
]
