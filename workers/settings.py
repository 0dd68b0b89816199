"""Typed service settings, read from the environment at the service edge only."""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    """Where the service keeps its state and how much it accepts (``NNVERIFY_<FIELD>`` overrides)."""

    data: str = ".nnverify"                      # blobs/ and the default SQLite file live here
    db_url: str = ""                             # SQLAlchemy URL; empty: sqlite:///{data}/jobs.sqlite
    broker_url: str = "redis://127.0.0.1:6379/0"
    queue_prefix: str = ""                       # prepended to every Redis key of this deployment (tests isolate by it)
    visibility_timeout: float = 3900.0           # seconds before an unacked job is redelivered: > max_timeout
    lease_seconds: float = 10.0                  # a running job's lease; a redelivery waits for it to lapse
    max_attempts: int = 3                        # deliveries of one job before it is failed as lost
    max_timeout: float = 3600.0
    default_timeout: float = 60.0
    max_model_bytes: int = 100_000_000
    max_spec_bytes: int = 50_000_000
    max_data_bytes: int = 200_000_000            # an audit's dataset upload
    max_tensor_elements: int = 50_000_000        # per tensor and in all, declared sizes included
    max_nodes: int = 20_000
    model_cache: int = 8                         # models a worker process keeps loaded
    worker_threads: int = 1                      # torch threads per worker process (0: torch's default)
    page_size: int = 50
    distribute_after: float = 5.0                # seconds before a branch-and-bound search ships chunks to idle workers (< 0: never)

    @classmethod
    def from_env(cls, environ: dict | None = None) -> "Settings":
        """Settings with every ``NNVERIFY_<FIELD>`` variable applied (bad values raise ValueError)."""
        env = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = env.get(f"NNVERIFY_{f.name.upper()}")
            if raw is not None:
                values[f.name] = type(f.default)(raw)
        return cls(**values)

    @property
    def database_url(self) -> str:
        """The SQLAlchemy URL (the SQLite file under ``data`` unless ``db_url`` is set)."""
        return self.db_url or f"sqlite:///{Path(self.data).resolve() / 'jobs.sqlite'}"

    def queue(self, name: str) -> str:
        """The broker queue name for ``gpu`` or ``cpu`` (the broker prefixes every key with ``queue_prefix``)."""
        return name

    def queue_keys(self, name: str, priorities: int = 10) -> list[str]:
        """The Redis lists that hold queue ``name``'s messages, one per priority step."""
        base = f"{self.queue_prefix}{name}"
        return [base] + [f"{base}:{p}" for p in range(1, priorities)]

    def key(self, *parts: str) -> str:
        """A Redis key in this deployment's namespace."""
        return ":".join((f"{self.queue_prefix}nnverify",) + parts)
