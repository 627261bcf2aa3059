"""Loading a registered model: the one loader that workers, calibration, the demo and the CLI share."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import Engine

from ynet_db.config import Settings
from ynet_db.models.registry import ModelIdentity, register
from ynet_db.models.serving import load_configured, load_registered, verify_configured
from ynet_db.nn.checkpoint import CheckpointError
from ynet_db.nn.model import RetrievalModel
from ynet_db.presentation.demo import demo_checkpoint


def test_a_registered_model_loads_from_its_record_and_its_version_is_checked(
    engine: Engine, settings: Settings
) -> None:
    torch_only = replace(settings, runtime="torch", model_path=demo_checkpoint())
    served = load_configured(torch_only)
    record = register(engine, ModelIdentity.of(served, demo_checkpoint()))
    assert load_registered(engine, record.id, torch_only).version == served.version == record.version
    default = RetrievalModel.load_default()
    impostor = register(engine, ModelIdentity("d", "d@not-this-one", default.embedding_dim, "0" * 64, {}))
    with pytest.raises(LookupError) as raised:
        load_registered(engine, impostor.id, torch_only)
    assert str(raised.value) == (
        f"model {impostor.id} is registered as d@not-this-one, but the default model here is {default.version}: "
        "make the same checkpoint available here"
    )
    with pytest.raises(LookupError, match="^model 999 is not registered$"):
        load_registered(engine, 999, torch_only)


def test_a_corrupt_configured_checkpoint_is_refused_before_any_network_is_built(
    settings: Settings, tmp_path: Path
) -> None:
    corrupt = tmp_path / "model.safetensors"
    corrupt.write_bytes(b"\x00" * 64)
    verify_configured(replace(settings, model_path=None))  # the default model: nothing to read
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        verify_configured(replace(settings, model_path=corrupt))
