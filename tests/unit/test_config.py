"""Settings come from the environment and nowhere else."""

from __future__ import annotations

from pathlib import Path

import pytest

from ynet_db.config import Settings, SettingsError


def test_settings_from_environment(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"YNET_DATABASE_URL": "postgresql://db/shop", "YNET_DATA_DIR": str(tmp_path), "YNET_DEVICE": "CUDA"}
    )
    assert (settings.database_url, settings.data_dir, settings.device) == ("postgresql://db/shop", tmp_path, "cuda")
    assert Settings.from_env({}).database_url is None
    with pytest.raises(SettingsError, match="YNET_DEVICE='tpu': expected one of auto, cpu, cuda"):
        Settings.from_env({"YNET_DEVICE": "tpu"})
