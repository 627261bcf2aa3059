"""Test-only faults for the worker processes the fault suite starts; ynet-db never imports this.

`worker_processes.start_worker(hooks=True)` puts this folder on the workers' PYTHONPATH, so Python
loads it at interpreter start, before ynet-db, and the forked pool children inherit the patch.
By image file name:
- `kill-*`: the process dies on fetch (`os._exit`), as it would from a decoder crash or the OOM killer;
- `slow-*`: the fetch takes YNET_TEST_SLOW_S seconds (default 0.5), so a test can act mid-batch;
- `gate-*`: the fetch waits until the file YNET_TEST_GATE exists, so a test holds a batch as long as it needs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path, PurePath

import ynet_db.images as images

KILLED_EXIT_STATUS = 70
_real_fetch = images.fetch_image_bytes


def _faulty_fetch(location: str, **options: object) -> bytes:
    name = PurePath(location).name
    if name.startswith("kill-"):
        os._exit(KILLED_EXIT_STATUS)
    if name.startswith("slow-"):
        time.sleep(float(os.environ.get("YNET_TEST_SLOW_S", "0.5")))
    if name.startswith("gate-"):
        gate = Path(os.environ["YNET_TEST_GATE"])
        while not gate.exists():
            time.sleep(0.05)
    return _real_fetch(location, **options)  # type: ignore[arg-type]


images.fetch_image_bytes = _faulty_fetch
