"""What a warm worker process keeps between jobs, and the watch kept over the job it runs.

One job runs at a time per worker process. While it runs, a thread beside it renews the job's
lease, forwards progress to Redis, and turns a cancel request or the job's time limit into the
verifier's cancel signal (its deadlines fire at their next check).
"""
from __future__ import annotations

import collections
import json
import logging
import os
import queue
import socket
import threading
import time
from functools import lru_cache
from pathlib import Path

from workers.blobs import Blobs
from workers.events import Keys, client, encode
from workers.settings import Settings
from workers.store import Store

log = logging.getLogger("nnverify.worker")


@lru_cache(maxsize=1)
def settings() -> Settings:
    return Settings.from_env()


@lru_cache(maxsize=1)
def store() -> Store:
    return Store(settings().database_url)


@lru_cache(maxsize=1)
def blobs() -> Blobs:
    return Blobs(Path(settings().data) / "blobs")


@lru_cache(maxsize=1)
def redis_client():
    return client(settings())


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class ModelCache:
    """Loaded models keyed by the file's sha256, least recently used dropped first."""

    def __init__(self, size: int):
        self.size, self.models = size, collections.OrderedDict()

    def get(self, sha: str, path: str):
        """The loaded model of blob ``sha`` (loading errors raise, and nothing is cached)."""
        from verifier.model import load_onnx

        if sha in self.models:
            self.models.move_to_end(sha)
            return self.models[sha], True
        model = load_onnx(path)
        self.models[sha] = model
        while len(self.models) > self.size:
            self.models.popitem(last=False)
        return model, False


@lru_cache(maxsize=1)
def models() -> ModelCache:
    return ModelCache(settings().model_cache)


class Lease:
    """Exclusive right to run a job, held in Redis with a time to live and renewed while it runs."""

    def __init__(self, r, keys: Keys, job_id: str, ttl: float):
        self.r, self.key, self.ttl, self.owner = r, keys.lease(job_id), ttl, worker_name()

    def acquire(self) -> bool:
        return bool(self.r.set(self.key, self.owner, nx=True, px=int(self.ttl * 1000)))

    def renew(self) -> None:
        if self.r.get(self.key) in (None, self.owner.encode()):
            self.r.set(self.key, self.owner, px=int(self.ttl * 1000))

    def release(self) -> None:
        if self.r.get(self.key) == self.owner.encode():
            self.r.delete(self.key)


class Watch:
    """The thread beside a running job: lease, progress, cancel flag and time limit."""

    POLL = 0.2

    def __init__(self, job_id: str, lease: Lease, limit: float):
        self.job_id, self.lease, self.limit = job_id, lease, limit
        self.keys, self.r = Keys(settings()), redis_client()
        self.cancel = threading.Event()      # what the verifier watches
        self.reason = ""                     # "cancelled" or "time limit" once the event is set
        self.events: queue.Queue = queue.Queue()
        self.snapshot: dict = {}             # the latest step and search figures, merged
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"watch-{job_id[:8]}", daemon=True)
        self.started = time.monotonic()

    def __enter__(self) -> "Watch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        try:
            self._flush()
        except Exception as err:   # progress is best effort; the result is what must be stored
            log.warning("job %s: last progress not published: %s", self.job_id, err)

    def progress(self, event: dict) -> None:
        """The verifier's progress callback: queue the event (the thread sends it)."""
        self.events.put(event)

    def _loop(self) -> None:
        renewed = 0.0
        while not self._stop.wait(self.POLL):
            try:
                if time.monotonic() - renewed > self.lease.ttl / 3:
                    self.lease.renew()
                    renewed = time.monotonic()
                if not self.cancel.is_set():
                    self._check_stop()
                self._flush()
            except Exception as exc:   # Redis away for a moment: the job goes on, the next round retries
                log.warning("job %s: watch round failed: %s", self.job_id, exc)

    def _check_stop(self) -> None:
        if time.monotonic() - self.started > self.limit:
            self.reason = "time limit"
            self.cancel.set()
        elif self.r.exists(self.keys.cancel(self.job_id)):
            self.reason = "cancelled"
            self.cancel.set()

    def _flush(self) -> None:
        """Publish queued progress events; keep the latest as the job's progress snapshot."""
        fresh = False
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                break
            event = dict(event, job=self.job_id)
            self.snapshot.update(event)
            fresh = True
            self.r.publish(self.keys.events(self.job_id), encode(event))
        if fresh:
            self.r.set(self.keys.progress(self.job_id), encode(self.snapshot), ex=86400)


def publish_final(job_id: str, state: str, verdict: str | None) -> None:
    """Tell event listeners the job ended (best effort: the API also polls the store)."""
    keys, r = Keys(settings()), redis_client()
    try:
        r.publish(keys.events(job_id), json.dumps({"event": "done", "job": job_id, "state": state, "verdict": verdict}))
    except Exception as exc:
        log.warning("job %s: final event not published: %s", job_id, exc)
