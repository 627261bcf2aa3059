"""Two benchmark runs compared query by query (a benchmark command).

    python bench/paired.py RUN.json CONTROL.json [--model "catalogue TagYNet"] [--control-model NAME]

Both files are `bench/catalogue.py` results (`results.<model>.ranks`: each query's rank of its
product, the queries in the same order in every run on the same split). Prints top-k of each and
the paired difference with its bootstrap standard error (the queries resampled together), which is
far smaller than the two rows' own errors combined when both runs find the same easy queries.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np


def ranks_of(path: Path, model: str) -> np.ndarray:
    results = json.loads(path.read_text())["results"]
    if model not in results or "ranks" not in results[model]:
        raise click.ClickException(f"{path}: no per-query ranks for {model!r}; it has {', '.join(results)}")
    return np.asarray(results[model]["ranks"])


@click.command()
@click.argument("run", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("control", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", default="catalogue TagYNet", show_default=True, help="The row of RUN to compare.")
@click.option("--control-model", help="The row of CONTROL to compare with (default: --model).")
def paired(run: Path, control: Path, model: str, control_model: str | None) -> None:
    """Print RUN's top-k minus CONTROL's on the same queries, with paired standard errors."""
    from ynet_db.models.evaluate import paired_difference, topk_accuracy

    ranks, control_ranks = ranks_of(run, model), ranks_of(control, control_model or model)
    try:
        difference = paired_difference(ranks, control_ranks)
    except ValueError as error:
        raise click.ClickException(f"{run} and {control} did not rank the same queries: {error}") from error
    ks = [int(k) for k in difference]
    mine, theirs = topk_accuracy(ranks, ks), topk_accuracy(control_ranks, ks)
    click.echo(f"{len(ranks)} queries: {run.parent.name} against {control.parent.name}")
    click.echo("| k | run | control | difference (paired SE) |\n|---|---|---|---|")
    for k in ks:
        gain = difference[str(k)]
        click.echo(
            f"| {k} | {mine[k]:.3f} | {theirs[k]:.3f} | {gain['difference']:+.3f} ({gain['standard_error']:.3f}) |"
        )


if __name__ == "__main__":
    paired()
