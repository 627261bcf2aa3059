"""`ynet-db index rebuild`: a model's HNSW index built again beside the old one, then swapped in."""

from __future__ import annotations

import click

from ynet_db.cli.context import App, pass_app
from ynet_db.cli.terminal import safe
from ynet_db.models import registry
from ynet_db.search import index_links
from ynet_db.search.index_links import LinksError
from ynet_db.search.model_index import RebuildError, rebuild


@click.group()
def index() -> None:
    """The models' HNSW indexes."""


BY_SIZE = index_links.BY_SIZE
REBUILD_HELP = f"""Rebuild a model's HNSW index without blocking searches or writes.

The new index is built with CREATE INDEX CONCURRENTLY beside the old one, under the name <index>_rebuild.
Searches use the old index until the new one is built, and the new one from then on; once the transactions
older than the new index have ended, the old one is dropped (DROP INDEX CONCURRENTLY) and the new one takes
its name. Writes go to both while it is built. The build's phase is shown as it
goes (pg_stat_progress_create_index).

Links and element type left out are chosen from the model's embedded rows, as every index build chooses
them: {BY_SIZE.small} (pgvector's defaults) below {BY_SIZE.dense_from:,} rows, {BY_SIZE.large} from there
(the index stores half-precision copies; the table keeps the full vectors, and searches follow the element
type of the index that serves); `ynet-db status` warns when a catalogue has outgrown its index. One value
given alone must suit the other's choice (ef_construction >= 2 * m).

An index an interrupted rebuild left under the new name is dropped first, and a build that fails drops its
own; the command says what it did. One rebuild of a model runs at a time."""


@index.command("rebuild", help=REBUILD_HELP)
@click.option("--model", metavar="NAME_OR_VERSION", help="The model whose index to rebuild (default: the active one).")
@click.option(
    "--m",
    type=click.IntRange(index_links.M_MIN, index_links.M_MAX),
    help="Graph links per node (default: chosen by the catalogue's size).",
)
@click.option(
    "--ef-construction",
    type=click.IntRange(2 * index_links.M_MIN, index_links.EF_CONSTRUCTION_MAX),
    help="Search list while building, at least 2 * m (default: chosen by the catalogue's size).",
)
@click.option(
    "--element",
    type=click.Choice(index_links.ELEMENTS),
    help="What the index stores of each vector: vector (4 bytes an element) or halfvec (2) "
    "(default: chosen by the catalogue's size).",
)
@pass_app
def rebuild_(app: App, model: str | None, m: int | None, ef_construction: int | None, element: str | None) -> None:
    engine = app.migrated_engine
    try:
        with engine.connect() as conn:
            record = registry.find(conn, model) if model else registry.active(conn)
        rebuild(engine, record, m, ef_construction, element=element, say=lambda line: click.echo(safe(line)))
    except LinksError as error:
        raise click.BadParameter(str(error), param_hint="'--m' / '--ef-construction'") from error
    except (registry.RegistryError, RebuildError) as error:
        raise click.ClickException(safe(str(error))) from error
