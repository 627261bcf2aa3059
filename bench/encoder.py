"""The encoders' speed: eager PyTorch against ONNX Runtime (the default), and an int8 ONNX variant.

    python bench/encoder.py [--repeats 7] [--threads 2] [--out bench/results/encoder.json]
    ynet-db dataset synth /tmp/synth --train-products 200 --test-products 500   # once, outside git
    python bench/encoder.py --int8 /tmp/synth                                     # + the int8 column

For the default model's shop encoder (`encode_shop`, tag attention included) and street encoder
(`encode_street`, the maps the re-rank needs), at batch 1, 8 and 32: images/s of each runtime,
measured interleaved (every repeat runs each runtime once, in turn, on the same pixels) so that a
change of the machine's speed during the run hits all of them alike; the median over the repeats,
and the ratio to eager PyTorch. A third column, `onnxruntime-pytorch-pool`, is ONNX Runtime with
PyTorch's thread pool left at full size beside it (what the workers did before PyTorch was left one
thread under ONNX Runtime): the cost of two thread pools on the same cores. The machine's load
average is recorded at the start and the end: on a shared machine, compare ratios, not absolutes.

With `--int8 DATASET`, the same graphs statically quantized (per-channel int8 weights, uint8
activations calibrated on `--calibration` of the generated benchmark's train photos, QDQ) run as a
third runtime, and both runtimes are evaluated on its test split as `ynet-db evaluate` would: top-k
of each, the queries int8 gains and loses, and the cosine of its vectors to fp32's.

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
from importlib.metadata import version
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from runtime_accuracy import compare

from ynet_db.data.garments import sample_garment
from ynet_db.data.scenes import shop_photo
from ynet_db.data.synth import SynthConfig, product_garment
from ynet_db.images.decode import decode_image
from ynet_db.nn.model import RetrievalModel
from ynet_db.nn.onnx_engine import OnnxEngine, session
from ynet_db.nn.runtime import accelerate

BATCHES = (1, 8, 32)
ENCODERS = ("shop", "street")
SHARED_POOL = "onnxruntime-pytorch-pool"
SETTLE_S = 0.05
"""A pause before each timed call: the previous runtime's threads (PyTorch's OpenMP workers spin for a while
after each op) must not run into the next one's time, as they never would in a worker that runs one runtime."""
INT8_REDUCE_RANGE = True
"""7-bit weights: without AVX-512 VNNI, ONNX Runtime's uint8 x int8 kernels can saturate their 16-bit partial
sums; on this machine's AVX2 cores full-range weights gave the default model's vectors a mean cosine of 0.90
to fp32 on the generated test split, reduced-range ones 0.96."""


class Calibration:
    """ONNX Runtime's calibration reader: the graph's inputs for `pixels`, 16 images a batch (no tags)."""

    def __init__(self, kind: str, pixels: np.ndarray, channels: int) -> None:
        self.feeds = []
        for start in range(0, len(pixels), 16):
            batch = pixels[start : start + 16]
            feed = {"pixels": batch}
            if kind == "shop":
                feed["tag_query"] = np.zeros((len(batch), channels), np.float32)
            self.feeds.append(feed)
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.pending, None)

    def rewind(self) -> None:
        self.pending = iter(self.feeds)


def calibration_pixels(model: RetrievalModel, dataset: Path, count: int) -> np.ndarray:
    """`count` of the dataset's train-split photos, shop and street alike, preprocessed: never a test image."""
    from ynet_db.data import load_dataset
    from ynet_db.images.dataset import read_image

    train = load_dataset(dataset).split("train")
    refs = sorted({ref.path: ref for pair in train.pairs for ref in (pair.street, pair.shop)}.values(), key=str)
    if len(refs) < count:
        raise click.ClickException(f"{dataset}: {len(refs)} train images, fewer than the {count} to calibrate on")
    chosen = [refs[i] for i in np.random.default_rng(0).choice(len(refs), count, replace=False)]
    return np.stack([model.preprocess(read_image(ref)).numpy() for ref in chosen])


def int8_engine(fp32: OnnxEngine, cache: Path, threads: int, pixels: np.ndarray) -> OnnxEngine:
    """The same graphs statically quantized: int8 weights per output channel, uint8 activations whose ranges
    were calibrated on `pixels` (QDQ format, which ONNX Runtime runs as integer convolutions)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    sessions = {}
    for kind in ENCODERS:
        source = Path(getattr(fp32, kind)._model_path)
        prepared, target = cache / f"{source.stem}-prepared.onnx", cache / f"{source.stem}-int8.onnx"
        quant_pre_process(str(source), str(prepared))
        quantize_static(
            str(prepared),
            str(target),
            Calibration(kind, pixels, fp32.network.config.map_channels),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            reduce_range=INT8_REDUCE_RANGE,
        )
        sessions[kind] = session(target, threads)
    return OnnxEngine(fp32.network, sessions["shop"], sessions["street"], threads, name="onnxruntime-int8")


def uses_pytorch_pool(name: str, model: RetrievalModel) -> bool:
    return model.engine is None or name == SHARED_POOL


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


def measure(models: dict[str, RetrievalModel], repeats: int, threads: int) -> dict[str, Any]:
    """images/s medians per encoder, batch and runtime, interleaved runtime by runtime.

    Each runtime runs with PyTorch's threads as its process would have them: eager PyTorch on all
    `threads`; ONNX Runtime's sessions on `threads` and PyTorch, for the work around them, on one
    (`runtime_threads.leave_cores_to_onnxruntime`), except in the `onnxruntime-pytorch-pool` column,
    which keeps PyTorch's pool beside ONNX Runtime's, to show what that arrangement costs.
    """
    seconds: dict[tuple[str, int, str], list[float]] = {}
    for encoder in ENCODERS:
        for batch in BATCHES:
            pixels = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(batch))
            calls = {name: encoder_call(model, encoder, pixels) for name, model in models.items()}
            pools = {name: threads if uses_pytorch_pool(name, model) else 1 for name, model in models.items()}
            for name, call in calls.items():
                torch.set_num_threads(pools[name])
                call()  # warm-up: allocations, ONNX Runtime's first-run planning
            for _ in range(repeats):
                for name, call in calls.items():
                    torch.set_num_threads(pools[name])
                    time.sleep(SETTLE_S)
                    seconds.setdefault((encoder, batch, name), []).append(timed(call))
            line = ", ".join(f"{n} {batch / statistics.median(seconds[(encoder, batch, n)]):.1f}" for n in calls)
            click.echo(f"{encoder} batch {batch}: {line} images/s")
    return {
        f"{encoder}_batch{batch}_{name}_images_per_s": batch / statistics.median(values)
        for (encoder, batch, name), values in seconds.items()
    }


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


def cpu_model() -> str:
    """The processor's name (Linux): eager PyTorch's speed differs more between processors than ONNX Runtime's."""
    cpuinfo = Path("/proc/cpuinfo")
    names = [
        line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
    ]
    return names[0] if names else "unknown"


def best_of_three(call: Callable[[], object]) -> float:
    return min(timed(call) for _ in range(3))


def decode_costs(model: RetrievalModel, photos: list[bytes]) -> dict[str, float]:
    """Seconds for all `photos`: decode + preprocess (full, draft), the shop encoder; draft's worst cosine."""
    size, tags = max(model.config.scales.sizes), [["category:dress"]] * len(photos)
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
@click.option(
    "--int8",
    "int8_data",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Also measure int8 static quantization, calibrated on this generated benchmark's train photos "
    "(`ynet-db dataset synth`) and evaluated on its test split.",
)
@click.option(
    "--calibration", type=click.IntRange(min=16), default=300, show_default=True, help="int8 calibration photos."
)
@click.option("--decode/--no-decode", default=True, show_default=True, help="Also measure decode + preprocess.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench/results/encoder.json"))
def main(repeats: int, threads: int, int8_data: Path | None, calibration: int, decode: bool, out: Path) -> None:
    load_start = os.getloadavg()
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="ynet-bench-onnx-") as folder:
        cache = Path(folder)
        eager = RetrievalModel.load_default()
        onnx = accelerate(RetrievalModel.load_default(), "onnxruntime", cache, threads)
        if onnx.engine is None:
            raise click.ClickException("the ONNX graphs failed their check (see the log); nothing to compare")
        models = {"torch": with_engine(eager, None), "onnxruntime": onnx, SHARED_POOL: with_engine(eager, onnx.engine)}
        if int8_data is not None:
            pixels = calibration_pixels(eager, int8_data, calibration)
            models["onnxruntime-int8"] = with_engine(eager, int8_engine(onnx.engine, cache, threads, pixels))
        results: dict[str, Any] = {"model": eager.version, "threads": threads, "repeats": repeats}
        results["cores"] = os.cpu_count()
        results["cpu"] = cpu_model()
        results["versions"] = {"torch": torch.__version__, "onnxruntime": version("onnxruntime")}
        results["load_average_start"] = load_start
        speeds = measure(models, repeats, threads)
        results.update(ratios(speeds, "onnxruntime"))
        results.update(ratios(speeds, SHARED_POOL))
        if int8_data is not None:
            results.update(ratios(speeds, "onnxruntime-int8"))
            results["int8"] = compare(onnx, models["onnxruntime-int8"], ("fp32", "int8"), int8_data)
        results["images_per_s"] = speeds
        if decode:
            torch.set_num_threads(1)  # as in a worker whose encoders run on ONNX Runtime
            results["decode"] = decode_share(onnx)
    results["load_average_end"] = os.getloadavg()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    click.echo(json.dumps({k: v for k, v in results.items() if k not in ("images_per_s", "decode", "int8")}, indent=2))
    click.echo(f"written to {out}")


if __name__ == "__main__":
    main()
