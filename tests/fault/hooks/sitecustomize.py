"""Test-only faults for the worker processes the fault suite starts; ynet-db never imports this.

`worker_processes.start_worker(hooks=True)` puts this folder on the workers' PYTHONPATH, so Python
loads it at interpreter start, before ynet-db, and the forked pool children inherit the patch.
By image file name:
- `kill-*`: the process dies on fetch (`os._exit`), as it would from a decoder crash or the OOM killer;
- `slow-*`: the fetch takes YNET_TEST_SLOW_S seconds (default 0.5), so a test can act mid-batch.
"""

from __future__ import annotations

import os
import time
from pathlib import PurePath

import ynet_db.fetch as fetch

KILLED_EXIT_STATUS = 70
_real_fetch = fetch.fetch_image_bytes


def _faulty_fetch(location: str, **options: object) -> bytes:
    name = PurePath(location).name
    if name.startswith("kill-"):
        os._exit(KILLED_EXIT_STATUS)
    if name.startswith("slow-"):
        time.sleep(float(os.environ.get("YNET_TEST_SLOW_S", "0.5")))
    return _real_fetch(location, **options)  # type: ignore[arg-type]


fetch.fetch_image_bytes = _faulty_fetch
