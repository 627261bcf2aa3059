"""The ladder of issue 3, measured in one run on one dataset (a benchmark command, not a test).

    python bench/ladder.py DATASET [--epochs 20] [--ctx-epochs 10] [--out bench/ladder-out]

Rows, each beside its matched control (the previous stage trained the same way for as long):
  pretrained     the backbone's average-pooled features (identity 1280-d, and the 256-d PCA start)
  Y-Net          both branches trained E epochs from the PCA start
  TagYNet        the same E epochs with tag attention learned jointly   | control: Y-Net
  CtxYNet        TagYNet's top 256 re-ranked by the context attention  | control: TagYNet itself,
                 trained on the frozen TagYNet (held-out products),      unchanged (the first stage
                 lr and epochs (<= C) chosen on other held-out ones      it re-ranks)
Each model is trained by `ynet_db.nn.fit.fit`, the entry point of `ynet-db train`, into OUT/ynet and
OUT/tagynet (as `ynet-db train DATASET --out OUT/tagynet --stage tagynet --stage ctxynet` would write it,
resumable the same way), and measured as loaded back from that checkpoint, the file `ynet-db evaluate`
reads and a worker serves. The CtxYNet row is the re-ranker as the checkpoint ships it (zero attention,
i.e. TagYNet, where its held-out judge said it did not help); the chosen attention before that gate is
reported beside it. Then the shop encoder's throughput against the bare backbone (batch 32) and the
re-rank cost of 256 candidates. Every stage trains on cached trunk features; the test split is never
trained on nor used for a choice.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import torch
import torch.nn.functional as F


def throughput(batch: int, repeats: int) -> dict[str, float]:
    """Images/s of RetrievalModel.encode_shop and of the bare backbone classifier, interleaved."""
    from ynet_db.nn.backbone import pretrained_lite0
    from ynet_db.nn.model import RetrievalModel

    model = RetrievalModel.load_default()
    backbone = pretrained_lite0()
    pixels = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    tags = [["category:dress"]] * batch
    times: dict[str, list[float]] = {"shop_encoder": [], "backbone": []}
    with torch.inference_mode():
        backbone(pixels[:2])
        model.encode_shop(pixels[:2], tags[:2])
        for _ in range(repeats):
            for name, run in (
                ("backbone", lambda: backbone(pixels)),
                ("shop_encoder", lambda: model.encode_shop(pixels, tags)),
            ):
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    result = {f"{name}_images_per_s": batch / min(values) for name, values in times.items()}
    result["ratio"] = result["shop_encoder_images_per_s"] / result["backbone_images_per_s"]
    return result


def rerank_cost(candidates: int, repeats: int) -> dict[str, float]:
    from ynet_db.nn.model import RetrievalModel

    results = {}
    for dim, name in ((1280, "default_1280d"), (256, "trained_256d")):
        from ynet_db.nn.config import ModelConfig

        config = ModelConfig() if dim == 1280 else ModelConfig(name="x", projection="linear", embedding_dim=256)
        model = RetrievalModel.load_default(config=config)
        street_map = torch.randn(config.locations, dim)
        vectors = F.normalize(torch.randn(candidates, dim), dim=-1)
        model.rerank(street_map, vectors)
        start = time.perf_counter()
        for _ in range(repeats):
            model.rerank(street_map, vectors)
        results[f"{name}_ms"] = (time.perf_counter() - start) / repeats * 1000
    return results


TAGYNET = "TagYNet (control: Y-Net above)"
CTXYNET = "CtxYNet re-rank of top 256, as shipped (control: TagYNet above)"


def limited(data: Any, train_products: int | None, test_products: int | None) -> Any:
    """The dataset with only the first N products (sorted ids) of its train and test splits."""
    from ynet_db.data.records import RetrievalDataset

    keep: set[str] = set()
    for split, limit in (("train", train_products), ("test", test_products), ("val", None)):
        items = sorted(data.split(split).products)
        keep |= set(items if limit is None else items[:limit])
    products = {i: p for i, p in data.products.items() if i in keep}
    return RetrievalDataset(data.name, data.root, products, [p for p in data.pairs if p.item_id in keep])


def row(name: str, result: dict[str, Any]) -> str:
    top = result["top_k"]
    se = result["standard_error"]
    cells = [f"{top['1']:.3f} ± {se['1']:.3f}", f"{top['5']:.3f}", f"{top['10']:.3f}"]
    cells += [f"{top['20']:.3f} ± {se['20']:.3f}", f"{top['50']:.3f}"]
    return f"| {name} | " + " | ".join(cells) + " |"


@click.command()
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--epochs", default=20, show_default=True)
@click.option("--ctx-epochs", default=10, show_default=True)
@click.option("--lr", default=0.01, show_default=True)
@click.option("--views", default=3, show_default=True)
@click.option("--embedding-dim", default=256, show_default=True)
@click.option("--holdout", default=0.3, show_default=True, help="Share of training products kept for the re-ranker.")
@click.option("--context-form", type=click.Choice(["linear", "dot", "mlp"]), default="linear", show_default=True)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("bench/ladder-out"),
    show_default=True,
)
@click.option("--device", default="auto", show_default=True)
@click.option("--threads", default=2, show_default=True)
@click.option("--speed-repeats", default=5, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--train-products", type=int, help="Use only the first N training products (sorted ids).")
@click.option("--test-products", type=int, help="Use only the first N test products (sorted ids).")
def ladder(
    dataset: Path,
    epochs: int,
    ctx_epochs: int,
    lr: float,
    views: int,
    embedding_dim: int,
    holdout: float,
    context_form: str,
    out_dir: Path,
    device: str,
    threads: int,
    speed_repeats: int,
    seed: int,
    train_products: int | None,
    test_products: int | None,
) -> None:
    """Print the ladder table for DATASET (a release-format dataset with train and test splits)."""
    from ynet_db.data import load_dataset
    from ynet_db.models.evaluate import plot_topk, report, write_json
    from ynet_db.nn.config import ModelConfig
    from ynet_db.nn.fit import FitPlan, Trained, cache_split, cached_ranking, fit
    from ynet_db.nn.model import RetrievalModel, build_network, resolve_device
    from ynet_db.nn.tags import TagVocabulary

    torch.set_num_threads(threads)
    run_device = resolve_device(device)
    data = limited(load_dataset(dataset), train_products, test_products)
    test = data.split("test")
    cache = out_dir / "cache"
    plan = FitPlan(
        stages=("tagynet", "ctxynet"),
        epochs=epochs,
        ctx_epochs=ctx_epochs,
        embedding_dim=embedding_dim,
        views=views,
        holdout=holdout,
        context_form=context_form,  # type: ignore[arg-type]
        name="ladder",
        lr=lr,
        seed=seed,
    )
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    trained: dict[str, Trained] = {}
    served: dict[str, RetrievalModel] = {}
    for stage in ("ynet", "tagynet"):
        began = time.perf_counter()
        stage_plan = replace(plan, stages=(stage, "ctxynet"))
        trained[stage] = fit(data, out_dir / stage, stage_plan, device=run_device, cache_dir=cache)
        timings[stage] = time.perf_counter() - began
        served[stage] = RetrievalModel.load(out_dir / stage / "model.safetensors", device=run_device)
    vocabulary: TagVocabulary = served["tagynet"].vocabulary
    cached_test = cache_split(served["tagynet"].network, test, views=1, crop=False, cache_dir=cache, device=run_device)

    def evaluate(name: str, network: Any, **kw: Any) -> None:
        results[name] = report(cached_ranking(network, cached_test, vocabulary, device=run_device, **kw))
        click.echo(row(name, results[name]))

    click.echo("| model | top-1 | top-5 | top-10 | top-20 | top-50 |\n|---|---|---|---|---|---|")
    identity = build_network(ModelConfig(), 0).to(run_device)
    evaluate("pretrained (1280-d, average pooling)", identity, use_tags=False)
    evaluate("Y-Net", served["ynet"].network, use_tags=False)
    evaluate(TAGYNET, served["tagynet"].network)
    evaluate(CTXYNET, served["tagynet"].network, rerank=True)
    evidence = trained["tagynet"].context
    ungated = copy.deepcopy(served["tagynet"].network)
    if evidence is not None and evidence.chosen:
        ungated.context_attention.load_state_dict(evidence.chosen)
    evaluate("CtxYNet, the chosen attention before the gate", ungated, rerank=True)
    top1 = {name: result["top_k"]["1"] for name, result in results.items()}
    tag_gain = top1[TAGYNET] / max(top1["Y-Net"], 1e-9)
    ctx_over_tag = top1[CTXYNET] - top1[TAGYNET]
    cost = rerank_cost(256, 50)  # before the throughput run, whose large buffers slow small kernels after it
    speed = throughput(32, speed_repeats)
    click.echo(f"\nTagYNet / control top-1: {tag_gain:.2f}x (target >= 1.15)")
    click.echo(f"CtxYNet - TagYNet (its unchanged first stage) top-1: {ctx_over_tag:+.3f}")
    metrics = {stage: result.checkpoint.info.metrics for stage, result in trained.items()}
    for stage, recorded in metrics.items():
        click.echo(f"context stage on {stage}: {json.dumps(recorded.get('context_stage'))}")
    click.echo(
        f"shop encoder {speed['shop_encoder_images_per_s']:.1f} img/s vs bare backbone "
        f"{speed['backbone_images_per_s']:.1f} img/s at batch 32: ratio {speed['ratio']:.2f} (target >= 0.9)"
    )
    click.echo(
        f"re-rank of 256 candidates: {cost['default_1280d_ms']:.2f} ms (1280-d default), "
        f"{cost['trained_256d_ms']:.2f} ms (256-d)"
    )
    summary = {
        "results": results,
        "tag_gain_top1": tag_gain,
        "ctx_over_tagynet_top1": ctx_over_tag,
        "context_stage": {stage: recorded.get("context_stage") for stage, recorded in metrics.items()},
        "checkpoints": {stage: result.checkpoint.version for stage, result in trained.items()},
        "throughput": speed,
        "rerank_cost": cost,
        "train_seconds": timings,
        "settings": {
            "epochs": epochs,
            "ctx_epochs": ctx_epochs,
            "lr": lr,
            "views": views,
            "embedding_dim": embedding_dim,
            "holdout": holdout,
            "context_form": context_form,
            "seed": seed,
            "threads": threads,
            "train_products": train_products,
            "test_products": test_products,
        },
    }
    write_json(summary, out_dir / "ladder.json")
    plot_topk(results, out_dir / "ladder.png", title=f"Ladder on {data.name}")
    click.echo(f"\nwrote {out_dir / 'ladder.json'} and {out_dir / 'ladder.png'}")


if __name__ == "__main__":
    ladder()
