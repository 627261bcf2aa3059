"""Test-only faults for the worker processes the fault suite starts; ynet-db never imports this.

`worker_processes.start_worker(hooks=True)` puts this folder on the workers' PYTHONPATH, so Python
loads it at interpreter start, before ynet-db, and the forked pool children inherit the patch.
By image file name:
- `kill-*`: the process dies on fetch (`os._exit`), as it would from a decoder crash or the OOM killer;
- `slow-*`: the fetch takes YNET_TEST_SLOW_S seconds (default 0.5), so a test can act mid-batch;
- `hang-*`: the fetch hangs (YNET_TEST_HANG_S, default 600 s) until the worker stops, then gives up as a
  fetcher that checks the stop event between reads does (a server that sends a byte every 2 s).
"""

from __future__ import annotations

import os
import time
from pathlib import PurePath
from typing import Any

import ynet_db.images as images

KILLED_EXIT_STATUS = 70
_real_fetch = images.fetch_image_bytes


def _faulty_fetch(location: str, **options: object) -> bytes:
    name = PurePath(location).name
    if name.startswith("kill-"):
        os._exit(KILLED_EXIT_STATUS)
    if name.startswith("slow-"):
        time.sleep(float(os.environ.get("YNET_TEST_SLOW_S", "0.5")))
    if name.startswith("hang-"):
        _worker_stopping().wait(float(os.environ.get("YNET_TEST_HANG_S", "600")))
        raise images.ImageError(location, "download cancelled: the worker is stopping")
    return _real_fetch(location, **options)  # type: ignore[arg-type]


def _worker_stopping() -> Any:
    """The stop event of the worker this fetch runs in (ynet_db.embed passes it to fetchers that take one)."""
    from celery import current_app

    return current_app._get_current_object().ynet_stopping


images.fetch_image_bytes = _faulty_fetch
