"""How many intra-op threads each process runs for inference: the one place that decides it.

Processes x threads must not exceed the cores the worker may use, or the processes' thread pools
take turns on the same cores and each waits for the others' threads to be descheduled. Within a
process the same holds for its two thread pools: when ONNX Runtime runs the encoders it takes the
process's threads, and PyTorch, left with the small work around them (pooling, normalising, the
re-rank), runs on the calling thread alone (`leave_cores_to_onnxruntime`). PyTorch's OpenMP workers
spin after each parallel op and took the cores from ONNX Runtime's next run: the street encoder at
batch 1 took 15 ms with PyTorch on 2 threads beside it and 10.7 ms with PyTorch on one, on the same
2 cores (`python bench/encoder.py` times both arrangements).
"""

from __future__ import annotations

import os

_inference_threads: int | None = None
"""The threads this process was given for inference, once `set_inference_threads` or the first ONNX Runtime
model recorded them (PyTorch's own setting no longer says it after `leave_cores_to_onnxruntime`)."""


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


def set_inference_threads(threads: int) -> None:
    """Give this process `threads` intra-op threads: PyTorch's now, ONNX Runtime's sessions when they are made."""
    import torch

    global _inference_threads
    if threads < 1:
        raise ValueError(f"threads {threads}: expected at least 1")
    _inference_threads = threads
    torch.set_num_threads(threads)


def inference_threads() -> int:
    """The intra-op threads this process runs inference on (PyTorch's setting until one was recorded)."""
    import torch

    return _inference_threads or torch.get_num_threads()


def leave_cores_to_onnxruntime(threads: int) -> None:
    """ONNX Runtime's sessions run on `threads`; PyTorch keeps one thread for the work around them."""
    import torch

    global _inference_threads
    _inference_threads = _inference_threads or threads
    torch.set_num_threads(1)
