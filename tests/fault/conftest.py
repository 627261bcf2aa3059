"""Fixtures for the fault suite: real worker processes, killed as a group at teardown."""

from worker_processes import start_worker

__all__ = ["start_worker"]
