"""The health endpoint of loop processes (search worker, dispatcher): 200 while the loop goes round, 503 after."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from ynet_db.liveness import Liveness, serve_health


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def served(clock: Clock) -> Iterator[tuple[Liveness, str]]:
    liveness = Liveness(stale_after_s=30, clock=clock)
    server = serve_health(liveness, 0, host="127.0.0.1")
    yield liveness, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_healthy_while_the_loop_beats_and_stale_once_it_stops(clock: Clock) -> None:
    liveness = Liveness(stale_after_s=30, clock=clock)
    clock.now += 30
    assert liveness.healthy()
    clock.now += 1
    assert not liveness.healthy()
    liveness.beat()
    assert liveness.healthy() and liveness.age_s() == 0


def test_the_endpoint_answers_200_then_503(served: tuple[Liveness, str], clock: Clock) -> None:
    liveness, base = served
    clock.now += 5
    assert get(base + "/health") == (200, {"healthy": True, "last_round_s_ago": 5.0})
    clock.now += 60
    assert get(base + "/health") == (503, {"healthy": False, "last_round_s_ago": 65.0})


def test_any_other_path_is_not_found(served: tuple[Liveness, str]) -> None:
    _, base = served
    assert get(base + "/metrics") == (404, {"error": "not found", "field": "path"})
