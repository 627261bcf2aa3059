"""Ingestion: the catalogue comes in (import, attached tables), the queue records embedding work, and
`embed` turns claimed jobs into vectors written back."""
