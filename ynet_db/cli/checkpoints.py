"""Loading a model for a command: a checkpoint that is refused is a one-line error, not a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ynet_db.cli.terminal import safe

if TYPE_CHECKING:
    from ynet_db.nn.model import RetrievalModel


def load_model(path: Path | None, device: str = "cpu") -> RetrievalModel:
    """The checkpoint at `path`, or the pretrained default model when there is none."""
    from ynet_db.nn.backbone import WeightsError
    from ynet_db.nn.checkpoint import CheckpointError
    from ynet_db.nn.model import RetrievalModel

    try:
        return RetrievalModel.load(path, device=device) if path else RetrievalModel.load_default(device=device)
    except (CheckpointError, WeightsError) as error:
        raise click.ClickException(safe(error)) from error
