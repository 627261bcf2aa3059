"""Parts of the HTTP service that need no server: the gates and the naming of fields in errors."""

from __future__ import annotations

import asyncio

import pytest

from ynet_db.service.errors import ApiError, field_of
from ynet_db.service.gate import Gate
from ynet_db.service.requests import checked, parse_json


def test_the_gate_answers_429_when_every_slot_stays_busy() -> None:
    async def scenario() -> tuple[ApiError, bool]:
        gate = Gate.for_searches(1, 0.05)
        async with gate.slot():
            with pytest.raises(ApiError) as caught:
                async with gate.slot():
                    pass
        async with gate.slot():  # the waiter that gave up took no slot with it
            free_again = True
        return caught.value, free_again

    error, free_again = asyncio.run(scenario())
    assert (error.status, error.field, error.headers) == (429, None, {"Retry-After": "1"})
    assert error.message == "all 1 search slots are busy; retry after 1 s"
    assert free_again


def test_a_free_slot_is_taken_even_without_waiting() -> None:
    async def scenario() -> int:
        gate = Gate.for_searches(2, 0.0)
        async with gate.slot(), gate.slot():
            return 2

    assert asyncio.run(scenario()) == 2


def test_a_waiting_search_gets_the_slot_that_frees_up() -> None:
    async def scenario() -> list[str]:
        gate, order = Gate.for_searches(1, 5.0), []

        async def hold() -> None:
            async with gate.slot():
                await asyncio.sleep(0.05)
                order.append("first")

        async def wait() -> None:
            async with gate.slot():
                order.append("second")

        await asyncio.gather(hold(), wait())
        return order

    assert asyncio.run(scenario()) == ["first", "second"]


@pytest.mark.parametrize(
    ("location", "field"),
    [
        (("query", "k"), "k"),
        (("body", "filters", "x"), "filters.x"),
        (("body",), None),
        (("path", "external_id"), "external_id"),
    ],
)
def test_field_of_a_validation_error(location: tuple[str, ...], field: str | None) -> None:
    assert field_of(location) == field


def test_the_search_bounds_name_their_fields() -> None:
    with pytest.raises(ApiError) as caught:
        checked(20, 10, None, None, image=b"x")
    assert (caught.value.field, caught.value.message) == ("candidates", "candidates: must be at least k (20), got 10")
    with pytest.raises(ApiError) as caught:
        checked(5, 256, None, {"tags": {"some": ["x"]}}, image=b"x")
    assert (caught.value.status, caught.value.field) == (422, "filters")
    assert caught.value.message == "filter 'tags' has no operator 'some'; allowed: all, any"


def test_json_that_cannot_be_stored_is_refused() -> None:
    with pytest.raises(ApiError) as caught:
        parse_json('{"tags": "\\udc80"}', "filters")
    assert (caught.value.status, caught.value.field) == (422, "filters")
    assert caught.value.message.startswith("filters is not valid JSON (")
    assert parse_json('{"a": [1, 2.5, "b"]}', "filters") == {"a": [1, 2.5, "b"]}


def test_the_fetch_gate_has_slots_of_its_own_and_says_so_when_full() -> None:
    async def scenario() -> ApiError:
        fetches = Gate.for_fetches(1, 0.0)
        async with fetches.slot(), fetches.slot(), fetches.slot(), fetches.slot(), Gate.for_searches(1, 0.0).slot():
            with pytest.raises(ApiError) as caught:
                async with fetches.slot():
                    pass
        return caught.value

    error = asyncio.run(scenario())
    assert (error.status, error.headers) == (429, {"Retry-After": "1"})
    assert error.message == "all 4 image fetch slots are busy; retry after 1 s"


def test_serving_via_workers_builds_the_search_client() -> None:
    """`ynet-db serve --via worker` builds its runner when it starts: an import of the wrong module there stopped
    the service at start (seen by `bench/http_load.py --via worker`, while its end-to-end test ran only in the
    slow suite)."""
    from ynet_db.config import Settings
    from ynet_db.search.client import CeleryRunner
    from ynet_db.service.runners import worker_runner

    runner = worker_runner(Settings(broker_url="redis://127.0.0.1:6379/15"), timeout_s=1.0)
    assert isinstance(runner, CeleryRunner)
