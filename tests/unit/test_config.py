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


def test_http_service_bounds_from_environment() -> None:
    settings = Settings.from_env(
        {"YNET_MAX_UPLOAD_BYTES": "1048576", "YNET_MAX_CONCURRENT_SEARCHES": "8", "YNET_SEARCH_WAIT_S": "0.5"}
    )
    assert (settings.max_upload_bytes, settings.max_concurrent_searches, settings.search_wait_s) == (1048576, 8, 0.5)
    defaults = Settings.from_env({})
    assert (defaults.max_upload_bytes, defaults.max_concurrent_searches, defaults.search_wait_s) == (16 << 20, 4, 2.0)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("YNET_MAX_UPLOAD_BYTES", "16MB", "YNET_MAX_UPLOAD_BYTES='16MB': expected a whole number"),
        ("YNET_MAX_UPLOAD_BYTES", "0", "YNET_MAX_UPLOAD_BYTES=0: expected a whole number of at least 1"),
        ("YNET_MAX_CONCURRENT_SEARCHES", "1.5", "YNET_MAX_CONCURRENT_SEARCHES='1.5': expected a whole number"),
        (
            "YNET_MAX_CONCURRENT_SEARCHES",
            "-2",
            "YNET_MAX_CONCURRENT_SEARCHES=-2: expected a whole number of at least 1",
        ),
        ("YNET_SEARCH_WAIT_S", "soon", "YNET_SEARCH_WAIT_S='soon': expected a number"),
        ("YNET_SEARCH_WAIT_S", "inf", "YNET_SEARCH_WAIT_S='inf': expected a finite number"),
        ("YNET_SEARCH_WAIT_S", "61", "YNET_SEARCH_WAIT_S=61.0: expected seconds from 0 to 60"),
    ],
)
def test_http_service_bounds_are_refused_naming_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})
    assert str(caught.value) == message


def test_search_database_urls_from_environment() -> None:
    urls = " postgresql://reader:pw@replica-1:5432/shop ,, postgres://replica-2/shop "
    settings = Settings.from_env({"YNET_SEARCH_DATABASE_URLS": urls})
    assert settings.search_database_urls == ("postgresql://reader:pw@replica-1:5432/shop", "postgres://replica-2/shop")
    assert Settings.from_env({}).search_database_urls == ()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "postgresql://a/shop,mysql://reader:pw@b/shop",
            "YNET_SEARCH_DATABASE_URLS: entry 2 ('mysql://reader:***@b/shop'): expected a URL starting "
            "postgresql:// or postgres:// or postgresql+psycopg://",
        ),
        (
            "postgresql://reader:pw@a:99999/shop",
            "YNET_SEARCH_DATABASE_URLS: entry 1 ('postgresql://reader:***@a:99999/shop') is not a URL: "
            "Port out of range 0-65535",
        ),
        (
            # libpq's several hosts in one URL: the comma splits it, and the second half is refused.
            "postgresql://reader:pw@a:5432,b:5432/shop",
            "YNET_SEARCH_DATABASE_URLS: entry 2 ('b:5432/shop'): expected a URL starting "
            "postgresql:// or postgres:// or postgresql+psycopg://",
        ),
    ],
)
def test_bad_search_database_urls_are_refused_by_position_without_their_password(value: str, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"YNET_SEARCH_DATABASE_URLS": value})
    assert str(caught.value) == message
    assert "pw" not in str(caught.value)
