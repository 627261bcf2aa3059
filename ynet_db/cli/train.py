"""`ynet-db train`: fit Y-Net / TagYNet / CtxYNet on a dataset's training split."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

import click

from ynet_db.cli.options import crop_option, device_option
from ynet_db.cli.terminal import safe

if TYPE_CHECKING:
    from ynet_db.nn.config import ContextForm
    from ynet_db.nn.losses import Mining
    from ynet_db.nn.training import Stage

STAGE_CHOICES = ("ynet", "tagynet", "ctxynet")


@click.command("train")
@click.argument("dataset", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--from-catalogue",
    is_flag=True,
    help="Train TagYNet from products, photos and tags alone (DATASET: a catalogue import file, or a dataset "
    "whose training products are used without their street photos); checked on held-out products.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Checkpoint folder (model.safetensors; resume state per stage).",
)
@click.option(
    "--stage",
    "stages",
    type=click.Choice(STAGE_CHOICES),
    multiple=True,
    help="Stages to run in order (default: tagynet ctxynet).",
)
@click.option("--epochs", default=20, show_default=True, help="Epochs of the Y-Net/TagYNet stages.")
@click.option("--ctx-epochs", default=10, show_default=True, help="Epochs of the CtxYNet stage.")
@click.option("--embedding-dim", default=256, show_default=True, help="Size of the stored vectors.")
@click.option("--views", default=3, show_default=True, help="Cached views per street image (augmentation; 1 = none).")
@click.option("--context-form", type=click.Choice(["linear", "dot", "mlp"]), default="linear", show_default=True)
@click.option("--lr", default=0.01, show_default=True)
@click.option("--batch-size", default=32, show_default=True, help="Products per batch.")
@click.option("--margin", default=0.3, show_default=True)
@click.option("--mining", type=click.Choice(["shifted", "hardest"]), default="shifted", show_default=True)
@click.option(
    "--name", default="ynet-lite0-trained", show_default=True, help="Model name (the version is name@content-hash)."
)
@click.option("--seed", default=0, show_default=True)
@crop_option
@click.option(
    "--cache",
    "cache_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Trunk-feature cache (default: OUT/cache).",
)
@device_option
def train(
    dataset: Path,
    from_catalogue: bool,
    out_dir: Path,
    stages: tuple[str, ...],
    epochs: int,
    ctx_epochs: int,
    embedding_dim: int,
    views: int,
    context_form: str,
    lr: float,
    batch_size: int,
    margin: float,
    mining: str,
    name: str,
    seed: int,
    crop: bool,
    cache_dir: Path | None,
    device: str,
) -> None:
    """Train on DATASET's 'train' split and write OUT/model.safetensors.

    The pretrained trunk is frozen and its outputs cached (first run: a few minutes per thousand
    images on a CPU), so the branches train quickly. Re-running the same command resumes each stage
    from its last finished epoch. The context stage trains the context attention alone on the frozen first
    stage, chosen and judged on held-out products ('val' split or training products the first stages
    never saw); the checkpoint records the evidence and whether it helped. With --from-catalogue,
    DATASET is a catalogue file (or a dataset whose street photos are not read).
    """
    from ynet_db.data import load_dataset
    from ynet_db.nn.fit import FitPlan, fit
    from ynet_db.nn.model import resolve_device

    if from_catalogue:
        train_from_catalogue_(dataset, out_dir, epochs, embedding_dim, lr, batch_size, margin, name, seed, device)
        return
    if not dataset.is_dir():
        raise click.BadParameter(
            f"{dataset} is a file: a dataset is a folder (or add --from-catalogue)", param_hint="DATASET"
        )
    plan = FitPlan(
        stages=cast("tuple[Stage, ...]", stages) or ("tagynet", "ctxynet"),
        epochs=epochs,
        ctx_epochs=ctx_epochs,
        embedding_dim=embedding_dim,
        views=views,
        context_form=cast("ContextForm", context_form),  # click.Choice checked it
        name=name,
        batch_size=batch_size,
        lr=lr,
        margin=margin,
        mining=cast("Mining", mining),
        seed=seed,
        crop=crop,
    )
    checkpoint = fit(
        load_dataset(dataset), out_dir, plan, device=resolve_device(device), cache_dir=cache_dir or out_dir / "cache"
    ).checkpoint
    click.echo(
        f"wrote {out_dir / 'model.safetensors'}: {checkpoint.version}; "
        f"re-ranker measured to help: {checkpoint.info.rerank_measured_to_help}"
    )


def train_from_catalogue_(
    source: Path,
    out_dir: Path,
    epochs: int,
    embedding_dim: int,
    lr: float,
    batch_size: int,
    margin: float,
    name: str,
    seed: int,
    device: str,
) -> None:
    """`--from-catalogue`: train, check on held-out products against the shipped default, report."""
    from ynet_db.nn.catalogue_training import CataloguePlan, catalogue_products, fit_from_catalogue
    from ynet_db.nn.model import resolve_device

    products, problems = catalogue_products(source)
    for problem in problems[:20]:
        click.echo(safe(f"skipped {problem}"), err=True)
    if len(problems) > 20:
        click.echo(f"... and {len(problems) - 20} more rows skipped", err=True)
    if len(products) < 10:
        raise click.ClickException(f"{source}: {len(products)} usable products; catalogue training needs at least 10")
    plan = CataloguePlan(
        epochs=epochs,
        embedding_dim=embedding_dim,
        lr=lr,
        batch_size=batch_size,
        margin=margin,
        name=name if name != "ynet-lite0-trained" else "ynet-lite0-catalogue",
        seed=seed,
    )
    checkpoint = fit_from_catalogue(products, out_dir, plan, device=resolve_device(device), cache_dir=out_dir / "cache")
    check = checkpoint.info.metrics["catalogue_check"]
    trained, default = check["trained"], check["default"]
    click.echo(f"wrote {out_dir / 'model.safetensors'}: {checkpoint.version}")
    click.echo(
        f"held-out check ({check['queries']} products never trained on, catalogue mode): top-1 {trained['1']:.3f} "
        f"vs the default's {default['1']:.3f} (± {check['standard_error']['1']:.3f}), top-20 {trained['20']:.3f} "
        f"vs {default['20']:.3f}: {'beats' if check['beats_default'] else 'does not beat'} the default"
    )
