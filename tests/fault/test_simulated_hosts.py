"""The simulated hosts themselves (netns.py): each reaches PostgreSQL from its own address over its own link,
a cut link cuts only that host off, and nothing is left behind, also when the test fails. No model: seconds."""

from __future__ import annotations

import subprocess
import sys

import pytest
from netns import Host, ReachablePostgres, postgres_reachable_from, simulated_hosts, why_namespaces_are_unusable

from ynet_db.db.server import libpq_dsn

# Run on the host: its hostname, then the address PostgreSQL sees it connect from.
WHO_CONNECTS = (
    "import socket, sys, psycopg\n"
    "with psycopg.connect(sys.argv[1], connect_timeout=5) as conn:\n"
    "    print(socket.gethostname(), conn.execute('SELECT host(inet_client_addr())').fetchone()[0])\n"
)


class TheTestFailed(Exception):
    pass


def connect_from(host: Host, postgres: ReachablePostgres) -> subprocess.CompletedProcess[str]:
    argv = [*host.prefix, sys.executable, "-c", WHO_CONNECTS, libpq_dsn(postgres.url_from(host))]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def leftovers(hosts: list[Host]) -> list[str]:
    """The namespaces and links of `hosts` that still exist."""
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout.split()
    links = [line.split(":")[1].strip().split("@")[0] for line in ip_links()]
    return [host.name for host in hosts if host.name in namespaces] + [
        host.link for host in hosts if host.link in links
    ]


def ip_links() -> list[str]:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout.splitlines()


def test_each_host_reaches_postgres_over_its_own_link_and_nothing_outlives_a_failed_test() -> None:
    problem = why_namespaces_are_unusable()
    if problem:
        pytest.skip(problem)
    with pytest.raises(TheTestFailed):
        with simulated_hosts(2) as network, postgres_reachable_from(network) as postgres:
            made = network.hosts
            first, second = made
            for host in network.hosts:
                assert connect_from(host, postgres).stdout.split() == [host.name, host.address]

            first.cut()
            refused = connect_from(first, postgres)
            assert refused.returncode != 0 and f'connection to server at "{first.gateway}"' in refused.stderr
            assert connect_from(second, postgres).stdout.split() == [second.name, second.address]
            first.restore()
            assert connect_from(first, postgres).stdout.split() == [first.name, first.address]
            raise TheTestFailed
    assert leftovers(made) == []
