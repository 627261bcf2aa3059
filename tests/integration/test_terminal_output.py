"""What the CLI prints about catalogue data and checkpoints reaches an operator's terminal: no control
characters, and a refused checkpoint is one line, not a traceback."""

from __future__ import annotations

import pickle
from pathlib import Path

from click.testing import CliRunner, Result
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session

from ynet_db.cli import main
from ynet_db.config import Settings
from ynet_db.db.tables import EmbeddingJob, Model, Product, Worker

EVIL = "\x1b]0;owned\x07"


def _cli(settings: Settings, *args: str, **env: str) -> Result:
    env = {"YNET_DATABASE_URL": str(settings.database_url), "YNET_DATA_DIR": str(settings.data_dir), **env}
    return CliRunner().invoke(main, list(args), env=env)


def test_status_escapes_ids_model_names_and_errors(engine: Engine, settings: Settings) -> None:
    with Session(engine) as session:
        model = Model(name=f"m{EVIL}", version=f"m@{EVIL}", embedding_dim=2, weights_sha256="0" * 64, state="active")
        session.add(model)
        session.add(Product(external_id=f"p{EVIL}", category="dress", image_uri="/img/1.jpg"))
        session.commit()
        session.add(Worker(id=f"h/{EVIL}", hostname="h", pid=1, model_id=model.id))
        session.execute(update(EmbeddingJob).values(state="retry", attempts=1, last_error=f"cannot fetch\n{EVIL}"))
        session.commit()
    result = _cli(settings, "status")
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert "error: p\\x1b]0;owned\\x07 (retry, attempt 1): cannot fetch\\x0a\\x1b]0;owned\\x07" in result.output
    assert "model m\\x1b]0;owned\\x07 (m@\\x1b]0;owned\\x07, active)" in result.output
    assert "worker h/\\x1b]0;owned\\x07 (cpu, model m@\\x1b]0;owned\\x07)" in result.output


def test_a_refused_checkpoint_is_a_one_line_error(engine: Engine, settings: Settings, tmp_path: Path) -> None:
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(pickle.dumps({"w": 1}))
    for args, env in (
        (("model", "register", str(bad)), {}),
        (("model", "register"), {"YNET_MODEL": str(bad)}),
        (("evaluate", str(tmp_path), "--model", str(bad)), {}),
    ):
        result = _cli(settings, *args, **env)
        assert result.exit_code == 1, result.output
        assert isinstance(result.exception, SystemExit), result.exception  # no traceback
        assert result.output == (
            f"Error: refusing to load {bad}: it is a pickle (torch.save) file, which can run code when loaded; "
            "ynet-db loads only safetensors checkpoints\n"
        )


def test_search_with_a_refused_checkpoint_is_a_one_line_error(settings: Settings, tmp_path: Path) -> None:
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{oops}!!")
    query = tmp_path / "query.jpg"
    query.write_bytes(b"unused: the model is loaded first")
    result = _cli(settings, "search", str(query), "--no-rerank", YNET_MODEL=str(bad))
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.output.startswith(f"Error: checkpoint {bad}: not a readable safetensors file")
