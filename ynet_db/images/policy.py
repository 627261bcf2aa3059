"""The image fetch policy: which local files and which network addresses an image may come from.

Image locations come from catalogue rows, attached tables and search calls, so they are untrusted
(docs/design.md#7-inputs-are-untrusted): without a policy a row could make a worker read `/etc/shadow` or a cloud
metadata address, and differing error texts would turn `ynet-db status` into a port and file scanner.
So, from `Settings`:
- a local file is read only when its real path (symlinks resolved) lies under one of `roots`
  (YNET_IMAGE_ROOTS); with no root, no local file is read;
- a URL is fetched only from public addresses, unless its host name, or the address it resolves to,
  is listed in YNET_ALLOWED_HOSTS (names, addresses or CIDR ranges). The fetcher checks every address
  after DNS resolution and every redirect target, and connects to the address it checked.
Each refusal class has one error text, the same whether the file or host exists or not.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ynet_db.config import Settings
from ynet_db.images.decode import ImageError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[str]]
"""(host, port) -> the addresses to connect to, as text; tests inject their own."""

REFUSED_FILE = "refused by the fetch policy: local files are only read under YNET_IMAGE_ROOTS"
REFUSED_ADDRESS = (
    "refused by the fetch policy: the host does not resolve to public addresses only "
    "(internal hosts must be listed in YNET_ALLOWED_HOSTS)"
)
"""Also the text for a name that does not resolve at all: otherwise the two texts together would tell
which internal names exist."""

# Ranges that carry an IPv4 address inside an IPv6 one; the embedded address is what is reached.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class FetchRefused(ImageError):
    """The policy refuses this location; the text names the refusal class, never what exists."""


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_public(address: IPAddress) -> bool:
    """Globally routable unicast: not loopback, private, link-local, multicast, reserved or shared."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        return is_public(embedded)
    return address.is_global and not (
        address.is_multicast or address.is_reserved or address.is_loopback or address.is_link_local
    )


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


@dataclass(frozen=True)
class FetchPolicy:
    """Where images may come from. Build it with `from_settings`; `FetchPolicy()` reads no local file
    and fetches from public addresses only."""

    roots: tuple[Path, ...] = ()
    allowed_names: frozenset[str] = frozenset()
    allowed_networks: tuple[IPNetwork, ...] = ()
    resolver: Resolver = field(default=system_resolver, compare=False)
    max_redirects: int = 5

    def __post_init__(self) -> None:
        # Roots are compared by their real paths, as the files under them are.
        object.__setattr__(self, "roots", tuple(Path(os.path.realpath(root)) for root in self.roots))

    @classmethod
    def from_settings(cls, settings: Settings, *, resolver: Resolver = system_resolver) -> FetchPolicy:
        names, networks = split_allowed_hosts(settings.allowed_hosts)
        return cls(settings.image_roots, names, networks, resolver)

    @classmethod
    def from_env(cls) -> FetchPolicy:
        """The policy the environment's settings describe: what a call that is given none applies."""
        return cls.from_settings(Settings.from_env())

    def or_root(self, folder: Path) -> FetchPolicy:
        """This policy, or when it has no root, the same with `folder` as its only root."""
        return self if self.roots else replace(self, roots=(folder,))

    # -- local files ---------------------------------------------------------------------------

    def local_path(self, path: Path, source: str) -> Path:
        """The real path of `path` (relative to the working directory), or `FetchRefused`."""
        try:
            real = Path(os.path.realpath(path))
        except (OSError, ValueError) as error:  # a symlink loop, a name too long
            raise FetchRefused(source, REFUSED_FILE) from error
        if not self.under_roots(real):
            raise FetchRefused(source, REFUSED_FILE)
        return real

    def under_roots(self, real: Path) -> bool:
        return any(real.is_relative_to(root) for root in self.roots)

    # -- network addresses ---------------------------------------------------------------------

    def check_addresses(self, host: str, addresses: Iterable[str], source: str) -> list[str]:
        """All of `addresses` (a DNS answer for `host`), when the policy allows every one of them."""
        checked = list(addresses)
        if not checked or not all(self.address_allowed(host, address) for address in checked):
            raise FetchRefused(source, REFUSED_ADDRESS)
        return checked

    def address_allowed(self, host: str, address: str) -> bool:
        if host in self.allowed_names:
            return True
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
        except ValueError:
            return False
        return is_public(ip) or any(_within(ip, network) for network in self.allowed_networks)

    def literal_refused(self, host: str) -> bool:
        """Whether `host` is an IP address the policy refuses (known without resolving anything)."""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return False
        return not self.address_allowed(host, host)


def _within(ip: IPAddress, network: IPNetwork) -> bool:
    embedded = _embedded_ipv4(ip)
    return ip in network or (embedded is not None and embedded in network)


def split_allowed_hosts(entries: Iterable[str]) -> tuple[frozenset[str], tuple[IPNetwork, ...]]:
    """YNET_ALLOWED_HOSTS entries (validated by Settings) as host names and networks."""
    names: set[str] = set()
    networks: list[IPNetwork] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            names.add(entry.lower().rstrip("."))
    return frozenset(names), tuple(networks)
