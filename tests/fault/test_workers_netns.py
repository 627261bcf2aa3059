"""Four workers on four simulated hosts (network namespaces, tests/fault/netns.py), each reaching PostgreSQL
and Redis only over its own link: the queue's guarantees hold across hosts, and when one host's link is
cut mid-batch, its batch comes back through the lease and another host embeds it, once.

Where namespaces cannot be made (not root, no iproute2), the tests are skipped with the reason; four
worker processes on one network show the same guarantees in test_workers.py
(`test_four_workers_split_200_jobs_and_none_is_done_twice`).

Throughput per worker is printed (`pytest -m slow tests/fault/test_workers_netns.py -rP` shows it), never
asserted: the four hosts share this machine's cores.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from brokers import RedisServer, free_port
from netns import Host, ReachablePostgres, postgres_reachable_from, simulated_hosts, why_namespaces_are_unusable
from sqlalchemy import Engine
from worker_processes import (
    WorkerProcess,
    attempts_by_sku,
    embeddings_per_product,
    insert_products,
    rows,
    scalar,
    serve_default_model,
    states,
    wait_for,
)

from ynet_db.config import Settings
from ynet_db.db import migrate
from ynet_db.db.engine import make_engine

# Four models load on shared cores: minutes, not seconds.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

HOSTS = 4
ONCE = "SELECT completions, attempts, count(*) FROM ynet.embedding_jobs GROUP BY 1, 2 ORDER BY 1, 2"
BY_HOST = "split_part(claimed_by, '/', 1)"
"""A job's worker id is `host/pid`: on a simulated host, the host's name."""


@dataclass(frozen=True)
class Cluster:
    hosts: list[Host]
    postgres: ReachablePostgres
    redis: RedisServer
    engine: Engine
    """The test's own connection, through the server's socket."""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    problem = why_namespaces_are_unusable()
    if problem:
        pytest.skip(f"{problem}; test_workers.py shows the same guarantees with four processes on one network")
    with simulated_hosts(HOSTS) as network, postgres_reachable_from(network) as postgres:
        broker = RedisServer(free_port(), tmp_path / "redis.log", also_on=tuple(h.gateway for h in network.hosts))
        broker.start()
        engine = make_engine(postgres.local)
        try:
            migrate.upgrade(engine)
            yield Cluster(network.hosts, postgres, broker, engine)
        finally:
            engine.dispose()
            broker.stop()


@pytest.fixture
def settings(cluster: Cluster, tmp_path: Path) -> Settings:
    """The workers' data directory (start_worker's); their databases are the cluster's, not the suite's."""
    return Settings(database_url=cluster.postgres.local.render_as_string(), data_dir=tmp_path / "data")


@pytest.fixture
def start_on_every_host(
    cluster: Cluster, start_worker: Callable[..., WorkerProcess]
) -> Callable[..., list[WorkerProcess]]:
    """start(*options, hooks=False): a `ynet-db worker` (with its dispatcher) on each host, given the database
    and the broker at its gateway, once every one of them beats and the default model is active."""

    def start(*options: str, hooks: bool = False) -> list[WorkerProcess]:
        workers = [
            start_worker(
                *options,
                broker=cluster.redis.url_at(host.gateway),
                database=cluster.postgres.url_from(host),
                prefix=host.prefix,
                hooks=hooks,
            )
            for host in cluster.hosts
        ]
        serve_default_model(cluster.engine, workers[0])
        beating = "SELECT count(*) FROM ynet.workers"
        wait_for(lambda: scalar(cluster.engine, beating) == HOSTS, 240, "a worker beating on every host", workers[0])
        return workers

    return start


def test_four_hosts_embed_a_catalogue_once_each_over_their_own_links(
    cluster: Cluster, start_on_every_host: Callable[..., list[WorkerProcess]], tmp_path: Path
) -> None:
    products, engine = 200, cluster.engine
    # A lease far above a batch on four processes sharing two cores: this test has no fault to recover from.
    workers = start_on_every_host("--lease", "60")
    insert_products(engine, tmp_path, products)
    wait_for(lambda: states(engine) == {"done": products}, 600, f"{products} jobs done", workers[0])

    assert embeddings_per_product(engine) == [1] * products
    assert set(attempts_by_sku(engine).values()) == {1}
    assert rows(engine, ONCE) == [(1, 1, products)], "every job claimed once and completed once"
    done_by = dict(rows(engine, f"SELECT {BY_HOST}, count(*) FROM ynet.embedding_jobs GROUP BY 1"))
    assert set(done_by) == {host.name for host in cluster.hosts}, done_by

    # Each host's worker process talks to PostgreSQL from its own address, so over its own link; nothing
    # else reaches the server over TCP.
    connections = rows(
        engine,
        "SELECT w.hostname, host(a.client_addr) FROM ynet.workers w "
        "JOIN pg_stat_activity a ON a.application_name = 'ynet-worker ' || w.pid GROUP BY 1, 2",
    )
    assert sorted(connections) == sorted((host.name, host.address) for host in cluster.hosts)
    tcp = rows(engine, "SELECT DISTINCT host(client_addr) FROM pg_stat_activity WHERE client_addr IS NOT NULL")
    assert sorted(str(address) for (address,) in tcp) == sorted(host.address for host in cluster.hosts)
    # And to Redis, the same way (the test's own client is the one on loopback).
    client = redis.Redis.from_url(cluster.redis.url)
    broker_clients = {str(c["addr"]).rsplit(":", 1)[0] for c in client.client_list()}
    client.close()
    assert broker_clients == {"127.0.0.1"} | {host.address for host in cluster.hosts}

    wait_for(lambda: scalar(engine, "SELECT sum(jobs_done) FROM ynet.workers") == products, 15, "the final counts")
    print_throughput(engine)


def test_a_host_whose_link_is_cut_mid_batch_loses_that_batch_to_the_others_once(
    cluster: Cluster,
    start_on_every_host: Callable[..., list[WorkerProcess]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    products, lease_s, engine = 40, 15, cluster.engine
    gate = tmp_path / "gate"
    monkeypatch.setenv("YNET_TEST_GATE", str(gate))  # each gate-* fetch waits for this file (tests/fault/hooks)
    workers = start_on_every_host("--lease", str(lease_s), hooks=True)
    insert_products(engine, tmp_path, products, prefix=lambda i: "gate-")
    victim = cluster.hosts[1]

    # The victim's first batch is claimed and waits at the gate: the cut lands before any of it is written.
    def batch_held_by_victim() -> set[str] | None:
        held = rows(
            engine,
            "SELECT p.external_id FROM ynet.embedding_jobs j JOIN ynet.products p ON p.id = j.product_id "
            f"WHERE j.state = 'running' AND {BY_HOST} = :host",
            host=victim.name,
        )
        return {str(sku) for (sku,) in held} if len(held) == 4 else None

    batch = wait_for(batch_held_by_victim, 120, f"a batch held on {victim.name}", workers[1])
    assert isinstance(batch, set)
    victim.cut()
    gate.touch()

    # Its lease runs out (no heartbeat crosses a cut link), a dispatcher on another host sweeps it, and
    # another host embeds the batch.
    wait_for(lambda: states(engine) == {"done": products}, 300, f"{products} jobs done", workers[0])
    # (A completion clears the sweep's "lease expired" note: the second attempt and its host tell the story.)
    outcome = rows(
        engine,
        f"SELECT p.external_id, j.attempts, {BY_HOST} FROM ynet.embedding_jobs j "
        "JOIN ynet.products p ON p.id = j.product_id",
    )
    for sku, attempts, host in outcome:
        assert attempts == (2 if sku in batch else 1) and host != victim.name, (sku, attempts, host)
    assert rows(engine, ONCE) == [(1, 1, products - 4), (1, 2, 4)]

    # The link comes back and every worker stops cleanly. The victim's write of its batch either failed
    # during the cut (a new connection to an unreachable gateway fails within seconds: its task died and
    # left the jobs to their leases) or waited on a pooled connection and arrives now, finding the jobs no
    # longer its own: either way it changed nothing.
    victim.restore()
    for worker in workers:
        worker.signal(signal.SIGTERM)
    for worker in workers:
        assert worker.process.wait(240) == 0, worker.output()[-4000:]
    assert rows(engine, ONCE) == [(1, 1, products - 4), (1, 2, 4)]
    assert embeddings_per_product(engine) == [1] * products
    finished = dict(rows(engine, "SELECT hostname, jobs_done FROM ynet.workers WHERE stopped_at IS NOT NULL"))
    assert set(finished) == {host.name for host in cluster.hosts}, "every host reached the database again to stop"
    assert finished[victim.name] == 0 and sum(finished.values()) == products


THROUGHPUT = f"""
    WITH done AS (SELECT {BY_HOST} AS host, finished_at FROM ynet.embedding_jobs WHERE state = 'done'),
    first AS (SELECT host, min(finished_at) AS t0 FROM done GROUP BY host)
    SELECT host, count(*), count(*) FILTER (WHERE finished_at > t0), extract(epoch FROM max(finished_at) - t0)
      FROM done JOIN first USING (host) GROUP BY host, t0 ORDER BY host
"""


def print_throughput(engine: Engine) -> None:
    """Products per second of each worker, from the completion rows: the jobs it finished after its first
    batch over the time from that batch's write to its last (a batch's jobs share one `finished_at`)."""
    load = " ".join(f"{n:.2f}" for n in os.getloadavg())
    print(f"\nthroughput per worker (load average {load}, {os.cpu_count()} cores)")
    total = 0.0
    for host, done, after_first, seconds in rows(engine, THROUGHPUT):
        rate = float(after_first) / float(seconds) if seconds else 0.0
        total += rate
        print(f"  {host}: {done} products, {rate:.2f} products/s")
    print(f"  all workers: {total:.2f} products/s")
