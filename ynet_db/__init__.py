"""ynet-db: visual product search inside PostgreSQL (TagYNet / CtxYNet on pgvector)."""

__version__ = "0.1.0"
