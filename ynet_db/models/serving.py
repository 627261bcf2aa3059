"""Loading a model: the one torch-side loader that workers, the CLI, calibration, the demo and search call.

    model = load_configured(settings)                    # YNET_MODEL (or the default), as workers serve it
    model = load_registered(engine, model_id, settings)  # a registered model, as it was registered
    model = load_reference(path, device)                 # PyTorch fp32: registration, evaluation, attention maps

Which model serves is the registry's answer (`ynet_db.models.registry.active`, torch-free); this module
only turns a checkpoint path or a registry record into a network, its encoders on the runtime YNET_RUNTIME
chooses (`ynet_db.nn.runtime.accelerate`) except for the fp32 reference.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from ynet_db.config import Settings
from ynet_db.models.registry import ModelRecord, get
from ynet_db.nn.checkpoint import load_checkpoint
from ynet_db.nn.config import ModelConfig
from ynet_db.nn.model import RetrievalModel
from ynet_db.nn.runtime import accelerate, graph_cache


def load_reference(checkpoint: Path | None, device: str = "cpu", config: ModelConfig | None = None) -> RetrievalModel:
    """The checkpoint, or the pretrained default model (as `config` describes it), in fp32 PyTorch."""
    if checkpoint is not None:
        return RetrievalModel.load(checkpoint, device=device)
    return RetrievalModel.load_default(device=device, config=config)


def load_serving(
    settings: Settings, checkpoint: Path | None = None, threads: int | None = None, config: ModelConfig | None = None
) -> RetrievalModel:
    """The checkpoint (or the default model) on `settings.device`, its encoders on the chosen runtime."""
    model = load_reference(checkpoint, settings.device, config)
    return accelerate(model, settings.runtime, graph_cache(settings), threads)


def load_configured(settings: Settings, threads: int | None = None) -> RetrievalModel:
    """The model this installation is configured to serve: YNET_MODEL, else the shipped default."""
    return load_serving(settings, settings.model_path, threads)


def verify_configured(settings: Settings) -> None:
    """Read and verify YNET_MODEL's checkpoint (raises `CheckpointError` or `OSError`) without building a
    network: a worker's main process checks this before it forks, and must not have run torch's thread
    pools."""
    if settings.model_path is not None:
        load_checkpoint(settings.model_path)


def load_registered(engine: Engine, model_id: int, settings: Settings) -> RetrievalModel:
    """A registered model as it was registered: its checkpoint, or the default model with the config it was
    registered with (an earlier release's default pooled by averaging); `LookupError` when the model is not
    registered or this machine would load another version."""
    with engine.connect() as conn:
        record = get(conn, model_id)
    return load_record(record, settings)


def load_record(record: ModelRecord, settings: Settings) -> RetrievalModel:
    """`record`'s network, refused (`LookupError`) unless it carries the registered version."""
    checkpoint, described = record.checkpoint, record.model_config
    config = None if checkpoint or described is None else ModelConfig.from_dict(described)
    model = load_serving(settings, checkpoint, config=config)
    if model.version != record.version:
        raise LookupError(
            f"model {record.id} is registered as {record.version}, but {checkpoint or 'the default model'} here is "
            f"{model.version}: make the same checkpoint available here"
        )
    return model
