"""Is the hard street style harder? Each model on the classic and the hard street photos (a benchmark command).

    python bench/hard_street.py --run NAME CLASSIC_DIR HARD_DIR [--run ...] [--note TEXT ...] \\
        [--out bench/results/hard-street.json]

CLASSIC_DIR and HARD_DIR are what `ynet-db evaluate DATASET --out DIR` wrote for one model on two
benchmarks drawn with the same seed and products, `ynet-db dataset synth --street classic` and
`--street hard`. They share every product and shop photo (the gallery); only the street photos
differ, and each query photo's classic and hard versions show the same product from the same seed.
So beside each top-k and its bootstrap standard error (from results.json), the hard-minus-classic
difference is paired over those query photos, with its own bootstrap standard error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import numpy as np

KS = (1, 20)


@click.command()
@click.option(
    "--run",
    "runs",
    type=(str, click.Path(exists=True, file_okay=False, path_type=Path), click.Path(exists=True, path_type=Path)),
    multiple=True,
    required=True,
    help="NAME CLASSIC_DIR HARD_DIR: one model's `ynet-db evaluate --out` folders on the two styles.",
)
@click.option("--note", "notes", multiple=True, help="Recorded as is, e.g. the commands and the machine's load.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench/results/hard-street.json"))
def hard_street(runs: tuple[tuple[str, Path, Path], ...], notes: tuple[str, ...], out: Path) -> None:
    """Print and write top-1 / top-20 of each run on both styles, and the paired hard-minus-classic difference."""
    from ynet_db.models.evaluate import bootstrap_standard_error

    rows = {}
    for name, classic_dir, hard_dir in runs:
        classic, hard = (json.loads((folder / "results.json").read_text()) for folder in (classic_dir, hard_dir))
        before, after = paired_ranks(classic, hard)
        rows[name] = {
            "model": classic["model"],
            "reranked": [classic["reranked"], hard["reranked"]],
            "queries": len(before),
            "gallery": classic["gallery"],
            **{style: accuracy(result) for style, result in (("classic", classic), ("hard", hard))},
            "hard_minus_classic": {
                str(k): {
                    "difference": float(np.mean((after < k).astype(float) - (before < k))),
                    "standard_error": bootstrap_standard_error((after < k).astype(float) - (before < k)),
                }
                for k in KS
            },
        }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"runs": rows, "notes": list(notes)}, indent=2) + "\n")
    click.echo(table(rows))


def paired_ranks(classic: dict[str, Any], hard: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Each query photo's rank in both runs, matched by its place in the release layout (not its root)."""
    by_photo = [{photo_key(q["query"]): q["rank"] for q in result["per_query"]} for result in (classic, hard)]
    if by_photo[0].keys() != by_photo[1].keys():
        raise click.ClickException("the two runs do not share their query photos: draw both with one seed and size")
    photos = sorted(by_photo[0])
    before, after = (np.array([np.inf if ranks[p] is None else ranks[p] for p in photos]) for ranks in by_photo)
    return before, after


def photo_key(path: str) -> str:
    """img/GROUP/Category/id_NNNNNNNN/comsumer_NN.jpg without the folder the benchmark was drawn into."""
    return "/".join(Path(path).parts[-5:])


def accuracy(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    return {str(k): {"top": result["top_k"][str(k)], "standard_error": result["standard_error"][str(k)]} for k in KS}


def table(rows: dict[str, Any]) -> str:
    lines = [
        "| model | street style | top-1 | top-20 |",
        "|---|---|---|---|",
    ]
    for name, row in rows.items():
        for style in ("classic", "hard"):
            cells = [f"{row[style][str(k)]['top']:.3f} ± {row[style][str(k)]['standard_error']:.3f}" for k in KS]
            lines.append(f"| {name} | {style} | {' | '.join(cells)} |")
        change = row["hard_minus_classic"]
        cells = [f"{change[str(k)]['difference']:+.3f} ± {change[str(k)]['standard_error']:.3f}" for k in KS]
        lines.append(f"| {name} | hard minus classic (paired) | {' | '.join(cells)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    hard_street()
