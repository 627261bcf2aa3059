"""The same model on two runtimes, scored on the generated benchmark's test split: does the runtime change
what search finds? (a benchmark command)

    ynet-db dataset synth bench-data/synth-default                 # as for the ladder (README)
    python bench/runtime_accuracy.py bench-data/synth-default      # bench/results/runtime-accuracy.json

For the shipped default model and the pair-trained demo model (TagYNet + CtxYNet), eager PyTorch (fp32, the
reference) and ONNX Runtime (the workers' default runtime) each encode the test split as `ynet-db evaluate`
does: every street photo once as a query, every shop photo with its product's tags in the gallery. Reported
for the first stage and for the model's own re-rank, as search runs them: top-k of each runtime, the change
beside the reference's standard error, the queries one finds in the top k and the other does not, and the
cosine of the two runtimes' vectors. bench/encoder.py uses `compare` for its int8 variant.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
import torch.nn.functional as F

from ynet_db.nn.model import RetrievalModel
from ynet_db.nn.runtime import accelerate

TOP_K = ("1", "5", "10", "20", "50")


def compare(reference: RetrievalModel, candidate: RetrievalModel, names: tuple[str, str], dataset: Path) -> dict:
    """Both models on the dataset's test split: top-k of each (first stage and re-ranked), the change, the
    queries it moved, and the cosine of the candidate's vectors to the reference's."""
    from ynet_db.data import load_dataset
    from ynet_db.models.evaluate import encode_evaluation, evaluation_sets, model_reranker, score_evaluation

    sets = evaluation_sets(load_dataset(dataset).split("test"), False, None, False)
    models = dict(zip(names, (reference, candidate), strict=True))
    encoded = {name: encode_evaluation(model, *sets, progress=False) for name, model in models.items()}
    result: dict[str, Any] = {"dataset": str(dataset), "queries": len(encoded[names[0]].queries)}
    for stage in ("first_stage", "reranked"):
        scores = {
            name: score_evaluation(
                encoded[name], model_reranker(models[name], encoded[name]) if stage != "first_stage" else None
            )
            for name in names
        }
        result[stage] = changes(scores, names)
    for what, attribute in (("street_queries", "vectors"), ("shop_gallery", "gallery_vectors")):
        got, expected = (getattr(encoded[name], attribute) for name in (names[1], names[0]))
        cosine = F.cosine_similarity(got, expected, dim=-1)
        result[f"cosine_{what}"] = {"min": float(cosine.min()), "mean": float(cosine.mean())}
    for stage in ("first_stage", "reranked"):
        top20 = result[stage]["top20"]
        click.echo(
            f"{names[1]} against {names[0]}, {stage}, {result['queries']} queries: top-20 {top20[names[0]]:.4f} -> "
            f"{top20[names[1]]:.4f} (± {top20['reference_standard_error']:.4f}; {top20['queries_gained']} queries "
            f"gained, {top20['queries_lost']} lost)"
        )
    return result


def changes(scores: dict[str, dict[str, Any]], names: tuple[str, str]) -> dict[str, Any]:
    reference, candidate = names
    ranks = {
        name: np.array([np.inf if q["rank"] is None else q["rank"] for q in s["per_query"]])
        for name, s in scores.items()
    }
    result = {}
    for k in TOP_K:
        hits = {name: ranks[name] < int(k) for name in ranks}
        result[f"top{k}"] = {
            reference: scores[reference]["top_k"][k],
            candidate: scores[candidate]["top_k"][k],
            "change": scores[candidate]["top_k"][k] - scores[reference]["top_k"][k],
            "reference_standard_error": scores[reference]["standard_error"][k],
            "queries_gained": int((hits[candidate] & ~hits[reference]).sum()),
            "queries_lost": int((hits[reference] & ~hits[candidate]).sum()),
        }
    return result


@click.command()
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench/results/runtime-accuracy.json")
)
def main(dataset: Path, threads: int, out: Path) -> None:
    """Score the default and the demo model on DATASET's test split with eager PyTorch and with ONNX Runtime."""
    from ynet_db.presentation.demo import demo_checkpoint

    results: dict[str, Any] = {"load_average_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="ynet-bench-onnx-") as folder:
        for label, load in (
            ("default", RetrievalModel.load_default),
            ("demo", lambda: RetrievalModel.load(demo_checkpoint())),
        ):
            torch.set_num_threads(threads)
            eager = load()
            onnx = accelerate(load(), "onnxruntime", Path(folder), threads)
            if onnx.engine is None:
                raise click.ClickException(f"the {label} model's ONNX graphs failed their check (see the log)")
            results[label] = {"model": eager.version, **compare(eager, onnx, ("torch", "onnxruntime"), dataset)}
    results["load_average_end"] = os.getloadavg()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    click.echo(f"written to {out}")


if __name__ == "__main__":
    main()
