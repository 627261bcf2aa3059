"""The core imports without torch: a backend that stores products, queues work and searches through
workers never loads the model code (docs/design.md: the core is torch-free)."""

from __future__ import annotations

import subprocess
import sys

import pytest

TORCH_FREE = [
    "ynet_db",
    "ynet_db.config",
    "ynet_db.orm",
    "ynet_db.db.tables",
    "ynet_db.ingestion.catalog",
    "ynet_db.ingestion.attach",
    "ynet_db.ingestion.jobs",
    "ynet_db.images.fetch",
    "ynet_db.search",
    "ynet_db.search.client",
    "ynet_db.models.registry",
    "ynet_db.models.evidence",
    "ynet_db.data.database",
    "ynet_db.workers.app",
    "ynet_db.workers.dispatcher",
]


def heavy_modules_after_importing(module: str) -> list[str]:
    """Import in a fresh interpreter (this one has torch loaded already) and list what came with it."""
    probe = f"import sys, {module}; print(' '.join(m for m in ('torch', 'onnxruntime') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.parametrize("module", TORCH_FREE)
def test_the_core_imports_without_torch(module: str) -> None:
    assert heavy_modules_after_importing(module) == []


def test_the_probe_sees_torch_where_it_is_imported() -> None:
    """The check above can fail: the model code does bring torch in."""
    assert "torch" in heavy_modules_after_importing("ynet_db.nn.model")
