"""docker-compose.yml cannot be run here (no Docker engine); check what can be checked without one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from ynet_db.cli import main

COMPOSE = Path(__file__).parents[2] / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def _resolve(args: list[str]) -> click.Command:
    """The ynet-db sub-command that `args` names, or a failure naming what does not exist."""
    command: click.Command = main
    context = click.Context(main)
    for word in args:
        if not isinstance(command, click.Group) or word.startswith("-"):
            break
        sub = command.get_command(context, word)
        assert sub is not None, f"`ynet-db {' '.join(args)}`: no sub-command {word!r}"
        command = sub
    return command


def test_services_and_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["db"]["image"].startswith("pgvector/pgvector:")
    assert services["redis"]["image"].startswith("redis:")
    assert services["migrate"]["command"] == ["db", "upgrade"]


def test_every_ynet_command_exists(compose: dict[str, Any]) -> None:
    ynet_services = {name: s for name, s in compose["services"].items() if s.get("image") == "ynet-db:latest"}
    assert ynet_services, "the compose file runs ynet-db somewhere"
    for name, service in ynet_services.items():
        command = _resolve(service["command"])
        assert not isinstance(command, click.Group), f"service {name} names a group, not a command"


def test_ynet_services_point_at_the_compose_database_and_broker(compose: dict[str, Any]) -> None:
    environment = compose["x-ynet"]["environment"]
    assert environment["YNET_DATABASE_URL"].endswith("@db:5432/ynet")
    assert environment["YNET_BROKER_URL"].startswith("redis://redis:6379")


def test_the_worker_reserves_a_gpu(compose: dict[str, Any]) -> None:
    (device,) = compose["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
