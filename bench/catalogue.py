"""Catalogue-only training (issue 9 item 5) measured on the generated benchmark (a benchmark command).

    python bench/catalogue.py DATASET [--epochs 8] [--views 2] [--out bench-data/catalogue]

Trains on the train split's *products only* (shop photos and tags; its street photos are never read)
and measures on the test split's street photos against its shop photos, each query photo once:
  pretrained            the backbone's average-pooled features (1280-d), and the 256-d PCA start
  catalogue TagYNet     tag attention + tag prediction + distillation, street views by augmentation
                        of the garment the tag attention finds in each photo (the crop)
  whole-photo views     the same, street views made from the whole photo (the crop's control)
  control               the same training with the attention kept uniform (no tag attention, so no crop)
The crop is also scored against the release's product boxes, which training never reads: mean IoU,
beside the IoU of the whole photo.
No choice is made on the test split (`--validation N` measures on the last N training products
instead), and its street photos are never trained on. With `--with-searched-products` its products'
photos and tags are, as a shop's own training reads its whole catalogue, the products it searches too.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import torch
from ladder import limited, row

from ynet_db.nn.augment import STREET_VIEW_RECIPES, STREET_VIEWS


@click.command()
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--epochs", default=8, show_default=True)
@click.option("--views", default=2, show_default=True, help="Street views made per training product.")
@click.option("--lr", default=0.01, show_default=True)
@click.option("--tag-weight", default=1.0, show_default=True)
@click.option("--distill-weight", default=1.0, show_default=True)
@click.option("--train-products", type=int, help="Use only the first N training products (sorted ids).")
@click.option("--test-products", type=int, help="Use only the first N test products (sorted ids).")
@click.option(
    "--validation",
    "validation_products",
    type=int,
    help="Measure on the last N training products' street photos instead of the test split; training then "
    "leaves them out. For choices (recipe, epochs, views): the test split is never used for one.",
)
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path), help="Trunk-feature cache.")
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("bench-data/catalogue")
)
@click.option("--threads", default=2, show_default=True)
@click.option(
    "--with-searched-products",
    is_flag=True,
    help="Also train on the searched products' photos and tags, as a shop trains on its whole catalogue "
    "(`ynet-db train --from-catalogue`); their street photos are still never read.",
)
@click.option("--controls/--no-controls", default=True, show_default=True, help="Also train the two controls.")
@click.option(
    "--street-views",
    type=click.Choice(STREET_VIEW_RECIPES),
    default=STREET_VIEWS,
    show_default=True,
    help="The street views' recipe (ynet_db.nn.augment.STREET_VIEW_RECIPES); v2 is the one before clutter, "
    "folds and the phone's sensor.",
)
@click.option("--seed", default=0, show_default=True)
def catalogue(
    dataset: Path,
    epochs: int,
    views: int,
    lr: float,
    tag_weight: float,
    distill_weight: float,
    train_products: int | None,
    test_products: int | None,
    validation_products: int | None,
    cache_dir: Path | None,
    out_dir: Path,
    threads: int,
    with_searched_products: bool,
    controls: bool,
    street_views: str,
    seed: int,
) -> None:
    """Print catalogue-only TagYNet beside its control and the pretrained start on DATASET's test split."""
    from ynet_db.data import load_dataset
    from ynet_db.models.evaluate import paired_difference, report, write_json
    from ynet_db.nn.catalogue_training import CataloguePlan, train_from_catalogue
    from ynet_db.nn.config import ModelConfig
    from ynet_db.nn.fit import cache_split, cached_ranking
    from ynet_db.nn.model import build_network

    torch.set_num_threads(threads)
    data = load_dataset(dataset)
    if validation_products:
        data = with_validation(data, validation_products)
    data = limited(data, train_products, test_products)
    measured_on = "val" if validation_products else "test"
    cache = cache_dir or out_dir / "cache"
    catalogue_products = data.split("train").products  # products, photos and tags: no street photo is read
    if with_searched_products:
        catalogue_products = {**catalogue_products, **data.split(measured_on).products}
    plan = CataloguePlan(
        epochs=epochs,
        views=views,
        lr=lr,
        tag_weight=tag_weight,
        distill_weight=distill_weight,
        street_views=street_views,
        seed=seed,
    )
    results: dict[str, Any] = {}
    trained: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    variants = [
        ("PCA 256-d start (no training)", replace(plan, epochs=0, tag_epochs=0, crop_views=False)),
        ("catalogue TagYNet", plan),
    ]
    if controls:
        variants += [
            ("whole-photo views: the same without the crop", replace(plan, crop_views=False)),
            ("control: the same without tag attention", replace(plan, use_tags=False)),
        ]
    for label, variant in variants:
        began = time.perf_counter()
        trained[label] = train_from_catalogue(catalogue_products, variant, cache_dir=cache)
        seconds[label] = time.perf_counter() - began
    network, vocabulary, _ = trained["catalogue TagYNet"]
    test = cache_split(
        network, data.split(measured_on), views=1, crop=False, cache_dir=cache, device=torch.device("cpu")
    )
    click.echo("| model | top-1 | top-5 | top-10 | top-20 | top-50 |\n|---|---|---|---|---|---|")
    identity = build_network(ModelConfig(), 0)
    pretrained = "pretrained (1280-d, average pooling)"
    rankings = {pretrained: cached_ranking(identity, test, vocabulary, use_tags=False)}
    for label, (net, vocab, _) in trained.items():
        rankings[label] = cached_ranking(net, test, vocab, use_tags="control" not in label)
    for label, ranking in rankings.items():
        # the same queries in the same order for every model: the per-query ranks let runs be compared paired
        results[label] = {**report(ranking), "ranks": ranking.ranks.tolist()}
        if label in trained:
            results[label]["epoch_losses"] = trained[label][2]
        click.echo(row(label, results[label]))
    top1 = {name: result["top_k"]["1"] for name, result in results.items()}
    paired = {
        f"catalogue TagYNet - {other}": paired_difference(rankings["catalogue TagYNet"].ranks, rankings[other].ranks)
        for other in rankings
        if other != "catalogue TagYNet"
    }
    for name, difference in paired.items():
        top1_gain = difference["1"]
        click.echo(f"{name}: top-1 {top1_gain['difference']:+.3f} (paired SE {top1_gain['standard_error']:.3f})")
    crops = crop_overlap(network, vocabulary, catalogue_products, cache)
    click.echo(f"\ncrop against the release's product boxes (mean IoU): {crops}")
    summary = {
        "results": results,
        "tagynet_minus_control_top1": minus(top1, "control: the same without tag attention"),
        "crop_minus_whole_photo_top1": minus(top1, "whole-photo views: the same without the crop"),
        "paired": paired,
        "crop_iou": crops,
        "train_seconds": seconds,
        "settings": {
            "epochs": epochs,
            "views": views,
            "lr": lr,
            "tag_weight": tag_weight,
            "distill_weight": distill_weight,
            "train_products": train_products,
            "test_products": test_products,
            "measured_on": measured_on,
            "validation_products": validation_products,
            "with_searched_products": with_searched_products,
            "street_views": street_views,
            "seed": seed,
            "threads": threads,
        },
    }
    write_json(summary, out_dir / "catalogue.json")
    click.echo(f"\nwrote {out_dir / 'catalogue.json'}")


def minus(top1: dict[str, float], control: str) -> float | None:
    """Catalogue TagYNet's top-1 minus `control`'s, where the control was trained."""
    return top1["catalogue TagYNet"] - top1[control] if control in top1 else None


def with_validation(data: Any, count: int) -> Any:
    """The dataset with the last `count` training products (sorted ids) and their pairs moved to 'val'."""
    from ynet_db.data.records import RetrievalDataset

    held = set(sorted(data.split("train").products)[-count:])
    pairs = [replace(p, split="val") if p.item_id in held else p for p in data.pairs]
    return RetrievalDataset(data.name, data.root, data.products, pairs)


def crop_overlap(network: Any, vocabulary: Any, products: dict[str, Any], cache: Path) -> dict[str, float]:
    """Mean IoU of the attended crop (what training cut its street views from) with the release's
    product box, beside the whole photo's; the boxes are read here only, never in training."""
    from ynet_db.images.dataset import read_image
    from ynet_db.nn.catalogue_training import attended_refs, cache_shop_side

    side = cache_shop_side(network, products, vocabulary, cache_dir=cache, device=torch.device("cpu"), progress=False)
    crops = attended_refs(network, side, cache_dir=cache, device=torch.device("cpu"))
    truth = {ref.path: ref.box for product in products.values() for ref in product.shop_images}
    pairs = [(c.box, truth[c.path], read_image(type(c)(c.path)).size) for c in crops if truth.get(c.path)]
    crop_iou = [iou(crop, box) for crop, box, _ in pairs]
    whole_iou = [iou(type(box)(0, 0, w, h), box) for _, box, (w, h) in pairs]
    return {
        "products": len(pairs),
        "crop_mean_iou": round(sum(crop_iou) / max(len(pairs), 1), 3),
        "crop_iou_at_least_0.5": round(sum(v >= 0.5 for v in crop_iou) / max(len(pairs), 1), 3),
        "whole_photo_mean_iou": round(sum(whole_iou) / max(len(pairs), 1), 3),
    }


def iou(a: Any, b: Any) -> float:
    width = max(0, min(a.right, b.right) - max(a.left, b.left))
    height = max(0, min(a.bottom, b.bottom) - max(a.top, b.top))
    inter = width * height
    area = (a.right - a.left) * (a.bottom - a.top) + (b.right - b.left) * (b.bottom - b.top)
    return inter / (area - inter)


if __name__ == "__main__":
    catalogue()
