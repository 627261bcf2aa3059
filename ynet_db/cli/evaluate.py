"""`ynet-db evaluate`: top-k retrieval accuracy of a model on a dataset split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ynet_db.cli.checkpoints import load_model
from ynet_db.cli.options import crop_option, device_option, model_option


@click.command("evaluate")
@click.argument("dataset", type=click.Path(exists=True, path_type=Path))
@model_option
@click.option("--split", default="test", show_default=True, help="Which split's queries and gallery.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("evaluation"),
    show_default=True,
    help="Folder for results.json and topk.png.",
)
@crop_option
@click.option(
    "--distractors",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of images added to the gallery that match no query.",
)
@click.option(
    "--rerank/--no-rerank",
    default=None,
    help="CtxYNet re-ranking of the top 256 (default: only if the model was measured to gain from it).",
)
@click.option(
    "--catalogue",
    is_flag=True,
    help="Needs no street photos: each product's second photo, else an augmented street view of its photo, "
    "is a query against the rest of the catalogue. DATASET may then be a catalogue file (CSV or JSON Lines).",
)
@device_option
@click.option("--batch-size", default=32, show_default=True)
def evaluate(
    dataset: Path,
    model_path: Path | None,
    split: str,
    out_dir: Path,
    crop: bool,
    distractors: Path | None,
    rerank: bool | None,
    catalogue: bool,
    device: str,
    batch_size: int,
) -> None:
    """Measure top-k accuracy (k = 1, 5, 10, 20, 50) of a model on DATASET.

    DATASET is a DeepFashion Consumer-to-Shop or Street2Shop release (or a generated benchmark).
    Queries are the split's street photos, each counted once however many pairs list it; the
    gallery is every shop image of the split's products, and any image of a query's product is a
    hit. With --catalogue, the queries come from the catalogue itself (no street photos needed).
    Writes results.json (overall, per category, bootstrap standard errors, each query's rank and
    first results) and topk.png. Run it on your own data to decide whether a trained checkpoint
    beats the default model.
    """
    from ynet_db.models.evaluate import evaluate_model, plot_topk, write_json

    model = load_model(model_path, device)  # a refused checkpoint is a one-line error, before any data is read
    data, problems = evaluation_data(dataset, split, catalogue)
    use_rerank = model.rerank_measured_to_help if rerank is None else rerank
    result = evaluate_model(
        model,
        data,
        crop=crop,
        distractors=distractors,
        rerank=use_rerank,
        catalogue=catalogue,
        batch_size=batch_size,
    )
    result["unreadable"] = problems + result["unreadable"]
    write_json(result, out_dir / "results.json")
    plot_topk({model.version: result}, out_dir / "topk.png", title=f"{dataset.name} ({result['mode']})")
    tops = "  ".join(f"top-{k} {v:.3f}" for k, v in result["top_k"].items())
    click.echo(f"{model.version} on {data.name}: {result['queries']} queries, gallery {result['gallery']}: {tops}")
    if result["unreadable"]:
        click.echo(f"{len(result['unreadable'])} images or rows could not be used (listed in results.json)", err=True)


def evaluation_data(dataset: Path, split: str, catalogue: bool) -> tuple[Any, list[str]]:
    """The split to evaluate (a catalogue file's products, with --catalogue), and rows it cannot use."""
    from ynet_db.data import DatasetError, load_dataset
    from ynet_db.models.evaluate import catalogue_file

    if dataset.is_file():
        if not catalogue:
            raise click.UsageError(f"{dataset} is a file: a catalogue file is evaluated with --catalogue")
        data, problems = catalogue_file(dataset)
        if not data.products:
            raise click.ClickException(f"{dataset} has no usable products ({len(problems)} rows refused)")
        return data, problems
    try:
        data = load_dataset(dataset).split(split)
    except DatasetError as error:
        raise click.ClickException(str(error)) from error
    if not data.pairs:
        raise click.ClickException(f"{dataset} has no {split!r} pairs")
    return data, []
