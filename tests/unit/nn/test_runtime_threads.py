"""Worker processes times intra-op threads never exceeds the cores the worker may use."""

from __future__ import annotations

import os

import pytest

from ynet_db.cli.worker import choose_decode_threads, choose_pool
from ynet_db.nn.runtime_threads import threads_per_process, usable_cores


@pytest.mark.parametrize(("processes", "cores", "threads"), [(1, 2, 2), (2, 2, 1), (3, 2, 1), (2, 8, 4), (3, 8, 2)])
def test_threads_per_process_fill_the_cores_without_oversubscribing(processes: int, cores: int, threads: int) -> None:
    assert threads_per_process(processes, cores) == threads
    assert processes * threads <= max(cores, processes)  # one thread each at least, when processes > cores


def test_no_process_gets_no_thread() -> None:
    with pytest.raises(ValueError, match="processes 0: expected at least 1"):
        threads_per_process(0, 2)


def test_usable_cores_follow_the_processs_cpu_affinity() -> None:
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this platform")
    assert usable_cores() == len(os.sched_getaffinity(0))


def test_the_default_pool_takes_one_process_per_usable_core() -> None:
    pool, processes = choose_pool("prefork", "cpu", None)
    assert (pool, processes) == ("prefork", usable_cores())
    assert processes * threads_per_process(processes) <= usable_cores()
    assert choose_pool("solo", "cpu", None) == ("solo", 1)


def test_a_gpu_worker_decodes_ahead_on_every_core_and_a_cpu_worker_inline() -> None:
    assert choose_pool("auto", "cuda", None) == ("solo", 1)
    assert choose_decode_threads(None, "cuda") == usable_cores()
    assert choose_decode_threads(None, "cpu") == 0  # its cores run the encoder
    assert choose_decode_threads(2, "cpu") == 2 and choose_decode_threads(0, "cuda") == 0  # as told
