from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from ynet_db.cli.dataset import dataset

TINY = ["--seed", "3", "--train-products", "3", "--test-products", "2", "--street-per-product", "1", "--size", "32"]


def test_synth_then_info(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "bench"
    made = runner.invoke(dataset, ["synth", str(out), *TINY])
    assert made.exit_code == 0, made.output
    assert f"wrote 10 images of 5 products to {out}" in made.output
    shown = runner.invoke(dataset, ["info", str(out)])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[:2] == ["format: deepfashion-consumer2shop", "dataset: deepfashion-consumer2shop"]
    assert "  test         2 products        2 pairs        2 street images       2 shop images" in lines
    assert "  train        3 products        3 pairs        3 street images       3 shop images" in lines
    assert any(line.startswith("tag combinations: ") for line in lines)


def test_synth_refuses_a_directory_in_use(tmp_path: Path) -> None:
    (tmp_path / "old.jpg").write_bytes(b"x")
    result = CliRunner().invoke(dataset, ["synth", str(tmp_path), *TINY])
    assert result.exit_code == 2
    assert "is not empty; choose a new directory" in result.output


def test_info_on_a_directory_in_neither_format(tmp_path: Path) -> None:
    result = CliRunner().invoke(dataset, ["info", str(tmp_path)])
    assert result.exit_code == 1
    assert "is neither DeepFashion Consumer-to-Shop" in result.output


def test_help_describes_the_options() -> None:
    result = CliRunner().invoke(dataset, ["synth", "--help"])
    assert result.exit_code == 0
    for option in ("--seed", "--train-products", "--test-products", "--street-per-product", "--size", "--workers"):
        assert option in result.output
