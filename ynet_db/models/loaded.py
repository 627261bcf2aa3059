"""The registered models a serving process holds in memory: one home for the HTTP service, the search-request
worker and the Celery worker processes, which each kept their own.

A model is loaded once and kept while it is one of the `keep` most recently used. Two are kept by default,
because a switch-over has two: the new model active on the primary while a lagging read replica still names
the old one. Holding one, every search that went to the other server loaded a model again (seconds each,
graphs checked), back and forth until the replica caught up.

Safe to share between threads: callers that need a model being loaded wait for that one load.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

M = TypeVar("M")

KEEP = 2
"""Models held at once: the one that serves and the one a switch-over or a back-fill brings beside it."""


class LoadedModels(Generic[M]):
    """Loaded models by registry id, the `keep` most recently used."""

    def __init__(self, keep: int = KEEP) -> None:
        if keep < 1:
            raise ValueError(f"keep {keep}: expected at least 1")
        self.keep = keep
        self._held: OrderedDict[int, M] = OrderedDict()
        self._lock = threading.Lock()
        self._loading = threading.Lock()
        """One load at a time, so no model is loaded twice at once; searches of a held model never wait for it."""

    def get(self, model_id: int, load: Callable[[], M]) -> M:
        """The model registered as `model_id`, loaded by `load` if it is not held."""
        held = self._recall(model_id)
        if held is not None:
            return held
        with self._loading:
            held = self._recall(model_id)  # loaded while this caller waited
            if held is not None:
                return held
            model = load()
            with self._lock:
                self._held[model_id] = model
                dropped = [self._held.popitem(last=False)[0] for _ in range(len(self._held) - self.keep)]
        if dropped:  # each caller logs the load itself, with what it loaded
            log.info(
                "process %s let go of model ids %s (it holds the %s most recently used)",
                os.getpid(),
                dropped,
                self.keep,
            )
        return model

    def _recall(self, model_id: int) -> M | None:
        with self._lock:
            if model_id not in self._held:
                return None
            self._held.move_to_end(model_id)
            return self._held[model_id]

    def held(self) -> list[int]:
        """The ids held, least recently used first."""
        with self._lock:
            return list(self._held)
