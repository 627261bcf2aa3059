"""`ynet-db search IMAGE`: the catalogue's nearest products to a photo, as a table or an HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ynet_db.cli.checkpoints import load_configured_model
from ynet_db.cli.context import App, pass_app
from ynet_db.cli.terminal import safe

if TYPE_CHECKING:
    from ynet_db.nn.model import RetrievalModel
    from ynet_db.search.query import QueryRunner, SearchResult


@click.command("search")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--k", "k", type=click.IntRange(1, 200), default=10, show_default=True, help="Results to show.")
@click.option("--category", help="Only products of this category.")
@click.option("--tag", "tags_any", multiple=True, help="Only products with any of these tags (repeatable).")
@click.option("--tags-all", "tags_all", multiple=True, help="Only products with all of these tags (repeatable).")
@click.option("--candidates", type=click.IntRange(1, 1000), default=256, show_default=True, help="Prefilter size.")
@click.option("--rerank/--no-rerank", default=None, help="CtxYNet re-ranking (default: if measured to help).")
@click.option("--worker", "via_worker", is_flag=True, help="Run the model work in a worker (needs YNET_BROKER_URL).")
@click.option("--html", "html_out", type=click.Path(dir_okay=False, path_type=Path), help="Also write this page.")
@pass_app
def search(
    app: App,
    image: Path,
    k: int,
    category: str | None,
    tags_any: tuple[str, ...],
    tags_all: tuple[str, ...],
    candidates: int,
    rerank: bool | None,
    via_worker: bool,
    html_out: Path | None,
) -> None:
    """Find the catalogue products nearest to the photo IMAGE under the active model (read from the first
    read replica of YNET_SEARCH_DATABASE_URLS that answers, else the database)."""
    from ynet_db.db.replicas import SearchDatabases
    from ynet_db.images.decode import ImageError
    from ynet_db.images.policy import FetchPolicy
    from ynet_db.search.filters import FilterError
    from ynet_db.search.prefilter import SearchError
    from ynet_db.search.query import SearchQuery, search_many_queries
    from ynet_db.search.query_image import as_image

    filters: dict[str, object] = {}
    if category:
        filters["category"] = category
    if tags_any or tags_all:
        filters["tags"] = {
            **({"any": list(tags_any)} if tags_any else {}),
            **({"all": list(tags_all)} if tags_all else {}),
        }
    try:
        # Validated and its filter compiled once, here, before a model is loaded; the search uses this query.
        query = SearchQuery(_read_query(image), k, filters, max(candidates, k), rerank)
    except FilterError as error:
        raise click.ClickException(safe(error)) from error
    engine = app.migrated_engine
    model = None if via_worker else _load_model(app)
    via = _worker_runner(app) if via_worker else None
    searches = SearchDatabases.from_settings(app.settings, engine)
    try:
        result = search_many_queries(searches, [query], model=model, via=via)[0]
        picture = as_image(query.image) if html_out is not None else None
    except (FilterError, SearchError, ImageError) as error:
        raise click.ClickException(safe(error)) from error
    click.echo(table(result))
    if html_out is not None and picture is not None:
        model = model or _load_model(app)
        from ynet_db.presentation.report import search_page

        page = search_page(engine, model, picture, result, FetchPolicy.from_settings(app.settings))
        html_out.write_text(page, encoding="utf-8")
        click.echo(f"wrote {html_out}")


def _read_query(image: Path) -> bytes:
    """The operator's own photo: read wherever it lies, whatever YNET_IMAGE_ROOTS says, but only a regular file."""
    from ynet_db.images.decode import ImageError
    from ynet_db.images.fetch import read_own_file

    try:
        return read_own_file(image)
    except ImageError as error:
        raise click.ClickException(safe(error)) from error


def _load_model(app: App) -> RetrievalModel:
    # As the workers load it (YNET_MODEL, YNET_RUNTIME), so an in-process query vector is a worker's.
    return load_configured_model(app.settings)


def _worker_runner(app: App) -> QueryRunner:
    if not app.settings.broker_url:
        raise click.UsageError("--worker needs a broker: set YNET_BROKER_URL")
    from ynet_db.search.client import CeleryRunner
    from ynet_db.workers.app import make_app

    return CeleryRunner(make_app(app.settings))


def table(result: SearchResult) -> str:
    from ynet_db.presentation.report import summary_line

    lines = [
        safe(summary_line(result)),
        f"{'rank':>4}  {'external id':<20} {'category':<14} {'distance':>8} {'re-rank':>8}  title",
    ]
    for row in result.rows:
        score = "" if row.rerank_score is None else f"{row.rerank_score:8.4f}"
        lines.append(
            f"{row.rank:>4}  {safe(row.external_id)[:20]:<20} {safe(row.category)[:14]:<14} {row.distance:8.4f} "
            f"{score:>8}  {safe(row.title)}"
        )
    return "\n".join(lines)
