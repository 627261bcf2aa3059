"""The `ynet-db` command.

Sub-commands live one module per concern and are imported only when used, so `ynet-db db status`
does not pay for importing torch.
"""

from __future__ import annotations

import importlib
import logging

import click

from ynet_db.cli.context import App

# name -> (module:attribute, one-line help shown by `ynet-db --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "db": ("ynet_db.cli.db:db", "Start, stop and migrate the database."),
    "catalog": ("ynet_db.cli.catalog:catalog", "Import products from CSV or JSON Lines."),
    "dataset": ("ynet_db.cli.dataset:dataset", "Generate or inspect retrieval datasets."),
    "train": ("ynet_db.cli.train:train", "Train Y-Net, TagYNet and CtxYNet on a dataset."),
    "evaluate": ("ynet_db.cli.evaluate:evaluate", "Top-k retrieval accuracy of a model on a dataset."),
    "attention": ("ynet_db.cli.attention:attention", "Draw a model's attention map over an image."),
    "demo": ("ynet_db.cli.demo:demo", "The end-to-end demo on the embedded database."),
    "status": ("ynet_db.cli.status:status", "Products, embedding work and model coverage."),
    "worker": ("ynet_db.cli.worker:worker", "Embed catalogue images: a Celery worker and its dispatcher."),
    "model": ("ynet_db.cli.model:model", "Register and activate embedding models; coverage."),
    "jobs": ("ynet_db.cli.jobs:jobs", "List embedding jobs with their errors; re-drive dead ones."),
    "index": ("ynet_db.cli.index:index", "Rebuild a model's HNSW index without blocking searches or writes."),
    "attach": ("ynet_db.cli.attach:attach", "Keep the catalogue in step with an existing shop table."),
    "search": ("ynet_db.cli.search:search", "Find the products nearest to a photo (table or HTML)."),
    "serve": ("ynet_db.cli.serve:serve", "The HTTP API: search by photo or URL, health, status, metrics."),
    "search-worker": (
        "ynet_db.cli.search_worker:search_worker",
        "Answer searches asked in SQL (ynet.search_requests).",
    ),
    "dispatcher": (
        "ynet_db.cli.dispatcher:dispatcher",
        "Send embedding work to workers (workers run --no-dispatcher).",
    ),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        target, _ = COMMANDS[cmd_name]
        module_name, attribute = target.split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attribute)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_text) for name, (_, help_text) in sorted(COMMANDS.items())])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log what ynet-db is doing.")
@click.version_option(package_name="ynet-db")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """ynet-db: visual product search inside your PostgreSQL.

    With no settings everything runs on this machine (an embedded PostgreSQL 18 with pgvector in
    the data directory). Settings come from the environment: YNET_DATABASE_URL, YNET_BROKER_URL,
    YNET_DATA_DIR, YNET_DEVICE, YNET_RUNTIME, YNET_MODEL, YNET_IMAGE_ROOTS, YNET_ALLOWED_HOSTS
    (docs/design.md#settings).
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    app = App.from_env()
    ctx.obj = app
    ctx.call_on_close(app.close)
