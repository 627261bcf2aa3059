"""Settings: the only place that reads the environment.

With nothing set, ynet-db runs on one machine: an embedded PostgreSQL 18 with pgvector in the data
directory holds the catalogue and also serves as Celery's broker and result store.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import platformdirs

DEVICES = ("auto", "cpu", "cuda")
RUNTIMES = ("auto", "onnxruntime", "torch")
MAX_SEARCH_WAIT_S = 60.0
POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")

# A DNS name as a URL carries it: ASCII labels (IDNA-encoded) of letters, digits and hyphens.
HOST_NAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?)*\.?$", re.IGNORECASE
)


class SettingsError(ValueError):
    """A setting has a value ynet-db cannot use; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    """External PostgreSQL (with pgvector); None means the embedded server in data_dir."""
    broker_url: str | None = None
    """Redis or RabbitMQ for Celery; None means the database itself carries the messages."""
    data_dir: Path = field(default_factory=lambda: platformdirs.user_data_path("ynet-db"))
    device: str = "auto"
    """Where the models run: auto (CUDA when there is one), cpu or cuda."""
    runtime: str = "auto"
    """What runs the encoders: auto (ONNX Runtime on a CPU where installed), onnxruntime or torch."""
    model_path: Path | None = None
    """A checkpoint to serve instead of the shipped default model."""
    test_database_url: str | None = None
    """For the test suite: a server to use instead of an embedded one."""
    search_database_urls: tuple[str, ...] = ()
    """Read replicas that searches read from, first healthy one first; none means the primary (see db/replicas.py)."""
    image_roots: tuple[Path, ...] = ()
    """Folders under which local image files may be read; none means no local file (see fetch_policy.py)."""
    allowed_hosts: tuple[str, ...] = ()
    """Host names, IP addresses or CIDR ranges that image URLs may reach although they are not public."""
    max_upload_bytes: int = 16 * 1024 * 1024
    """The HTTP service's largest query image, uploaded or fetched from a URL."""
    max_concurrent_searches: int = 4
    """Searches the HTTP service runs at once; more wait for a slot (see search_wait_s)."""
    search_wait_s: float = 2.0
    """How long a search waits for a slot before the HTTP service answers 429 with Retry-After."""

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise SettingsError(f"YNET_DEVICE={self.device!r}: expected one of {', '.join(DEVICES)}")
        if self.runtime not in RUNTIMES:
            raise SettingsError(f"YNET_RUNTIME={self.runtime!r}: expected one of {', '.join(RUNTIMES)}")
        for root in self.image_roots:
            if not root.is_absolute():
                raise SettingsError(f"YNET_IMAGE_ROOTS: {str(root)!r} is not an absolute path")
        for host in self.allowed_hosts:
            _check_allowed_host(host)
        for position, url in enumerate(self.search_database_urls, 1):
            _check_replica_url(position, url)
        for name, value in (
            ("YNET_MAX_UPLOAD_BYTES", self.max_upload_bytes),
            ("YNET_MAX_CONCURRENT_SEARCHES", self.max_concurrent_searches),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SettingsError(f"{name}={value!r}: expected a whole number of at least 1")
        if not (isinstance(self.search_wait_s, int | float) and 0 <= self.search_wait_s <= MAX_SEARCH_WAIT_S):
            raise SettingsError(
                f"YNET_SEARCH_WAIT_S={self.search_wait_s!r}: expected seconds from 0 to {MAX_SEARCH_WAIT_S:g}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            database_url=env.get("YNET_DATABASE_URL") or None,
            broker_url=env.get("YNET_BROKER_URL") or None,
            data_dir=Path(env["YNET_DATA_DIR"]).expanduser() if env.get("YNET_DATA_DIR") else defaults.data_dir,
            device=env.get("YNET_DEVICE", "auto").lower(),
            runtime=env.get("YNET_RUNTIME", "auto").strip().lower() or "auto",
            model_path=Path(env["YNET_MODEL"]).expanduser() if env.get("YNET_MODEL") else None,
            test_database_url=env.get("YNET_TEST_DATABASE_URL") or None,
            search_database_urls=_comma_separated(env.get("YNET_SEARCH_DATABASE_URLS", "")),
            image_roots=_image_roots(env.get("YNET_IMAGE_ROOTS", "")),
            allowed_hosts=tuple(h.strip().lower() for h in env.get("YNET_ALLOWED_HOSTS", "").split(",") if h.strip()),
            max_upload_bytes=_number(env, "YNET_MAX_UPLOAD_BYTES", int, defaults.max_upload_bytes),
            max_concurrent_searches=_number(env, "YNET_MAX_CONCURRENT_SEARCHES", int, defaults.max_concurrent_searches),
            search_wait_s=_number(env, "YNET_SEARCH_WAIT_S", float, defaults.search_wait_s),
        )

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"


Number = TypeVar("Number", int, float)


def _number(env: Mapping[str, str], name: str, kind: type[Number], default: Number) -> Number:
    """A numeric variable; its range is checked by `Settings.__post_init__`."""
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        number = kind(value)
    except ValueError:
        raise SettingsError(f"{name}={value!r}: expected a {'whole ' if kind is int else ''}number") from None
    if isinstance(number, float) and not math.isfinite(number):
        raise SettingsError(f"{name}={value!r}: expected a finite number")
    return number


def _comma_separated(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _image_roots(value: str) -> tuple[Path, ...]:
    return tuple(Path(part).expanduser() for part in value.split(os.pathsep) if part.strip())


def _check_allowed_host(host: str) -> None:
    """An entry of YNET_ALLOWED_HOSTS: an IP address, a CIDR range or a DNS name."""
    try:
        ipaddress.ip_network(host, strict=False)
        return
    except ValueError:
        pass
    if "/" in host or ":" in host or not HOST_NAME.match(host):
        raise SettingsError(
            f"YNET_ALLOWED_HOSTS: {host!r} is not a host name, an IP address or a CIDR range (e.g. 10.0.0.0/8)"
        )


def _check_replica_url(position: int, url: str) -> None:
    """An entry of YNET_SEARCH_DATABASE_URLS: a PostgreSQL URL (its password never in the message)."""
    where = f"YNET_SEARCH_DATABASE_URLS: entry {position} ({hide_password(url)!r})"
    try:
        parts = urlsplit(url)
        _ = parts.port  # parsing it is the check
    except ValueError as error:
        raise SettingsError(f"{where} is not a URL: {error}") from None
    if parts.scheme.lower() not in POSTGRES_SCHEMES:
        raise SettingsError(f"{where}: expected a URL starting {' or '.join(s + '://' for s in POSTGRES_SCHEMES)}")


def hide_password(url: str) -> str:
    """The URL with its password, if it has one, shown as ***."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unreadable URL>"
    if password is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user.split(':', 1)[0]}:***@{host}"))
