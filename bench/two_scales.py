"""What the two-input-scale option costs: the default against the default seeing each image at 224 and 320.

    python bench/two_scales.py [--repeats 7] [--threads 2] [--out bench/results/two-scales.json]

`encode_street` at batch 1 (a shopper's query) and `encode_shop` at batch 8 (a worker's batch), on
eager PyTorch and on ONNX Runtime, and the re-rank of 256 candidates (PyTorch, at the shipped default's
beta), for `DEFAULT_CONFIG` and for it with `second_input_size=320`:
the median milliseconds over the repeats, measured interleaved (each repeat runs every model in turn
on the same pixels, with encoder.py's settle pause and thread arrangement), and the ratio of the
two-scale time to the one-scale time. The load average is recorded: on a shared machine, compare ratios.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import torch
import torch.nn.functional as F
from encoder import SETTLE_S, cpu_model, encoder_call, timed

from ynet_db.models.evaluate import write_json
from ynet_db.nn.model import DEFAULT_CONFIG, RetrievalModel
from ynet_db.nn.runtime import accelerate

CASES = (("street", 1), ("shop", 8), ("rerank", 256))
CONFIGS = {"one scale": DEFAULT_CONFIG, "two scales": DEFAULT_CONFIG.replace(second_input_size=320)}


def load(threads: int, cache: Path) -> dict[tuple[str, str], RetrievalModel]:
    models = {}
    for label, config in CONFIGS.items():
        models[(label, "torch")] = RetrievalModel.load_default(config=config)
        onnx = accelerate(RetrievalModel.load_default(config=config), "onnxruntime", cache, threads)
        if onnx.engine is None:
            raise click.ClickException(f"the {label} ONNX graphs failed their check (see the log)")
        models[(label, "onnxruntime")] = onnx
    return models


def rerank_call(model: RetrievalModel, candidates: int, generator: torch.Generator) -> Callable[[], object]:
    """The training-free re-rank of `candidates` stored vectors for one query map (PyTorch on either runtime)."""
    street_map = torch.rand(model.config.locations, model.embedding_dim, generator=generator)
    stored = F.normalize(torch.randn(candidates, model.embedding_dim, generator=generator), dim=-1)
    return lambda: model.free_rerank(street_map, stored, 50.0)


def measure(models: dict[tuple[str, str], RetrievalModel], repeats: int, threads: int) -> dict[str, float]:
    """Median ms per call, keyed `<encoder>_batch<B>_<runtime>_<one|two>_scale_ms`."""
    result: dict[str, float] = {}
    for encoder, batch in CASES:
        calls = {}
        for (label, runtime), model in models.items():
            generator = torch.Generator().manual_seed(1)
            if encoder == "rerank":
                calls[(label, runtime)] = rerank_call(model, batch, generator)
                continue
            pixels = torch.randn(batch, *model.config.scales.pixel_shape, generator=generator)
            calls[(label, runtime)] = encoder_call(model, encoder, pixels)
        seconds: dict[tuple[str, str], list[float]] = {key: [] for key in calls}
        for round_ in range(repeats + 1):  # round 0 warms up: allocations, ONNX Runtime's first-run planning
            for (label, runtime), call in calls.items():
                torch.set_num_threads(threads if runtime == "torch" else 1)  # as a worker of that runtime has it
                time.sleep(SETTLE_S)
                elapsed = timed(call)
                if round_:
                    seconds[(label, runtime)].append(elapsed)
        for (label, runtime), values in seconds.items():
            scale = label.split()[0]
            result[f"{encoder}_batch{batch}_{runtime}_{scale}_scale_ms"] = 1000 * statistics.median(values)
        for runtime in sorted({runtime for _, runtime in calls}):
            key = f"{encoder}_batch{batch}_{runtime}"
            result[f"{key}_ratio"] = result[f"{key}_two_scale_ms"] / result[f"{key}_one_scale_ms"]
            click.echo(
                f"{encoder} batch {batch} {runtime}: {result[f'{key}_one_scale_ms']:.0f} ms one scale, "
                f"{result[f'{key}_two_scale_ms']:.0f} ms two scales ({result[f'{key}_ratio']:.2f}x)"
            )
    return result


@click.command()
@click.option("--repeats", type=click.IntRange(min=1), default=7, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True, help="Intra-op threads, both.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench/results/two-scales.json"))
def main(repeats: int, threads: int, out: Path) -> None:
    results: dict[str, Any] = {"threads": threads, "repeats": repeats, "cpu": cpu_model(), "cores": os.cpu_count()}
    results["load_average_start"] = os.getloadavg()
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="ynet-bench-onnx-") as folder:
        models = load(threads, Path(folder))
        results["models"] = {label: models[(label, "torch")].version for label in CONFIGS}
        results["milliseconds"] = measure(models, repeats, threads)
    results["load_average_end"] = os.getloadavg()
    write_json(results, out)
    click.echo(f"written to {out}")


if __name__ == "__main__":
    main()
