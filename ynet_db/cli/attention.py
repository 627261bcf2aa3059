"""`ynet-db attention`: draw where a model looks in an image."""

from __future__ import annotations

from pathlib import Path

import click

from ynet_db.cli.checkpoints import load_model
from ynet_db.cli.options import device_option, model_option


@click.command("attention")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="PNG to write.")
@model_option
@click.option("--tag", "tags", multiple=True, help="Shop mode: a product tag such as category:dress (repeatable).")
@click.option(
    "--candidate",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Query mode: a shop image whose vector is the context.",
)
@click.option("--candidate-tag", "candidate_tags", multiple=True, help="Tags of the candidate shop image (repeatable).")
@device_option
def attention(
    image: Path,
    out: Path,
    model_path: Path | None,
    tags: tuple[str, ...],
    candidate: Path | None,
    candidate_tags: tuple[str, ...],
    device: str,
) -> None:
    """Write a heatmap of a model's attention over IMAGE.

    Without --candidate, IMAGE is a shop image and the map is TagYNet's attention given --tag.
    With --candidate, IMAGE is a street photo and the map is CtxYNet's query attention given that
    candidate shop image. A model whose vocabulary knows none of the tags pools evenly (flat map).
    """
    from ynet_db.data.records import ImageRef
    from ynet_db.images.dataset import read_image
    from ynet_db.presentation.attention_map import query_attention, save_overlay, shop_attention

    model = load_model(model_path, device)
    picture = read_image(ImageRef(image))
    if candidate is None:
        weights = shop_attention(model, picture, tags)
        unknown = [t for t in tags if t not in model.vocabulary]
        if unknown:
            click.echo(f"tags unknown to {model.version} (ignored): {', '.join(unknown)}", err=True)
    else:
        shop = model.encode_shop(model.preprocess(read_image(ImageRef(candidate)))[None], [list(candidate_tags)])
        weights = query_attention(model, picture, shop.vectors[0])
    click.echo(str(save_overlay(picture, weights, out)))
