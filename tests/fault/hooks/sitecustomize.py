"""Test-only faults for the worker processes the fault suite starts; ynet-db never imports this.

`worker_processes.start_worker(hooks=True)` puts this folder on the workers' PYTHONPATH, so Python
loads it at interpreter start, before ynet-db, and the forked pool children inherit the patch.
By image file name:
- `kill-*`: the process dies on fetch (`os._exit`), as it would from a decoder crash or the OOM killer;
- `slow-*`: the fetch takes YNET_TEST_SLOW_S seconds (default 0.5), so a test can act mid-batch;
- `hang-*`: the fetch hangs (YNET_TEST_HANG_S, default 600 s) until the `cancelled` hook the worker
  passes turns true (its warm shutdown), then gives up as the real fetcher does between reads;
- `gate-*`: the fetch waits until the file YNET_TEST_GATE exists, so a test holds a batch as long as it needs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path, PurePath
from typing import Any

import ynet_db.images.fetch as fetch

KILLED_EXIT_STATUS = 70
_real_fetch = fetch.fetch_image_bytes


def _faulty_fetch(location: str, **options: object) -> bytes:
    name = PurePath(location).name
    if name.startswith("kill-"):
        os._exit(KILLED_EXIT_STATUS)
    if name.startswith("slow-"):
        time.sleep(float(os.environ.get("YNET_TEST_SLOW_S", "0.5")))
    if name.startswith("hang-"):
        _hang_until_cancelled(location, options.get("cancelled"))
    if name.startswith("gate-"):
        gate = Path(os.environ["YNET_TEST_GATE"])
        while not gate.exists():
            time.sleep(0.05)
    return _real_fetch(location, **options)  # type: ignore[arg-type]


def _hang_until_cancelled(location: str, cancelled: Any) -> None:
    deadline = time.monotonic() + float(os.environ.get("YNET_TEST_HANG_S", "600"))
    while time.monotonic() < deadline:
        if cancelled is not None and cancelled():
            raise fetch.FetchCancelled(location, "download cancelled: the worker is stopping")
        time.sleep(0.05)  # the real fetcher's watchdog polls the hook the same way


fetch.fetch_image_bytes = _faulty_fetch
