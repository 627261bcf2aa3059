"""The end-to-end demo: everything on one machine, nothing to configure.

catalogue drawn -> imported (the triggers record the work) -> real worker processes embed it ->
the street photos are searched through the database -> top-k accuracy, latency and an HTML report.
Each step reuses what an earlier run built: the drawn catalogue, the imported rows, the embeddings.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from sqlalchemy import Engine
from tqdm import tqdm

from ynet_db.data import load_dataset
from ynet_db.data.records import ImageRef, Pair, RetrievalDataset
from ynet_db.data.synth import MANIFEST, SynthConfig, generate
from ynet_db.images.policy import FetchPolicy
from ynet_db.ingestion.catalog import ImportSummary, import_catalog
from ynet_db.models.registry import Coverage, coverage

if TYPE_CHECKING:
    from ynet_db.nn.model import RetrievalModel
    from ynet_db.search.query import SearchResult

# Products the shipped demo model never saw in training (it trains on seed 0).
DEMO_SEED = 2026
DEMO_CHECKPOINT = "ynet-lite0-demo.safetensors"
"""Trained on the generated benchmark (seed 0) by the command in README.md; ships in ynet_db/checkpoints."""
DEMO_MODELS: dict[str, str | None] = {
    "pairs": DEMO_CHECKPOINT,
    "catalogue": "ynet-lite0-catalogue.safetensors",
    "default": None,
}
"""What `ynet-db demo --model` serves: TagYNet and CtxYNet trained on street-to-shop pairs; TagYNet trained
from the catalogue alone (products, photos and tags of seed 0's training split, no street photo); or the
pretrained default path a shop gets with no training. Each checkpoint ships in ynet_db/checkpoints."""
RESULTS_DEPTH = 50
STALL_SECONDS = 180
SHOWN_QUERIES = 12


@dataclass(frozen=True)
class DemoConfig:
    products: int = 2000
    street_per_product: int = 1
    seed: int = DEMO_SEED
    queries: int | None = None
    """How many street photos to search (default: all)."""


@dataclass(frozen=True)
class QueryOutcome:
    pair: Pair
    result: SearchResult
    seconds: float

    @property
    def rank(self) -> float:
        """Position of the right product in the results (0 = first), inf when it is not among them."""
        ids = [row.external_id for row in self.result.rows]
        return float(ids.index(self.pair.item_id)) if self.pair.item_id in ids else float("inf")


def demo_dataset(data_dir: Path, config: DemoConfig, *, workers: int = 2) -> RetrievalDataset:
    """The generated benchmark the demo catalogue and queries come from, drawn on first use."""
    root = data_dir / "demo" / f"synth-seed{config.seed}-{config.products}x{config.street_per_product}"
    if not (root / MANIFEST).exists():
        synth = SynthConfig(
            seed=config.seed,
            train_products=0,
            test_products=config.products,
            street_per_product=config.street_per_product,
        )
        generate(root, synth, workers=workers)
    return load_dataset(root)


def write_catalogue(dataset: RetrievalDataset, path: Path) -> Path:
    """The dataset's products as a JSON Lines catalogue, the shop photo as each product's image."""
    with path.open("w") as handle:
        for product in dataset.products.values():
            record = {
                "id": product.item_id,
                "title": f"{product.category} {product.item_id}",
                "category": product.category,
                "tags": list(product.tags),
                "image": str(product.shop_images[0].path),
            }
            handle.write(json.dumps(record) + "\n")
    return path


def import_demo_catalogue(engine: Engine, dataset: RetrievalDataset, *, progress: bool = True) -> ImportSummary:
    path = write_catalogue(dataset, dataset.root / "catalogue.jsonl")
    with tqdm(total=len(dataset.products), unit="product", desc="importing", disable=not progress) as bar:
        return import_catalog(engine, path, progress=bar.update, policy=FetchPolicy(roots=(dataset.root,)))


def demo_checkpoint(name: str = DEMO_CHECKPOINT) -> Path:
    """A checkpoint shipped in ynet_db/checkpoints (the demo model unless named)."""
    from importlib import resources

    return Path(str(resources.files("ynet_db") / "checkpoints" / name))


def demo_model(which: str) -> Path | None:
    """The checkpoint `ynet-db demo --model WHICH` serves; None for the pretrained default."""
    name = DEMO_MODELS[which]
    return demo_checkpoint(name) if name else None


@contextmanager
def running_workers(log: Path, model_path: Path | None, image_root: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`ynet-db worker` as a child process (its own process group), warm-stopped on the way out; it may
    read the images under `image_root` besides those under YNET_IMAGE_ROOTS."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ) | ({"YNET_MODEL": str(model_path)} if model_path else {})
    env["YNET_IMAGE_ROOTS"] = os.pathsep.join(filter(None, [env.get("YNET_IMAGE_ROOTS"), str(image_root)]))
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "ynet_db", "worker", "--loglevel", "warning"],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    try:
        yield process
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)  # warm shutdown: the batch in hand is finished
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def model_coverage(engine: Engine, version: str) -> Coverage:
    with engine.connect() as conn:
        (covered,) = coverage(conn, version=version)
    return covered


class Running(Protocol):
    """What the wait reads of the worker's process (a `subprocess.Popen`)."""

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...


def wait_until_serving(engine: Engine, version: str, worker: Running, log: Path) -> int:
    """Show progress until every product is embedded or given up on (dead) and the model serves search
    (at once, or when the worker's dispatcher ends its back-fill); the number embedded."""
    covered = model_coverage(engine, version)
    last_change, last = time.monotonic(), covered.embedded
    with tqdm(total=covered.products, initial=covered.embedded, unit="product", desc="embedding") as bar:
        while not (covered.settled and covered.model.state == "active"):
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with status {worker.returncode}; see {log}")
            if time.monotonic() - last_change > STALL_SECONDS:
                raise RuntimeError(f"no embedding progress for {STALL_SECONDS} s; see {log} and `ynet-db status`")
            time.sleep(1)
            covered = model_coverage(engine, version)
            if covered.embedded != last:
                bar.update(covered.embedded - last)
                last_change, last = time.monotonic(), covered.embedded
    return covered.embedded


def run_queries(
    engine: Engine, model: RetrievalModel, dataset: RetrievalDataset, limit: int | None
) -> list[QueryOutcome]:
    """Each street photo through the full query path (encode, SQL prefilter, re-rank), timed one by one."""
    from ynet_db.images.dataset import read_image
    from ynet_db.search.query import search

    outcomes = []
    pairs = dataset.pairs[:limit] if limit else dataset.pairs
    for pair in tqdm(pairs, unit="query", desc="searching"):
        image = read_image(whole(pair.street))
        began = time.perf_counter()
        result = search(engine, image, k=RESULTS_DEPTH, model=model)
        outcomes.append(QueryOutcome(pair, result, time.perf_counter() - began))
    return outcomes


def whole(ref: ImageRef) -> ImageRef:
    """The whole photo, as a shopper sends it: the release's box is ground truth, not query input."""
    return ImageRef(ref.path)


def accuracy(outcomes: list[QueryOutcome], dataset: RetrievalDataset) -> dict[str, object]:
    from ynet_db.models.evaluate import Ranking, report

    ranks = np.array([outcome.rank for outcome in outcomes])
    categories = [dataset.products[outcome.pair.item_id].category for outcome in outcomes]
    return report(Ranking(ranks, categories))


def latency_ms(outcomes: list[QueryOutcome]) -> dict[str, float]:
    seconds = np.array([outcome.seconds for outcome in outcomes]) * 1000
    return {
        "median": float(np.median(seconds)),
        "p99": float(np.percentile(seconds, 99)),
        "mean": float(seconds.mean()),
    }


def summary_text(outcomes: list[QueryOutcome], dataset: RetrievalDataset) -> tuple[str, dict[str, object]]:
    scores = accuracy(outcomes, dataset)
    latency = latency_ms(outcomes)
    top = scores["top_k"]
    assert isinstance(top, dict)
    text = (
        f"{len(outcomes)} street photos searched through the database against {len(dataset.products)} products\n"
        "top-k accuracy: " + ", ".join(f"top-{k} {value:.3f}" for k, value in top.items()) + "\n"
        f"latency per query (encode + SQL + re-rank): median {latency['median']:.0f} ms, p99 {latency['p99']:.0f} ms"
    )
    return text, {"accuracy": scores, "latency_ms": latency}


def write_report(
    engine: Engine, model: RetrievalModel, dataset: RetrievalDataset, outcomes: list[QueryOutcome], out: Path
) -> tuple[str, Path]:
    """results.json, the two plots and report.html in `out`; the printed summary and the page's path."""
    from ynet_db.images.dataset import read_image
    from ynet_db.models.evaluate import plot_topk
    from ynet_db.presentation.report import demo_page, demo_query_section, plot_latency

    text, numbers = summary_text(outcomes, dataset)
    policy = FetchPolicy(roots=(dataset.root,))
    out.mkdir(parents=True, exist_ok=True)
    plot_topk({"through the database": numbers["accuracy"]}, out / "topk.png", title="Demo: top-k accuracy")  # type: ignore[dict-item]
    plot_latency([outcome.seconds * 1000 for outcome in outcomes], out / "latency.png")
    sections = [
        demo_query_section(engine, model, read_image(whole(o.pair.street)), o.pair.item_id, o.result, policy)
        for o in outcomes[:SHOWN_QUERIES]
    ]
    (out / "results.json").write_text(json.dumps(numbers, indent=2))
    page = out / "report.html"
    page.write_text(demo_page(text, out / "topk.png", out / "latency.png", sections), encoding="utf-8")
    return text, page
