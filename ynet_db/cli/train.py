"""`ynet-db train`: fit Y-Net / TagYNet / CtxYNet on a dataset's training split."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

import click

from ynet_db.cli.context import App, pass_app
from ynet_db.cli.options import crop_option, device_option
from ynet_db.cli.terminal import safe

if TYPE_CHECKING:
    from ynet_db.data.records import Product
    from ynet_db.nn.catalogue_training import CataloguePlan
    from ynet_db.nn.config import ContextForm
    from ynet_db.nn.losses import Mining
    from ynet_db.nn.training import Stage

STAGE_CHOICES = ("ynet", "tagynet", "ctxynet")


@click.command("train")
@click.argument("dataset", required=False, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--from-catalogue",
    is_flag=True,
    help="Train TagYNet from products, photos and tags alone, checked on held-out products. Without DATASET: "
    "the products in the database (photos read under YNET_IMAGE_ROOTS / YNET_ALLOWED_HOSTS); DATASET: a "
    "catalogue import file, or a dataset whose training products are used without their street photos.",
)
@click.option(
    "--register",
    "register_result",
    is_flag=True,
    help="With --from-catalogue: register the result and activate it only if it beats the active model on the "
    "held-out products; the evidence is kept with the version (`ynet-db model list`).",
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
@pass_app
def train(
    app: App,
    dataset: Path | None,
    from_catalogue: bool,
    register_result: bool,
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
    DATASET is a catalogue file (or a dataset whose street photos are not read), or, left out, the
    database's own products; --register then registers the result and activates it only where it beats
    the active model on the held-out products.
    """
    from ynet_db.data import load_dataset
    from ynet_db.nn.catalogue_training import CataloguePlan
    from ynet_db.nn.fit import FitPlan, fit
    from ynet_db.nn.model import resolve_device

    if register_result and not from_catalogue:
        raise click.UsageError("--register goes with --from-catalogue (a pair-trained model: `ynet-db model register`)")
    if from_catalogue:
        catalogue_plan = CataloguePlan(
            epochs=epochs,
            embedding_dim=embedding_dim,
            lr=lr,
            batch_size=batch_size,
            margin=margin,
            name=name if name != "ynet-lite0-trained" else "ynet-lite0-catalogue",
            seed=seed,
        )
        train_from_catalogue_(app, dataset, out_dir, catalogue_plan, device, register_result)
        return
    if dataset is None:
        raise click.BadParameter(
            "is needed: a dataset folder (or --from-catalogue, which can read the database)", param_hint="DATASET"
        )
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


HELD_OUT_SHARE = 0.2
"""Products kept out of catalogue training to judge the result on."""
SHOWN_PROBLEMS = 20


def train_from_catalogue_(
    app: App, source: Path | None, out_dir: Path, plan: CataloguePlan, device: str, register_result: bool
) -> None:
    """`--from-catalogue`: read the catalogue, train, check on held-out products, register if asked."""
    from ynet_db.nn.catalogue_training import fit_from_catalogue
    from ynet_db.nn.model import resolve_device

    products = read_products(app, source, out_dir)
    checkpoint = fit_from_catalogue(
        products, out_dir, plan, holdout=HELD_OUT_SHARE, device=resolve_device(device), cache_dir=out_dir / "cache"
    )
    check = checkpoint.info.metrics["catalogue_check"]
    trained, default = check["trained"], check["default"]
    click.echo(f"wrote {out_dir / 'model.safetensors'}: {checkpoint.version}")
    click.echo(
        f"held-out check ({check['queries']} products never trained on, catalogue mode): top-1 {trained['1']:.3f} "
        f"vs the default's {default['1']:.3f} (± {check['standard_error']['1']:.3f}), top-20 {trained['20']:.3f} "
        f"vs {default['20']:.3f}: {'beats' if check['beats_default'] else 'does not beat'} the default"
    )
    if register_result:
        register_checked_(app, out_dir / "model.safetensors", products, plan.seed, source, str(resolve_device(device)))


def read_products(app: App, source: Path | None, out_dir: Path) -> dict[str, Product]:
    """The catalogue's usable products; each skipped one is reported, and their count always."""
    from ynet_db.nn.catalogue_training import catalogue_products

    if source is None:
        from ynet_db.data.database import read_catalogue
        from ynet_db.images.policy import FetchPolicy

        read = read_catalogue(app.migrated_engine, FetchPolicy.from_settings(app.settings), out_dir / "photos")
        products, problems, where, total = read.products, read.skipped, "the database", read.rows
    else:
        products, problems = catalogue_products(source)
        where, total = str(source), len(products) + len(problems)
    for problem in problems[:SHOWN_PROBLEMS]:
        click.echo(safe(f"skipped {problem}"), err=True)
    if len(problems) > SHOWN_PROBLEMS:
        click.echo(f"... and {len(problems) - SHOWN_PROBLEMS} more skipped", err=True)
    click.echo(safe(f"read {len(products)} of {total} products from {where}; {len(problems)} skipped"))
    if len(products) < 10:
        raise click.ClickException(
            safe(f"{where}: {len(products)} usable products; catalogue training needs at least 10")
        )
    return products


def register_checked_(
    app: App, checkpoint: Path, products: dict[str, Product], seed: int, source: Path | None, device: str
) -> None:
    """Register; activate only if the held-out products say the new version beats the active one."""
    from ynet_db.models.evidence import Split
    from ynet_db.models.held_out import HeldOutError, register_checked
    from ynet_db.nn.catalogue_training import catalogue_hash, split_products

    train, held = split_products(products, HELD_OUT_SHARE, seed)  # the split fit_from_catalogue trained on
    split = Split(seed, HELD_OUT_SHARE, len(held), len(train), catalogue_hash(products), str(source or "database"))
    try:
        outcome = register_checked(app.migrated_engine, checkpoint, held, split, device=device)
    except HeldOutError as error:
        raise click.ClickException(safe(f"{checkpoint} was registered but not judged: {error}")) from error
    decision, record = outcome.decision, outcome.record
    judged = decision.evidence
    if judged is not None:
        click.echo(
            f"held-out products ({judged.queries}, catalogue mode, first stages): top-1 "
            f"{judged.candidate.top_k['1']:.3f} vs the {judged.baseline_role} model's {judged.baseline.top_k['1']:.3f} "
            f"(gain ± {judged.gain_standard_error:.3f}), top-20 {judged.candidate.top_k['20']:.3f} vs "
            f"{judged.baseline.top_k['20']:.3f}"
        )
    if decision.activated and record.state == "backfilling":
        tail = f"activated: back-filling {outcome.backfill_jobs} products; search switches when it covers the catalogue"
    elif decision.activated:
        tail = f"activated ({record.state})"
    else:
        tail = f"registered, not activated ({record.state})"
    click.echo(safe(f"{record.version}: {tail}: {decision.reason}"))
