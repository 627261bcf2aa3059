"""The image's entry point: the files the Dockerfile copies, installed as it installs them (`pip install .` into a
fresh virtual environment), give a `ynet-db` whose every command answers `--help`.

Slow (a few minutes: pip installs every dependency, torch included, from the local wheels and indexes this
machine's pip is configured with), so it runs with `pytest -m slow`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from ynet_db.cli import main

ROOT = Path(__file__).parents[2]
DOCKERFILE = ROOT / "Dockerfile"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def copied_paths() -> list[str]:
    """What the Dockerfile's COPY lines take from the build context (one stage, no --from)."""
    paths: list[str] = []
    for line in DOCKERFILE.read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"]:
            assert not any(word.startswith("--from") for word in words), "a multi-stage COPY needs another check"
            paths += words[1:-1]
    return paths


def command_paths(command: click.Command, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command and group of the CLI tree, as the words that name it."""
    yield prefix
    if isinstance(command, click.Group):
        context = click.Context(command)
        for name in command.list_commands(context):
            sub = command.get_command(context, name)
            assert sub is not None
            yield from command_paths(sub, (*prefix, name))


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `ynet-db` script of a fresh virtual environment with the Dockerfile's files installed."""
    context = tmp_path_factory.mktemp("build-context")
    for name in copied_paths():
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, context / name)
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", str(context)], capture_output=True, text=True, timeout=1800
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    return venv / "bin" / "ynet-db"


def test_the_dockerfile_copies_what_the_package_needs() -> None:
    assert {"pyproject.toml", "ynet_db", "migrations", "workers"} <= set(copied_paths())


def test_every_command_of_the_installed_entry_point_answers_help(installed: Path, tmp_path: Path) -> None:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("YNET_")}
    environment["YNET_DATA_DIR"] = str(tmp_path)  # `--help` must touch no data, but if it did, not the user's
    commands = list(command_paths(main))
    for words in commands:
        done = subprocess.run(
            [str(installed), *words, "--help"],
            capture_output=True,
            text=True,
            timeout=300,
            env=environment,
            cwd=tmp_path,
        )
        assert done.returncode == 0, f"ynet-db {' '.join(words)} --help:\n{done.stdout}{done.stderr}"
        assert done.stdout.startswith("Usage: ynet-db"), done.stdout
    assert list(tmp_path.iterdir()) == []
    # The long-running commands docker-compose.yml starts are among them.
    assert {("dispatcher",), ("worker",), ("search-worker",), ("serve",)} <= set(commands)
