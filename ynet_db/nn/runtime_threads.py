"""How many intra-op threads each worker process runs: the one place that decides it.

Processes x threads must not exceed the cores the worker may use, or the processes' thread pools
take turns on the same cores and each waits for the others' threads to be descheduled. Both runtimes
get the same number: `workers/process.py` sets PyTorch's, and ONNX Runtime's sessions take PyTorch's
(`nn/runtime.py`).
"""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def threads_per_process(processes: int, cores: int | None = None) -> int:
    """Intra-op threads for each of `processes` worker processes sharing `cores` (default: usable ones)."""
    if processes < 1:
        raise ValueError(f"processes {processes}: expected at least 1")
    return max(1, (cores or usable_cores()) // processes)
