"""Loading a model for a command: a checkpoint that is refused is a one-line error, not a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ynet_db.cli.terminal import safe

if TYPE_CHECKING:
    from ynet_db.config import Settings
    from ynet_db.nn.model import RetrievalModel


def load_model(path: Path | None, device: str = "cpu") -> RetrievalModel:
    """The checkpoint at `path`, or the pretrained default model when there is none (fp32 PyTorch)."""
    from ynet_db.models.serving import load_reference

    with refused_as_error():
        return load_reference(path, device)


def load_configured_model(settings: Settings) -> RetrievalModel:
    """The model the workers serve (YNET_MODEL or the default), on the runtime YNET_RUNTIME chooses."""
    from ynet_db.models.serving import load_configured

    with refused_as_error():
        return load_configured(settings)


@contextmanager
def refused_as_error() -> Iterator[None]:
    """A checkpoint or pretrained weights that are refused end the command with their one-line reason."""
    from ynet_db.nn.backbone import WeightsError
    from ynet_db.nn.checkpoint import CheckpointError

    try:
        yield
    except (CheckpointError, WeightsError) as error:
        raise click.ClickException(safe(error)) from error
