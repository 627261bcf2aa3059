"""The models a serving process holds (`ynet_db/models/loaded.py`): each loaded once, the two most recently
used kept, one load at a time, and a held model served while another loads."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from ynet_db.models.loaded import LoadedModels


class Loader:
    """Loads "models" (strings), counting each load; a load can be held until `release` is set."""

    def __init__(self) -> None:
        self.loads: Counter[int] = Counter()
        self.release = threading.Event()
        self.release.set()
        self.started = threading.Event()

    def __call__(self, model_id: int) -> str:
        self.started.set()
        assert self.release.wait(10), "a held load was never released"
        self.loads[model_id] += 1
        return f"model {model_id}"


def test_a_switch_over_between_two_models_loads_each_once() -> None:
    """A lagging replica names the old model, the primary the new one: searches alternate between them."""
    models: LoadedModels[str] = LoadedModels()
    load = Loader()
    for _ in range(10):
        for model_id in (1, 2):
            assert models.get(model_id, lambda m=model_id: load(m)) == f"model {model_id}"
    assert load.loads == {1: 1, 2: 1}


def test_a_third_model_lets_go_of_the_least_recently_used() -> None:
    models: LoadedModels[str] = LoadedModels(keep=2)
    load = Loader()
    for model_id in (1, 2, 1, 3):
        models.get(model_id, lambda m=model_id: load(m))
    assert models.held() == [1, 3]
    models.get(2, lambda: load(2))
    assert load.loads == {1: 1, 2: 2, 3: 1}


def test_callers_of_a_model_being_loaded_wait_for_that_one_load() -> None:
    models: LoadedModels[str] = LoadedModels()
    load = Loader()
    load.release.clear()
    with ThreadPoolExecutor(8) as pool:
        answers = [pool.submit(models.get, 5, lambda: load(5)) for _ in range(8)]
        assert load.started.wait(10)
        load.release.set()
        assert {answer.result(timeout=10) for answer in answers} == {"model 5"}
    assert load.loads == {5: 1}


def test_a_held_model_is_served_while_another_loads() -> None:
    models: LoadedModels[str] = LoadedModels()
    load = Loader()
    models.get(1, lambda: load(1))
    load.release.clear()
    with ThreadPoolExecutor(1) as pool:
        loading = pool.submit(models.get, 2, lambda: load(2))
        assert load.started.wait(10)
        assert models.get(1, lambda: load(1)) == "model 1"  # did not wait for model 2's load
        assert not loading.done()
        load.release.set()
        assert loading.result(timeout=10) == "model 2"


def test_a_failed_load_holds_nothing_and_the_next_call_loads_again() -> None:
    models: LoadedModels[str] = LoadedModels()

    def broken() -> str:
        raise LookupError("model 7 is registered as v1, but v2 here")

    with pytest.raises(LookupError, match="registered as v1"):
        models.get(7, broken)
    assert models.held() == []
    assert models.get(7, lambda: "model 7") == "model 7"


def test_keep_must_be_at_least_one() -> None:
    with pytest.raises(ValueError, match="keep 0"):
        LoadedModels(keep=0)
