"""docker-compose.yml cannot be run here (no Docker engine); check what can be checked without one.

Every ynet-db command a service runs must parse with the CLI as it is (sub-command, options and their values),
every YNET_* variable it sets must be one `Settings.from_env` reads, every variable it takes from `.env` must be
in `.env.example` (and no other), and every health check must name a real command of its image or an endpoint
the service's command serves on the port its command was given. (The image's entry point, installed as the
Dockerfile installs it: test_image_entry_point.py.)
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from ynet_db.cli import main
from ynet_db.config import Settings
from ynet_db.liveness import HEALTH_PATH

ROOT = Path(__file__).parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
IMAGE = "ynet-db:latest"

VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}")
PROBE_URL = re.compile(r"http://127\.0\.0\.1:(?P<port>\d+)(?P<path>/[^'\"\s]*)")

# What each port option of a ynet-db command serves: the liveness endpoint (ynet_db/liveness.py), the
# Prometheus endpoint of workers, and the HTTP service's health and metrics (the interface agreed in issue 14).
ENDPOINTS: dict[str, set[str]] = {
    "--health-port": {HEALTH_PATH},
    "--metrics-port": {"/metrics"},
    "--port": {"/health", "/metrics"},
}
# Commands the other images ship, by image name.
IMAGE_TOOLS = {"pgvector/pgvector": {"pg_isready", "psql"}, "redis": {"redis-cli"}}


@pytest.fixture(scope="module")
def text() -> str:
    return COMPOSE.read_text()


@pytest.fixture(scope="module")
def compose(text: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(text)
    return document


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    pairs = [line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#")]
    return {name.strip(): value.strip() for name, value in pairs}


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's `${NAME}`, `${NAME:-default}` and `${NAME:?message}`, as `docker compose` would fill them."""

    def fill(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if env.get(name):
            return env[name]
        if op == ":?":
            raise AssertionError(f"${{{name}}} is required: {arg}")
        return arg if op == ":-" else ""

    return VARIABLE.sub(fill, value)


def ynet_services(compose: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    services = [(name, s) for name, s in compose["services"].items() if s.get("image") == IMAGE]
    assert services, "the compose file runs ynet-db somewhere"
    yield from services


def parse(args: list[str]) -> click.Context:
    """The context `ynet-db ARGS` would run in: every word must be a sub-command, an option of its command, or
    a valid value of one (click checks types, choices and ranges here, without running the command)."""
    context = click.Context(main, info_name="ynet-db")
    command: click.Command = main
    words = list(args)
    while isinstance(command, click.Group):
        assert words, f"`ynet-db {' '.join(args)}` names a group, not a command"
        name = words.pop(0)
        sub = command.get_command(context, name)
        assert sub is not None, f"`ynet-db {' '.join(args)}`: no sub-command {name!r}"
        command = sub
        if isinstance(command, click.Group):
            context = click.Context(command, info_name=name, parent=context)
    try:
        return command.make_context(command.name or "", words, parent=context)
    except click.ClickException as error:
        raise AssertionError(f"`ynet-db {' '.join(args)}`: {error.format_message()}") from error


def option_value(args: list[str], option: str) -> str | None:
    return args[args.index(option) + 1] if option in args else None


# -- services, commands and options -------------------------------------------------------------------------


def test_services_and_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["db"]["image"].startswith("pgvector/pgvector:")
    assert services["redis"]["image"].startswith("redis:")
    assert services["migrate"]["command"] == ["db", "upgrade", "--skip-index-rebuild"]  # the others wait for it
    wanted = {"migrate", "dispatcher", "worker-cpu", "worker-gpu", "search-worker", "api"}
    assert wanted <= {name for name, _ in ynet_services(compose)}


def test_every_ynet_command_and_option_exists(compose: dict[str, Any]) -> None:
    for name, service in ynet_services(compose):
        context = parse(service["command"])
        assert context.command.name != "main", f"service {name} runs no command"


def test_the_option_check_catches_what_the_cli_lacks() -> None:
    """The check above can fail: an unknown option, a bad value and a missing command are each refused."""
    with pytest.raises(AssertionError, match="No such option '--metrics-prot'"):
        parse(["worker", "--metrics-prot", "1"])
    with pytest.raises(AssertionError, match="'gpu' is not one of"):
        parse(["worker", "--device", "gpu"])
    with pytest.raises(AssertionError, match="no sub-command 'serve-forever'"):
        parse(["serve-forever"])
    with pytest.raises(AssertionError, match="names a group, not a command"):
        parse(["db"])


def test_services_start_after_the_migrations_and_what_they_use(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in ynet_services(compose):
        needs = service.get("depends_on", {})
        assert set(needs) <= set(services), f"service {name} depends on a service that does not exist"
        expected = {"db": "service_healthy"} if name == "migrate" else {"migrate": "service_completed_successfully"}
        for needed, condition in expected.items():
            assert needs.get(needed, {}).get("condition") == condition, f"service {name} must wait for {needed}"


def test_the_gpu_worker_reserves_a_gpu_and_runs_on_it(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker-gpu"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert option_value(worker["command"], "--device") == "cuda"
    assert option_value(compose["services"]["worker-cpu"]["command"], "--device") == "cpu"


def test_one_dispatcher_for_the_deployment(compose: dict[str, Any]) -> None:
    """The dispatcher runs as its own service; the workers must not start one each beside themselves."""
    for name, service in ynet_services(compose):
        if service["command"][0] == "worker":
            assert "--no-dispatcher" in service["command"], f"service {name} would start a second dispatcher"


# -- variables --------------------------------------------------------------------------------------------------


class Recording(dict[str, str]):
    """An empty environment that remembers every variable read from it."""

    def __init__(self) -> None:
        super().__init__()
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return super().__getitem__(key)


def known_settings() -> set[str]:
    environment = Recording()
    Settings.from_env(environment)
    return environment.read


def test_every_ynet_variable_the_services_set_is_a_known_setting(
    compose: dict[str, Any], env_example: dict[str, str]
) -> None:
    known = known_settings()
    assert "YNET_DATABASE_URL" in known  # the recording sees what Settings reads
    for name, service in ynet_services(compose):
        environment = {key: interpolate(str(value), env_example) for key, value in service["environment"].items()}
        unknown = {key for key in environment if key.startswith("YNET_")} - known
        assert not unknown, f"service {name} sets variables Settings does not read: {sorted(unknown)}"
        Settings.from_env(environment)  # and their values are valid settings


def test_the_env_example_names_exactly_the_variables_compose_takes(text: str, env_example: dict[str, str]) -> None:
    taken = {match["name"] for match in VARIABLE.finditer(text)}
    assert taken == set(env_example)


def test_ynet_services_point_at_the_compose_database_and_broker(
    compose: dict[str, Any], env_example: dict[str, str]
) -> None:
    environment = compose["x-ynet"]["environment"]
    database = interpolate(environment["YNET_DATABASE_URL"], env_example)
    assert database == f"postgresql://ynet:{env_example['POSTGRES_PASSWORD']}@db:5432/ynet"
    assert compose["services"]["db"]["environment"]["POSTGRES_USER"] == "ynet"
    assert environment["YNET_BROKER_URL"].startswith("redis://redis:6379")


def test_a_missing_password_stops_compose_with_a_message(compose: dict[str, Any]) -> None:
    with pytest.raises(AssertionError, match="set POSTGRES_PASSWORD in .env"):
        interpolate(compose["x-ynet"]["environment"]["YNET_DATABASE_URL"], {})


# -- health checks ----------------------------------------------------------------------------------------------


def probe(test: list[str]) -> tuple[int, str] | None:
    """The port and path an HTTP health check asks for, or None for a check that runs a command."""
    match = PROBE_URL.search(" ".join(test))
    return (int(match["port"]), match["path"]) if match else None


def test_every_long_running_service_has_a_health_check(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        one_shot = service.get("restart") == "no"
        assert one_shot or "healthcheck" in service, f"service {name} runs for good but has no health check"


def test_every_ynet_health_check_asks_an_endpoint_its_command_serves(compose: dict[str, Any]) -> None:
    for name, service in ynet_services(compose):
        if "healthcheck" not in service:
            continue
        test = service["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"], f"service {name}: the image has Python, not curl"
        compile(test[3], f"{name} health check", "exec")  # the probe itself is valid Python
        asked = probe(test)
        assert asked is not None, f"service {name}: the health check asks no local endpoint"
        port, path = asked
        context = parse(service["command"])
        served = {
            option: int(value)
            for option in ENDPOINTS
            if (value := option_value(service["command"], option)) is not None
        }
        assert port in served.values(), f"service {name} probes port {port}, but its command serves {served}"
        (option,) = [option for option, value in served.items() if value == port]
        assert path in ENDPOINTS[option], f"service {name} probes {path}, which {option} does not serve"
        assert context.params[option.lstrip("-").replace("-", "_")] == port


def test_every_other_health_check_runs_a_command_its_image_ships(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if service.get("image") == IMAGE:
            continue
        test = service["healthcheck"]["test"]
        words = shlex.split(test[1]) if test[0] == "CMD-SHELL" else test[1:]
        image = service["image"].split(":")[0]
        assert words[0] in IMAGE_TOOLS[image], f"service {name}: {words[0]} is not a command of {image}"
