"""HTML pages a person would rather look at than read: search results and the demo's report.

Images are embedded as data URIs, so a page is one file that can be mailed or opened anywhere.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from sqlalchemy import Engine

if TYPE_CHECKING:
    from ynet_db.images.policy import FetchPolicy
    from ynet_db.nn.model import RetrievalModel
    from ynet_db.search.query import SearchResult

THUMBNAIL = 160


def summary_line(result: SearchResult) -> str:
    # An 'ann' statement the planner answered from another index and a sort gave exact rows: say so.
    unindexed = (
        " (the planner did not use the HNSW index)" if result.path == "ann" and result.index_scanned is False else ""
    )
    return (
        f"model {result.model_version}, {result.path} prefilter{unindexed}, {result.candidates_returned}/"
        f"{result.candidates_asked} candidates{' (short)' if result.short else ''}, "
        f"{'re-ranked' if result.reranked else 'not re-ranked'}"
    )


def data_uri(image: Image.Image) -> str:
    thumbnail = image.convert("RGB")
    thumbnail.thumbnail((THUMBNAIL, THUMBNAIL))
    out = io.BytesIO()
    thumbnail.save(out, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def product_image(uri: str, policy: FetchPolicy) -> Image.Image | str:
    """The product's shop image fetched under `policy`, or why there is none to show: one bad image must not
    cost the page, and nothing the policy refuses is inlined."""
    from ynet_db.images.decode import ImageError, decode_image
    from ynet_db.images.fetch import fetch_image_bytes

    try:
        return decode_image(fetch_image_bytes(uri, policy=policy, timeout_s=5), source=uri)
    except ImageError as error:
        return error.reason


def image_tile(image: Image.Image | str, mark: str = "") -> str:
    """An image tile, or a placeholder that says why there is no image."""
    if isinstance(image, str):
        return f'<div class="missing">no image: {html.escape(image)}</div>'
    return f'<img{mark} src="{data_uri(image)}">'


def search_page(
    engine: Engine, model: RetrievalModel, picture: Image.Image, result: SearchResult, policy: FetchPolicy
) -> str:
    """The query, each result's thumbnail (fetched under `policy`), and where the query model looks given
    that result."""
    import torch

    from ynet_db.presentation.attention_map import overlay, query_attention

    vectors = active_vectors(engine, [row.product_id for row in result.rows])
    cells = []
    for row in result.rows:
        thumb = image_tile(product_image(row.image_uri, policy))
        weights = query_attention(model, picture, torch.from_numpy(vectors[row.product_id]))
        cells.append(
            f'<figure>{thumb}<img src="{data_uri(overlay(picture, weights))}" title="query attention">'
            f"<figcaption>#{row.rank} {html.escape(row.external_id)} · {html.escape(row.category)}<br>"
            f"distance {row.distance:.4f}"
            + ("" if row.rerank_score is None else f" · re-rank {row.rerank_score:.4f}")
            + f"<br>{html.escape(row.title)}</figcaption></figure>"
        )
    return PAGE.format(
        query=data_uri(picture),
        summary=html.escape(summary_line(result)),
        results="\n".join(cells),
    )


def active_vectors(engine: Engine, product_ids: list[int]) -> dict[int, np.ndarray]:
    """Stored vectors under the active model (none before there is one): the context of each CtxYNet
    attention map."""
    from sqlalchemy import text

    from ynet_db.db.vectors import stored_vectors
    from ynet_db.models.registry import NoActiveModel, active

    with engine.connect() as conn:
        try:
            model_id = active(conn).id
        except NoActiveModel:
            return {}
        rows = conn.execute(
            text(
                "SELECT product_id, vector_send(embedding) FROM ynet.embeddings "
                "WHERE model_id = :model_id AND product_id = ANY(:ids)"
            ),
            {"model_id": model_id, "ids": product_ids},
        ).all()
    arrays = stored_vectors([blob for _, blob in rows])
    return {product_id: arrays[i] for i, (product_id, _) in enumerate(rows)}


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>ynet-db search</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
figure {{ display: inline-block; margin: 0.5em; vertical-align: top; width: 330px; }}
figure img {{ width: 160px; height: 160px; object-fit: contain; background: #eee; }}
.missing {{ display: inline-block; width: 160px; height: 160px; background: #eee; overflow: hidden; }}
figcaption {{ font-size: 0.85em; }}
</style></head><body>
<h1>ynet-db search</h1>
<p><img src="{query}" alt="query"></p>
<p>{summary}</p>
<p>Each result: the product's shop image, and the query with CtxYNet's attention given that product.</p>
{results}
</body></html>
"""


def plot_latency(milliseconds: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.5))
    axes.hist(milliseconds, bins=40, color="#4a7ab5")
    axes.axvline(float(np.median(milliseconds)), color="black", linestyle="--", label="median")
    axes.set_xlabel("query latency (ms): encode, SQL prefilter, re-rank")
    axes.set_ylabel("queries")
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def png_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def demo_query_section(
    engine: Engine, model: RetrievalModel, query: Image.Image, truth: str, result: SearchResult, policy: FetchPolicy
) -> str:
    """One query: its photo, its first results (the right product framed), attention given the first."""
    import torch

    from ynet_db.presentation.attention_map import overlay, query_attention

    shown = result.rows[:5]
    vectors = active_vectors(engine, [row.product_id for row in shown[:1]])
    cells = [figure(data_uri(query), f"query (right product {html.escape(truth)})")]
    if shown and shown[0].product_id in vectors:
        weights = query_attention(model, query, torch.from_numpy(vectors[shown[0].product_id]))
        cells.append(figure(data_uri(overlay(query, weights)), "attention given #1"))
    for row in shown:
        thumb = image_tile(product_image(row.image_uri, policy), ' class="hit"' if row.external_id == truth else "")
        cells.append(f"<figure>{thumb}<figcaption>#{row.rank} {html.escape(row.external_id)}</figcaption></figure>")
    return '<div class="query">' + "".join(cells) + "</div>"


def figure(source: str, caption: str) -> str:
    return f'<figure><img src="{source}"><figcaption>{caption}</figcaption></figure>'


def demo_page(summary: str, topk_png: Path, latency_png: Path, sections: list[str]) -> str:
    return DEMO_PAGE.format(
        summary=html.escape(summary), topk=png_uri(topk_png), latency=png_uri(latency_png), queries="\n".join(sections)
    )


DEMO_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>ynet-db demo</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
pre {{ background: #f4f4f4; padding: 1em; }}
.query {{ border-bottom: 1px solid #ddd; padding: 0.5em 0; }}
figure {{ display: inline-block; margin: 0.3em; vertical-align: top; width: 130px; }}
figure img {{ width: 124px; height: 124px; object-fit: contain; background: #eee; border: 3px solid transparent; }}
figure img.hit {{ border-color: #2a2; }}
.missing {{ display: inline-block; width: 124px; height: 124px; background: #eee; }}
figcaption {{ font-size: 0.75em; }}
</style></head><body>
<h1>ynet-db demo</h1>
<pre>{summary}</pre>
<p><img src="{topk}" alt="top-k accuracy"> <img src="{latency}" alt="latency histogram"></p>
<h2>Queries</h2>
<p>Each row: the shopper's photo, where the query model looks given the first result, and the first
five results; the right product is framed in green.</p>
{queries}
</body></html>
"""
