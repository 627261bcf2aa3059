"""`ynet-db jobs list` and `jobs retry` through the command line, against a real database."""

from __future__ import annotations

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from ynet_db.cli import main
from ynet_db.config import Settings
from ynet_db.db.tables import Model, Product


@pytest.fixture
def cli(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("YNET_DATABASE_URL", str(settings.database_url))
    monkeypatch.setenv("YNET_DATA_DIR", str(settings.data_dir))
    return CliRunner()


def run(cli: CliRunner, *args: str) -> Result:
    return cli.invoke(main, ["jobs", *args])


@pytest.fixture
def queue(engine: Engine) -> dict[str, int]:
    """Two models, three products each; p1's job for m@1 dead with a hostile error, p2's for m@2 dead; job ids."""
    with Session(engine) as session:
        session.add_all(
            [
                Model(name="m", version="m@1", embedding_dim=2, weights_sha256="0" * 64, state="active"),
                Model(name="n", version="n@1", embedding_dim=2, weights_sha256="0" * 64, state="backfilling"),
            ]
        )
        session.commit()
        session.add_all(Product(external_id=f"p{i}", category="dress", image_uri=f"/img/{i}.jpg") for i in range(3))
        session.add(Product(source="public.items", external_id="p1", category="coat", image_uri="/shop/1.jpg"))
        session.commit()
    with engine.begin() as conn:
        ids = dict(
            conn.execute(
                text(
                    "SELECT m.version || '/' || p.source || '/' || p.external_id, j.id FROM ynet.embedding_jobs j "
                    "JOIN ynet.products p ON p.id = j.product_id JOIN ynet.models m ON m.id = j.model_id"
                )
            ).all()
        )
        dead = "UPDATE ynet.embedding_jobs SET state = 'dead', attempts = 5, last_error = :error WHERE id = :id"
        conn.execute(text(dead), {"id": ids["m@1/import/p1"], "error": "cannot decode\n\x1b[31m/img/1.jpg\x1b[0m"})
        conn.execute(text(dead), {"id": ids["n@1/public.items/p1"], "error": "HTTP 404 " + "x" * 300})
    return ids


def test_jobs_list_shows_the_dead_with_their_last_error_escaped(cli: CliRunner, queue: dict[str, int]) -> None:
    result = run(cli, "list", "--state", "dead")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["id", "state", "tries", "model", "product", "last", "error"]
    assert len(lines) == 3, "one line per job: a newline in an error does not start another"
    assert "\x1b" not in result.output
    by_id = {int(line.split()[0]): line for line in lines[1:]}
    first = by_id[queue["m@1/import/p1"]].split(maxsplit=5)
    assert first[1:] == ["dead", "5/5", "m@1", "p1", r"cannot decode\x0a\x1b[31m/img/1.jpg\x1b[0m"]
    second = by_id[queue["n@1/public.items/p1"]]
    assert " n@1 " in second and " p1 (public.items) " in second
    assert second.endswith("HTTP 404 " + "x" * 148 + "...")


def test_jobs_list_filters_by_model_and_limits(cli: CliRunner, queue: dict[str, int]) -> None:
    result = run(cli, "list", "--model", "n@1", "--state", "pending")
    assert result.exit_code == 0, result.output
    ids = {int(line.split()[0]) for line in result.output.splitlines()[1:]}
    assert ids == {queue[f"n@1/import/p{i}"] for i in range(3)}
    assert len(run(cli, "list", "--limit", "2").output.splitlines()) == 3
    full = run(cli, "list", "--model", "n", "--state", "dead", "--full").output
    assert full.splitlines()[1].endswith("HTTP 404 " + "x" * 300)
    assert run(cli, "list", "--model", "m", "--state", "done").output == "no jobs in state done for model m\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["list", "--state", "gone"], "Invalid value for '--state': 'gone' is not one of"),
        (["list", "--limit", "0"], "Invalid value for '--limit': 0 is not in the range 1<=x<=10000"),
        (["list", "--model", "nope"], "no model named or versioned 'nope'"),
        (
            ["retry", "--job", "99999999999"],
            "Invalid value for '--job': 99999999999 is not in the range 1<=x<=2147483647",
        ),
        (["retry", "--job", "0"], "Invalid value for '--job': 0 is not in the range 1<=x<=2147483647"),
    ],
)
def test_bad_arguments_get_a_clear_error(cli: CliRunner, queue: dict[str, int], args: list[str], message: str) -> None:
    result = run(cli, *args)
    assert result.exit_code in (1, 2) and message in result.output, result.output


def test_retry_re_drives_the_listed_dead_job(cli: CliRunner, queue: dict[str, int]) -> None:
    job = queue["m@1/import/p1"]
    result = run(cli, "retry", "--job", str(job), "--job", str(2**31 - 1))
    assert result.exit_code == 0, result.output
    assert "1 dead jobs queued again" in result.output
    assert "1 of the named jobs were not dead (or do not exist)" in result.output
    listed = run(cli, "list", "--state", "dead").output.splitlines()[1:]
    assert [int(line.split()[0]) for line in listed] == [queue["n@1/public.items/p1"]]
