"""Fetching over HTTP under the policy, against real servers on loopback: refusals, redirects, DNS
answers that change, the wall-clock deadline and cancellation."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator

import pytest
from loopback_servers import Loopback, ScriptedResolver, loopback, png_bytes

from ynet_db.config import Settings
from ynet_db.images.decode import ImageError
from ynet_db.images.fetch import FetchCancelled, fetch_image_bytes
from ynet_db.images.policy import REFUSED_ADDRESS, FetchPolicy, FetchRefused
from ynet_db.ingestion.embed import policy_fetch

LOOPBACK_ALLOWED = FetchPolicy.from_settings(Settings(allowed_hosts=("127.0.0.1",)))


@pytest.fixture
def server() -> Iterator[Loopback]:
    with loopback() as running:
        yield running


def refused(url: str, policy: FetchPolicy, **options: object) -> str:
    with pytest.raises(FetchRefused) as caught:
        fetch_image_bytes(url, policy=policy, **options)  # type: ignore[arg-type]
    assert caught.value.source == url
    return str(caught.value)


def test_loopback_is_refused_by_default_and_never_contacted(server: Loopback) -> None:
    for host in ("127.0.0.1", "[::ffff:127.0.0.1]", "localhost"):
        url = server.url("/secret", host)
        assert refused(url, FetchPolicy()) == f"image {url}: {REFUSED_ADDRESS}"
    assert server.hits["/secret"] == 0


def test_an_open_and_a_closed_port_give_the_same_error(server: Loopback) -> None:
    closed = Loopback()
    closed_port = closed.port
    closed.server_close()  # bound once, now nobody listens there
    texts = {
        refused(f"http://127.0.0.1:{port}/x.jpg", FetchPolicy()).split(": ", 1)[1]
        for port in (server.port, closed_port)
    }
    assert texts == {REFUSED_ADDRESS}


def test_an_allowed_loopback_host_is_fetched(server: Loopback) -> None:
    assert fetch_image_bytes(server.url("/ok.png"), policy=LOOPBACK_ALLOWED) == png_bytes()


def test_a_redirect_to_loopback_is_refused(server: Loopback) -> None:
    # The first hop is allowed by name (cdn.test resolves to the loopback server); its redirect is not.
    resolver = ScriptedResolver({"cdn.test": [["127.0.0.1"]]})
    policy = FetchPolicy.from_settings(Settings(allowed_hosts=("cdn.test",)), resolver=resolver)
    for target in (server.url("/secret"), server.url("/secret", "localhost"), server.url("/secret", "[::1]")):
        url = server.url(f"/redirect?to={target}", "cdn.test")
        assert refused(url, policy) == f"image {url}: {REFUSED_ADDRESS}"
    assert server.hits["/redirect"] == 3 and server.hits["/secret"] == 0
    followed = server.url(f"/redirect?to={server.url('/cdn/ok.png', 'cdn.test')}", "cdn.test")
    assert fetch_image_bytes(followed, policy=policy) == png_bytes()


def test_redirects_are_followed_at_most_five_times(server: Loopback) -> None:
    url = server.url("/ok.png")
    for _ in range(6):
        url = server.url(f"/redirect?to={url}")
    with pytest.raises(ImageError) as caught:
        fetch_image_bytes(url, policy=LOOPBACK_ALLOWED)
    assert str(caught.value) == f"image {url}: was redirected more than 5 times"


def test_the_connection_goes_to_the_address_that_was_checked(server: Loopback) -> None:
    # A rebinding name: public at the check, loopback on any later lookup. The fetcher looks up once
    # and connects to the public address it checked (unreachable here), never to the loopback server.
    resolver = ScriptedResolver({"rebind.test": [["93.184.216.34"], ["127.0.0.1"]]})
    policy = FetchPolicy(resolver=resolver)
    url = server.url("/secret", "rebind.test")
    with pytest.raises(ImageError) as caught:
        fetch_image_bytes(url, policy=policy, timeout_s=1)
    assert not isinstance(caught.value, FetchRefused)
    assert resolver.lookups["rebind.test"] == 1
    assert server.hits["/secret"] == 0


def test_a_name_that_resolves_to_loopback_is_refused(server: Loopback) -> None:
    resolver = ScriptedResolver({"inside.test": [["93.184.216.34", "127.0.0.1"]]})
    url = server.url("/secret", "inside.test")
    assert refused(url, FetchPolicy(resolver=resolver)) == f"image {url}: {REFUSED_ADDRESS}"
    assert server.hits["/secret"] == 0


def test_a_name_that_does_not_resolve_reads_like_an_internal_one() -> None:
    # Otherwise the texts would tell which internal names exist.
    url = "http://no-such-host.invalid/a.jpg"
    assert refused(url, FetchPolicy()) == f"image {url}: {REFUSED_ADDRESS}"
    with pytest.raises(ImageError) as caught:
        fetch_image_bytes(url, policy=FetchPolicy.from_settings(Settings(allowed_hosts=("no-such-host.invalid",))))
    assert str(caught.value) == f"image {url}: could not be fetched (its host name did not resolve)"


@pytest.mark.parametrize("path", ["/trickle", "/trickle-headers"])
def test_a_trickling_server_is_cut_at_the_deadline(server: Loopback, path: str) -> None:
    # One byte every 0.25 s: no read waits long enough to time out, so only a wall-clock deadline stops
    # the fetch (pytest's timeout bounds the test; a fetch that outlived its deadline would run for minutes).
    url = server.url(path)
    with pytest.raises(ImageError) as caught:
        fetch_image_bytes(url, policy=LOOPBACK_ALLOWED, timeout_s=1)
    assert str(caught.value) == f"image {url}: timed out after 1 s; the server is slow or unreachable"


@pytest.mark.parametrize("through", ["fetch_image_bytes", "embed.policy_fetch"])
def test_a_fetch_in_flight_stops_when_cancelled(server: Loopback, through: str) -> None:
    stop = threading.Event()
    failures: list[BaseException] = []
    run: Callable[[str], bytes]
    if through == "fetch_image_bytes":
        run = functools.partial(fetch_image_bytes, policy=LOOPBACK_ALLOWED, timeout_s=600, cancelled=stop.is_set)
    else:
        run = functools.partial(policy_fetch(LOOPBACK_ALLOWED), stop=stop)  # what a worker's warm shutdown uses

    def fetch() -> None:
        try:
            run(server.url("/held"))
        except BaseException as error:  # handed to the test thread
            failures.append(error)

    fetching = threading.Thread(target=fetch)
    fetching.start()
    assert server.first_byte_sent.wait(60)  # the fetch is reading the body now
    stop.set()
    fetching.join()
    assert len(failures) == 1 and isinstance(failures[0], FetchCancelled)
    assert (
        str(failures[0]) == f"image {server.url('/held')}: fetch cancelled; the worker is stopping; it is retried later"
    )
