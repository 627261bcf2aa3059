"""Fixtures for the fault suite: real worker processes and a private Redis, killed as a group at teardown."""

from worker_processes import private_redis, start_worker

__all__ = ["private_redis", "start_worker"]
