"""Fetch an image's bytes under the fetch policy, within a wall-clock deadline, cancellably.

Local files: the real path must lie under an allowed root, and only a regular file is read (opened
with O_NONBLOCK, so a FIFO cannot block the reader; its type is checked on the open descriptor).

URLs: this module does what urllib would, but checks what urllib cannot. The host is resolved once,
every address of the answer is checked by the policy, and the connection goes to a checked address
(the Host header and TLS keep the name), so a DNS answer cannot change between check and connect.
Redirects are followed here, at most `policy.max_redirects`, and each target is checked again.

The deadline bounds the whole fetch (DNS, connect, headers and body). A socket timeout bounds one
read only, and a server that sends one byte a second never trips it, so a watchdog thread shuts the
socket down when the deadline passes, or when `cancelled()` turns true (a worker's warm shutdown):
whatever read is blocked then returns at once.
"""

from __future__ import annotations

import errno
import http.client
import ipaddress
import os
import socket
import ssl
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from urllib.parse import urljoin

from ynet_db.images.decode import DEFAULT_LIMITS, ImageError, ImageLimits
from ynet_db.images.policy import REFUSED_ADDRESS, REFUSED_FILE, FetchPolicy, FetchRefused
from ynet_db.images.uri import ImageUri, validate_image_uri

DEFAULT_TIMEOUT_S = 10.0
_READ_CHUNK = 64 * 1024
_REDIRECTS = (301, 302, 303, 307, 308)
_POLL_S = 0.05
"""How often the watchdog asks `cancelled()`."""
_USER_AGENT = "ynet-db image fetcher"

Cancelled = Callable[[], bool]


class FetchCancelled(ImageError):
    """The fetch was cut because its caller asked (`cancelled()` turned true): retry it later."""


def fetch_image_bytes(
    location: str,
    *,
    policy: FetchPolicy,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    limits: ImageLimits = DEFAULT_LIMITS,
    cancelled: Cancelled | None = None,
) -> bytes:
    """The bytes at a path, file:// URL or http(s):// URL, at most `limits.max_bytes`, or an `ImageError`.

    `cancelled` (e.g. `threading.Event().is_set`) is polled during the fetch; when it turns true the
    fetch stops with `FetchCancelled`."""
    uri = validate_image_uri(location)
    if uri.is_local:
        assert uri.path is not None
        return read_local_file(uri.path, location, policy, limits)
    with Watchdog(timeout_s, cancelled) as watchdog:
        try:
            return _fetch_http(uri, policy, watchdog, limits)
        except ImageError:
            if watchdog.fired is not None:
                raise watchdog.error(location) from None
            raise
        except (OSError, http.client.HTTPException, ValueError) as error:
            if watchdog.fired is not None or isinstance(error, TimeoutError):
                raise watchdog.error(location) from error
            raise ImageError(location, f"could not be fetched ({_describe(error)})") from error


# -- local files ------------------------------------------------------------------------------------


NOT_REGULAR = "is not a regular file"
NOT_REGULAR_HINT = "a FIFO, socket, device or folder is never read"


def read_local_file(path: Path, source: str, policy: FetchPolicy, limits: ImageLimits = DEFAULT_LIMITS) -> bytes:
    """A regular file under the policy's roots, at most `limits.max_bytes`."""
    real = policy.local_path(path, source)
    descriptor = _open(real, source)
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise ImageError(source, NOT_REGULAR, NOT_REGULAR_HINT)
        if status.st_size > limits.max_bytes:  # refused before a byte is read (the read below caps growth)
            raise ImageError(source, f"is larger than the limit of {limits.max_bytes} bytes")
        _check_opened(descriptor, source, policy)
        data = _read_capped(descriptor, limits.max_bytes + 1)
    finally:
        os.close(descriptor)
    if len(data) > limits.max_bytes:
        raise ImageError(source, f"is larger than the limit of {limits.max_bytes} bytes")
    return data


def read_own_file(path: Path, limits: ImageLimits = DEFAULT_LIMITS) -> bytes:
    """An operator's own file (a dataset image, a photo named on the command line): read wherever it lies,
    whatever YNET_IMAGE_ROOTS says, because the operator named it, not a catalogue row; still only a
    regular file (a FIFO never blocks the reader), at most `limits.max_bytes`."""
    source = str(path)
    try:
        real = Path(os.path.realpath(path))
    except (OSError, ValueError) as error:  # a symlink loop, a NUL byte in the name
        raise ImageError(source, f"cannot be read ({_describe(error)})") from error
    return read_local_file(real, source, FetchPolicy(roots=(real.parent,)), limits)


def _read_capped(descriptor: int, cap: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while total < cap and (chunk := os.read(descriptor, min(_READ_CHUNK, cap - total))):
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _open(real: Path, source: str) -> int:
    try:
        return os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError as error:
        raise ImageError(source, "does not exist", "check the path") from error
    except PermissionError as error:
        raise ImageError(source, "cannot be read (permission denied)") from error
    except OSError as error:
        if error.errno == errno.ENXIO:  # a socket (or a FIFO without a writer) refuses a non-blocking open
            raise ImageError(source, NOT_REGULAR, NOT_REGULAR_HINT) from error
        raise ImageError(source, f"cannot be read ({error.strerror})") from error


def _check_opened(descriptor: int, source: str, policy: FetchPolicy) -> None:
    """A symlink swapped in after the path was checked must not lead out of the roots: check what was opened."""
    link = f"/proc/self/fd/{descriptor}"
    if os.path.exists(link) and not policy.under_roots(Path(os.readlink(link))):
        raise FetchRefused(source, REFUSED_FILE)


# -- the deadline ------------------------------------------------------------------------------------


class Watchdog:
    """Shuts the fetch's socket down when the deadline passes or `cancelled()` turns true."""

    def __init__(self, timeout_s: float, cancelled: Cancelled | None) -> None:
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s
        self.cancelled = cancelled
        self.fired: str | None = None
        """'expired' or 'cancelled' once the watchdog has cut the fetch."""
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="ynet-fetch-watchdog", daemon=True)

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self._done.set()
        self._thread.join()

    def remaining(self) -> float:
        """Seconds left for the next operation; raises when none is left or the fetch was cancelled."""
        left = self.deadline - time.monotonic()
        if self.fired is None and self.cancelled is not None and self.cancelled():
            self.fired = "cancelled"
        if self.fired is not None or left <= 0:
            raise TimeoutError("the fetch deadline passed or the fetch was cancelled")
        return left

    def attach(self, sock: socket.socket) -> socket.socket:
        """Make `sock` the one to cut; a fetch that already ran out cuts it at once."""
        with self._lock:
            self._socket = sock
            if self.fired is not None:
                _shut(sock)
        return sock

    def error(self, source: str) -> ImageError:
        if self.fired == "cancelled":
            return FetchCancelled(source, "fetch cancelled", "the worker is stopping; it is retried later")
        return ImageError(source, f"timed out after {self.timeout_s:g} s", "the server is slow or unreachable")

    def _watch(self) -> None:
        while True:
            left = self.deadline - time.monotonic()
            wait = left if self.cancelled is None else min(left, _POLL_S)
            if self._done.wait(max(wait, 0)):
                return
            if self.cancelled is not None and self.cancelled():
                return self._fire("cancelled")
            if time.monotonic() >= self.deadline:
                return self._fire("expired")

    def _fire(self, reason: str) -> None:
        with self._lock:
            self.fired = reason
            if self._socket is not None:
                _shut(self._socket)


def _shut(sock: socket.socket) -> None:
    # The plain socket's shutdown, also for a TLS socket: it wakes a thread blocked in recv (close()
    # would not), and leaves the TLS object that thread is reading from in place.
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # not connected yet, or already closed


# -- HTTP ----------------------------------------------------------------------------------------------


def _fetch_http(uri: ImageUri, policy: FetchPolicy, watchdog: Watchdog, limits: ImageLimits) -> bytes:
    """Errors name the location asked for, also when a redirect target failed."""
    source = uri.location
    for _ in range(policy.max_redirects + 1):
        addresses = policy.check_addresses(uri.host, _resolve(policy, uri, source, watchdog), source)
        status, location, body = _get(uri, source, addresses, watchdog, limits)
        if status not in _REDIRECTS:
            return body
        uri = _redirect_target(source, uri, location)
    raise ImageError(source, f"was redirected more than {policy.max_redirects} times")


def _resolve(policy: FetchPolicy, uri: ImageUri, source: str, watchdog: Watchdog) -> list[str]:
    """The resolver's answer, on a thread so that a hanging DNS server cannot outlast the deadline."""
    if _is_address(uri.host):
        return [uri.host]
    answer: list[str] = []
    failure: list[BaseException] = []

    def lookup() -> None:
        try:
            answer.extend(policy.resolver(uri.host, uri.port))
        except BaseException as error:  # handed to the fetching thread below
            failure.append(error)

    thread = threading.Thread(target=lookup, name="ynet-fetch-dns", daemon=True)
    thread.start()
    thread.join(watchdog.remaining())
    if thread.is_alive():
        raise TimeoutError("DNS did not answer in time")
    if failure and uri.host in policy.allowed_names:
        raise ImageError(source, "could not be fetched (its host name did not resolve)") from failure[0]
    if failure:
        raise FetchRefused(source, REFUSED_ADDRESS) from failure[0]
    return answer


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _redirect_target(source: str, uri: ImageUri, location: str | None) -> ImageUri:
    if not location:
        raise ImageError(source, "answered a redirect without a Location")
    target = urljoin(uri.location, location)
    if not target.lower().startswith(("http://", "https://")):
        raise ImageError(source, f"redirect to a non-HTTP URL {target!r} refused")
    try:
        return validate_image_uri(target)
    except ImageError as error:
        raise ImageError(source, f"redirected to an invalid URL ({error.reason})") from None


def _get(
    uri: ImageUri, source: str, addresses: list[str], watchdog: Watchdog, limits: ImageLimits
) -> tuple[int, str | None, bytes]:
    """(status, Location, body) of one GET; the body only for a 200."""
    connection = _connect(uri, addresses, watchdog)
    try:
        connection.request("GET", uri.target, headers={"User-Agent": _USER_AGENT, "Connection": "close"})
        assert connection.sock is not None
        connection.sock.settimeout(watchdog.remaining())
        response = connection.getresponse()
        if response.status in _REDIRECTS:
            return response.status, response.getheader("Location"), b""
        if response.status != 200:
            raise ImageError(
                source, f"answered HTTP {response.status} {response.reason}", "check that the URL is public"
            )
        return response.status, None, _read_body(response, source, watchdog, limits)
    finally:
        connection.close()


def _connect(uri: ImageUri, addresses: list[str], watchdog: Watchdog) -> http.client.HTTPConnection:
    """A connection to the first of the checked addresses that answers."""
    last: OSError | None = None
    for address in addresses:
        kind = _PinnedHTTPS if uri.scheme == "https" else _PinnedHTTP
        connection = kind(uri.host, uri.port, address, watchdog)
        try:
            connection.connect()
            return connection
        except OSError as error:
            connection.close()
            last = error
    assert last is not None
    raise last


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to the address the policy checked, not to whatever the host name resolves to now."""

    def __init__(self, host: str, port: int, address: str, watchdog: Watchdog) -> None:
        super().__init__(host, port, timeout=watchdog.remaining())
        self.address = address
        self.watchdog = watchdog

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.watchdog.remaining())
        self.sock = self.watchdog.attach(sock)


class _PinnedHTTPS(_PinnedHTTP):
    """TLS to the checked address, with the URL's host name for SNI and certificate verification."""

    def connect(self) -> None:
        super().connect()
        assert self.sock is not None
        self.sock.settimeout(self.watchdog.remaining())
        context = ssl.create_default_context()
        self.sock = self.watchdog.attach(context.wrap_socket(self.sock, server_hostname=self.host))


def _read_body(response: http.client.HTTPResponse, source: str, watchdog: Watchdog, limits: ImageLimits) -> bytes:
    declared = response.getheader("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_bytes:
        raise ImageError(source, f"declares {declared} bytes, over the limit of {limits.max_bytes}")
    chunks: list[bytes] = []
    total = 0
    while chunk := response.read1(min(_READ_CHUNK, limits.max_bytes + 1 - total)):
        watchdog.remaining()  # stops between reads once cut; a read blocked past it is woken by the watchdog
        total += len(chunk)
        if total > limits.max_bytes:
            raise ImageError(source, f"is larger than the limit of {limits.max_bytes} bytes")
        chunks.append(chunk)
    watchdog.remaining()  # the watchdog's shutdown reads as an end of data: it must not pass for one
    if response.length:
        raise ImageError(source, "could not be fetched (the connection closed before the whole image arrived)")
    return b"".join(chunks)


def _describe(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__
