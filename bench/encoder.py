"""The encoders' speed: eager PyTorch against ONNX Runtime (the default), and an int8 ONNX variant.

    python bench/encoder.py [--repeats 7] [--threads 2] [--out bench/results/encoder.json]

For the default model's shop encoder (`encode_shop`, tag attention included) and street encoder
(`encode_street`, the maps the re-rank needs), at batch 1, 8 and 32: images/s of each runtime,
measured interleaved (every repeat runs each runtime once, in turn, on the same pixels) so that a
change of the machine's speed during the run hits all of them alike; the median over the repeats,
and the ratio to eager PyTorch. The int8 variant is ONNX Runtime's dynamic quantization of the same
graphs; its embeddings are compared with the fp32 ones (cosine) beside its speed. The machine's load
average is recorded at the start and the end: on a shared machine, compare ratios, not absolutes.
"""

from __future__ import annotations

import json
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

from ynet_db.nn.model import RetrievalModel
from ynet_db.nn.onnx_engine import OnnxEngine, session
from ynet_db.nn.runtime import accelerate

BATCHES = (1, 8, 32)
ENCODERS = ("shop", "street")


def int8_engine(fp32: OnnxEngine, cache: Path, threads: int) -> OnnxEngine:
    """The same graphs with dynamically quantized int8 weights (activations quantized per run)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    sessions = {}
    for kind in ENCODERS:
        source = Path(getattr(fp32, kind)._model_path)
        target = cache / f"{source.stem}-int8.onnx"
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QUInt8)
        sessions[kind] = session(target, threads)
    return OnnxEngine(fp32.network, sessions["shop"], sessions["street"], threads, name="onnxruntime-int8")


def with_engine(base: RetrievalModel, engine: OnnxEngine | None) -> RetrievalModel:
    model = RetrievalModel(base.network, base.info, base.version, base.device)
    model.engine = engine
    return model


def encoder_call(model: RetrievalModel, encoder: str, pixels: torch.Tensor) -> Callable[[], object]:
    tags = [["category:dress", "color:red"]] * pixels.shape[0]
    if encoder == "shop":
        return lambda: model.encode_shop(pixels, tags).vectors
    return lambda: model.encode_street(pixels).maps


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def measure(models: dict[str, RetrievalModel], repeats: int) -> dict[str, Any]:
    """images/s medians per encoder, batch and runtime, interleaved runtime by runtime."""
    seconds: dict[tuple[str, int, str], list[float]] = {}
    for encoder in ENCODERS:
        for batch in BATCHES:
            pixels = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(batch))
            calls = {name: encoder_call(model, encoder, pixels) for name, model in models.items()}
            for call in calls.values():
                call()  # warm-up: allocations, ONNX Runtime's first-run planning
            for _ in range(repeats):
                for name, call in calls.items():
                    seconds.setdefault((encoder, batch, name), []).append(timed(call))
            line = ", ".join(f"{n} {batch / statistics.median(seconds[(encoder, batch, n)]):.1f}" for n in calls)
            click.echo(f"{encoder} batch {batch}: {line} images/s")
    return {
        f"{encoder}_batch{batch}_{name}_images_per_s": batch / statistics.median(values)
        for (encoder, batch, name), values in seconds.items()
    }


@torch.inference_mode()
def int8_agreement(fp32: RetrievalModel, int8: RetrievalModel) -> dict[str, float]:
    """Worst and mean cosine of int8 to fp32 embeddings on 16 random images (shop vectors, street vectors)."""
    pixels = torch.randn(16, 3, 224, 224, generator=torch.Generator().manual_seed(7))
    tags = [["category:dress"]] * 16
    pairs = {
        "shop": (int8.encode_shop(pixels, tags).vectors, fp32.encode_shop(pixels, tags).vectors),
        "street": (int8.encode_street(pixels).vectors, fp32.encode_street(pixels).vectors),
    }
    result = {}
    for name, (got, expected) in pairs.items():
        cosine = F.cosine_similarity(got, expected, dim=-1)
        result[f"int8_{name}_cosine_min"] = float(cosine.min())
        result[f"int8_{name}_cosine_mean"] = float(cosine.mean())
    return result


def ratios(speeds: dict[str, Any], runtime: str) -> dict[str, float]:
    """`<encoder>_batch<B>_ratio` (ONNX Runtime over eager PyTorch), suffixed with any other runtime's name."""
    suffix = "" if runtime == "onnxruntime" else f"_{runtime}"
    result = {}
    for encoder in ENCODERS:
        for batch in BATCHES:
            key = f"{encoder}_batch{batch}"
            eager = speeds[f"{key}_torch_images_per_s"]
            result[f"{key}_ratio{suffix}"] = speeds[f"{key}_{runtime}_images_per_s"] / eager
    return result


@click.command()
@click.option("--repeats", type=click.IntRange(min=1), default=7, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True, help="Intra-op threads, both.")
@click.option("--int8/--no-int8", default=True, show_default=True, help="Also measure the int8 variant.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench/results/encoder.json"))
def main(repeats: int, threads: int, int8: bool, out: Path) -> None:
    load_start = os.getloadavg()
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="ynet-bench-onnx-") as folder:
        cache = Path(folder)
        eager = RetrievalModel.load_default()
        onnx = accelerate(RetrievalModel.load_default(), "onnxruntime", cache, threads)
        if onnx.engine is None:
            raise click.ClickException("the ONNX graphs failed their check (see the log); nothing to compare")
        models = {"torch": with_engine(eager, None), "onnxruntime": onnx}
        if int8:
            models["onnxruntime-int8"] = with_engine(eager, int8_engine(onnx.engine, cache, threads))
        results: dict[str, Any] = {"model": eager.version, "threads": threads, "repeats": repeats}
        results["cores"] = os.cpu_count()
        results["load_average_start"] = load_start
        speeds = measure(models, repeats)
        results.update(ratios(speeds, "onnxruntime"))
        if int8:
            results.update(ratios(speeds, "onnxruntime-int8"))
            results.update(int8_agreement(onnx, models["onnxruntime-int8"]))
        results["images_per_s"] = speeds
    results["load_average_end"] = os.getloadavg()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    click.echo(json.dumps({k: v for k, v in results.items() if k != "images_per_s"}, indent=2))
    click.echo(f"written to {out}")


if __name__ == "__main__":
    main()
