"""Options several model commands share, spelled and explained once."""

from __future__ import annotations

from pathlib import Path

import click

model_option = click.option(
    "--model",
    "model_path",
    type=click.Path(exists=True, path_type=Path),
    help="Checkpoint (default: the pretrained default model).",
)
crop_option = click.option(
    "--crop/--no-crop",
    default=False,
    show_default=True,
    help="Crop images to the release's bounding boxes (off: whole photos, as the catalogue serves them).",
)
device_option = click.option(
    "--device", default="auto", show_default=True, help="auto (CUDA when there is one), cpu or cuda."
)
