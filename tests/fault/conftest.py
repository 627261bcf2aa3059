"""Fixtures for the fault suite: real worker processes, a private Redis and a private PostgreSQL, all stopped
at teardown."""

from worker_processes import private_postgres, private_redis, start_worker

__all__ = ["private_postgres", "private_redis", "start_worker"]
