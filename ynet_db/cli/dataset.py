"""`ynet-db dataset ...`: generate the cross-domain benchmark, or inspect any dataset."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ynet_db.data import DatasetError, dataset_format, load_dataset
from ynet_db.data.summary import DatasetSummary, summarise


@click.group()
def dataset() -> None:
    """Generate or inspect retrieval datasets (DeepFashion Consumer-to-Shop or Street2Shop layout)."""


@dataset.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Same seed, byte-identical files."
)
@click.option(
    "--train-products", default=2000, show_default=True, type=click.IntRange(min=0), help="Products in the train split."
)
@click.option(
    "--test-products",
    default=1000,
    show_default=True,
    type=click.IntRange(min=0),
    help="Products in the test split (the gallery).",
)
@click.option(
    "--street-per-product",
    default=2,
    show_default=True,
    type=click.IntRange(1, 99),
    help="Street (query) photos per product.",
)
@click.option(
    "--size", default=224, show_default=True, type=click.IntRange(min=32), help="Side of every image in pixels."
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Drawing processes; the files do not depend on it.",
)
def synth(
    out_dir: Path, seed: int, train_products: int, test_products: int, street_per_product: int, size: int, workers: int
) -> None:
    """Draw the generated cross-domain benchmark into OUT_DIR, in the DeepFashion Consumer-to-Shop layout.

    Each product is a drawn garment with one shop photo, where it lies beside one or two other
    garments (only its tags say which one is for sale), and street photos, where it is posed, lit
    badly, blurred and partly hidden in clutter. Tags (category, colour, pattern, sleeve) are shared
    by many products; products differ in finer detail. Read it back with `ynet-db dataset info`,
    `ynet-db train` and `ynet-db evaluate` like any DeepFashion copy.
    """
    from ynet_db.data.synth import SynthConfig, generate

    if out_dir.exists() and any(out_dir.iterdir()):
        raise click.UsageError(f"{out_dir} is not empty; choose a new directory so old and new images do not mix")
    try:
        config = SynthConfig(seed, train_products, test_products, street_per_product, size)
    except ValueError as error:
        raise click.UsageError(str(error)) from error
    started = time.perf_counter()
    records = generate(out_dir, config, workers=workers)
    elapsed = time.perf_counter() - started
    images = sum(1 + len(record.street) for record in records)
    click.echo(
        f"wrote {images} images of {len(records)} products to {out_dir} "
        f"in {elapsed:.0f} s ({images / elapsed:.0f} images/s)"
    )


@dataset.command()
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
def info(root: Path) -> None:
    """Detect ROOT's format and print its products, pairs and images per split, category and tag."""
    try:
        click.echo(f"format: {dataset_format(root)}")
        summary = summarise(load_dataset(root))
    except DatasetError as error:
        raise click.ClickException(str(error)) from error
    click.echo(format_summary(summary))


def format_summary(summary: DatasetSummary) -> str:
    lines = [f"dataset: {summary.name}", "splits:"]
    for name, counts in summary.splits.items():
        lines.append(
            f"  {name:<6} {counts.products:>7} products {counts.pairs:>8} pairs "
            f"{counts.street_images:>8} street images {counts.shop_images:>7} shop images"
        )
    lines.append("categories (products):")
    lines.extend(f"  {name:<24} {count:>7}" for name, count in summary.categories.items())
    lines.append("tags (products):")
    lines.extend(f"  {tag:<32} {count:>7}" for tag, count in summary.tags.items())
    lines.append(f"tag combinations: {summary.tag_sets} ({summary.products_per_tag_set:.1f} products each on average)")
    return "\n".join(lines)
