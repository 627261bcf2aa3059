"""The encoders' speed: eager PyTorch against ONNX Runtime (the default), and an int8 ONNX variant.

    python bench/encoder.py [--repeats 7] [--threads 2] [--out bench/results/encoder.json]

For the default model's shop encoder (`encode_shop`, tag attention included) and street encoder
(`encode_street`, the maps the re-rank needs), at batch 1, 8 and 32: images/s of each runtime,
measured interleaved (every repeat runs each runtime once, in turn, on the same pixels) so that a
change of the machine's speed during the run hits all of them alike; the median over the repeats,
and the ratio to eager PyTorch. The int8 variant is ONNX Runtime's dynamic quantization of the same
graphs; its embeddings are compared with the fp32 ones (cosine) beside its speed. The machine's load
average is recorded at the start and the end: on a shared machine, compare ratios, not absolutes.

Then a worker's other per-image cost: decoding a JPEG shop photo (the generated benchmark's, drawn at
224 and at 800 pixels) and preprocessing it, against ONNX Runtime's shop encoder per image at batch 16;
and what Pillow's JPEG draft mode (decoding at a reduced DCT scale) would save, with the cosine of its
embeddings to the full decode's. Measured only: the worker's decode path is not changed.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ynet_db.data.garments import sample_garment
from ynet_db.data.scenes import shop_photo
from ynet_db.data.synth import SynthConfig, product_garment
from ynet_db.images.decode import decode_image
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


def jpeg_photos(count: int, size: int) -> list[bytes]:
    """The generated benchmark's shop photos (product beside a second garment) as JPEG bytes."""
    config, photos = SynthConfig(seed=7), []
    for index in range(count):
        rng = np.random.default_rng([7, index, 1])
        photo = shop_photo(product_garment(config, index), [sample_garment(rng)], size, rng)
        buffer = io.BytesIO()
        photo.image.save(buffer, "JPEG", quality=92)
        photos.append(buffer.getvalue())
    return photos


def draft_decode(data: bytes, size: int) -> Image.Image:
    """Pillow's JPEG draft mode: the decoder scales by 1/2, 1/4 or 1/8 while staying >= size on each side."""
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", (size, size))
    return image.convert("RGB")


def best_of_three(call: Callable[[], object]) -> float:
    return min(timed(call) for _ in range(3))


def decode_costs(model: RetrievalModel, photos: list[bytes]) -> dict[str, float]:
    """Seconds for all `photos`: decode + preprocess (full, draft), the shop encoder; draft's worst cosine."""
    size, tags = model.config.input_size, [["category:dress"]] * len(photos)
    full = torch.stack([model.preprocess(decode_image(p, source="bench")) for p in photos])
    draft = torch.stack([model.preprocess(draft_decode(p, size)) for p in photos])
    cosine = F.cosine_similarity(model.encode_shop(draft, tags).vectors, model.encode_shop(full, tags).vectors)
    return {
        "full": best_of_three(lambda: [model.preprocess(decode_image(p, source="bench")) for p in photos]),
        "draft": best_of_three(lambda: [model.preprocess(draft_decode(p, size)) for p in photos]),
        "encode": best_of_three(lambda: model.encode_shop(full, tags)),
        "cosine": float(cosine.min()),
    }


def decode_share(model: RetrievalModel, count: int = 16) -> dict[str, float]:
    """ms per image of decode + preprocess (full and draft) and of the shop encoder, at two photo sizes."""
    result: dict[str, float] = {}
    for side in (224, 800):
        cost = decode_costs(model, jpeg_photos(count, side))
        result[f"decode_preprocess_ms_{side}px"] = 1000 * cost["full"] / count
        result[f"decode_preprocess_draft_ms_{side}px"] = 1000 * cost["draft"] / count
        result[f"encode_shop_ms_{side}px"] = 1000 * cost["encode"] / count
        result[f"decode_share_{side}px"] = cost["full"] / (cost["full"] + cost["encode"])
        result[f"draft_cosine_min_{side}px"] = cost["cosine"]
        click.echo(
            f"{side}px JPEG: decode + preprocess {1000 * cost['full'] / count:.1f} ms/image "
            f"(draft {1000 * cost['draft'] / count:.1f}, cosine {cost['cosine']:.5f}), "
            f"shop encoder {1000 * cost['encode'] / count:.1f} ms/image ({model.runtime})"
        )
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
@click.option("--decode/--no-decode", default=True, show_default=True, help="Also measure decode + preprocess.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench/results/encoder.json"))
def main(repeats: int, threads: int, int8: bool, decode: bool, out: Path) -> None:
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
        if decode:
            results["decode"] = decode_share(onnx)
    results["load_average_end"] = os.getloadavg()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    click.echo(json.dumps({k: v for k, v in results.items() if k not in ("images_per_s", "decode")}, indent=2))
    click.echo(f"written to {out}")


if __name__ == "__main__":
    main()
