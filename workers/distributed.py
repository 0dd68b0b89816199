"""The Celery pool as the branch-and-bound search's ``Offload`` (input or ReLU splitting): chunks go out as
tasks, results come back via Redis.

Home side (the job's worker process): ``ChunkPool`` sends each chunk as the task
``nnverify.search_chunk`` on the job's queue (priority 0: ahead of new jobs) and polls one
Redis key per chunk for its result. It counts idle pool slots from the worker registry (slots of
the workers serving that queue) less running jobs (their leases), running chunks (their claims)
and queued messages, so the job's own slot is never counted idle.

Chunk side (any worker process with access to the blob store): ``run_task`` claims the chunk
(``SET NX`` with a lease renewed while it runs), searches it with ``verifier.search.distribute.run_chunk``
on the model from the warm cache, and writes the result once (``SET NX``): a redelivered
duplicate finds the result or a live claim and does nothing. A chunk whose worker died loses its
claim when the lease lapses; the message comes back after the broker's visibility timeout, or
the home search takes the chunk back (``reclaim``) once it has nothing else to do.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid

from workers.celery_app import HARD_GRACE
from workers.events import Keys, registered_workers
from workers.settings import Settings

log = logging.getLogger("nnverify.worker")
CHUNK_TASK = "nnverify.search_chunk"
HOME = "home"          # the claim value of a chunk the home search took back (or cancelled)
COUNT_EVERY = 0.5      # seconds between two counts of idle slots (each scans Redis)
RESULT_TTL = 86400


class ChunkKeys:
    """Redis keys of one home search's chunks (``run``: unique per job attempt)."""

    def __init__(self, settings: Settings, run: str):
        self.settings, self.run = settings, run

    def claim(self, tag: str) -> str:
        return self.settings.key("chunk", self.run, tag, "claim")

    def result(self, tag: str) -> str:
        return self.settings.key("chunk", self.run, tag, "result")

    def stop(self) -> str:
        return self.settings.key("chunk", self.run, "stop")

    def claims_pattern(self) -> str:
        return self.settings.key("chunk", "*", "claim")


def tag_of(chunk) -> str:
    """A chunk's name within its home search: region.polytope.index."""
    return f"{chunk.region}.{chunk.polytope}.{chunk.index}"


class ChunkPool:
    """``Offload`` for one job: ship chunks as Celery tasks, poll Redis for their results."""

    def __init__(self, app, settings: Settings, r, job_id: str, model_sha256: str, spec_sha256: str, config: dict,
                 queue: str):
        self.app, self.settings, self.r = app, settings, r
        self.job_id, self.model, self.spec, self.config, self.queue = job_id, model_sha256, spec_sha256, config, queue
        self.keys = ChunkKeys(settings, f"{job_id}-{uuid.uuid4().hex[:8]}")
        self.out: dict[str, object] = {}        # tag -> ChunkSpec, shipped and not settled
        self.shipped, self.workers = 0, set()   # workers that searched a chunk whose result came back
        self._counted, self._idle = 0.0, 0

    def want_chunks(self) -> int:
        """Idle slots of the pool serving this queue (counted at most every ``COUNT_EVERY`` s)."""
        now = time.monotonic()
        if now - self._counted >= COUNT_EVERY:
            self._counted, self._idle = now, self._count_idle()
        return self._idle

    def _count_idle(self) -> int:
        slots = sum(int(w.get("concurrency", 1)) for w in registered_workers(self.r, Keys(self.settings))
                    if self.queue in w.get("queues", []))
        jobs = sum(1 for _ in self.r.scan_iter(match=self.settings.key("lease", "*"), count=500))
        chunks = sum(1 for k in self.r.scan_iter(match=self.keys.claims_pattern(), count=500)
                     if self.r.get(k) not in (None, HOME.encode()))
        queued = sum(self.r.llen(k) for k in self.settings.queue_keys(self.queue))
        return max(0, slots - jobs - chunks - queued)

    def ship(self, chunks) -> None:
        for chunk in chunks:
            tag = tag_of(chunk)
            payload = {"run": self.keys.run, "tag": tag, "job": self.job_id, "model": self.model, "spec": self.spec,
                       "config": self.config, "chunk": chunk.to_json()}
            limit = max(1.0, chunk.deadline - time.time()) + HARD_GRACE
            self.app.send_task(CHUNK_TASK, args=[payload], queue=self.settings.queue(self.queue), priority=0,
                               time_limit=limit)
            self.out[tag] = chunk
            self.shipped += 1
        self._idle = max(0, self._idle - len(chunks))

    def poll(self) -> list:
        from verifier.search.distribute import ChunkResult

        if not self.out:
            return []
        tags = list(self.out)
        got = []
        for tag, raw in zip(tags, self.r.mget([self.keys.result(t) for t in tags])):
            if raw is not None:
                res = ChunkResult.from_json(json.loads(raw))
                del self.out[tag]
                if res.worker and res.status in ("holds", "violated", "partial"):
                    self.workers.add(res.worker)
                got.append(res)
        return got

    def reclaim(self) -> list:
        """Chunks whose claim is free (not started, or their worker's lease lapsed): claimed for home."""
        back = []
        for tag, chunk in list(self.out.items()):
            if self.r.exists(self.keys.result(tag)):   # finished since the last poll: the next poll joins it
                continue
            if self.r.set(self.keys.claim(tag), HOME, nx=True, ex=self._claim_ttl(chunk)):
                back.append(self.out.pop(tag))
        return back

    def cancel_all(self) -> None:
        """Tell running chunks to stop; queued ones will find a home claim and skip."""
        self.r.set(self.keys.stop(), "1", ex=RESULT_TTL)
        for tag, chunk in self.out.items():
            self.r.set(self.keys.claim(tag), HOME, nx=True, ex=self._claim_ttl(chunk))
        self.out.clear()

    def _claim_ttl(self, chunk) -> int:
        return int(max(1.0, chunk.deadline - time.time()) + HARD_GRACE)

    def summary(self, home: str) -> dict:
        """``{"chunks": shipped, "workers": k}``: k counts the home worker and every worker that searched a chunk."""
        return {"chunks": self.shipped, "workers": len(self.workers | {home})}


def run_task(payload: dict) -> str:
    """The body of ``nnverify.search_chunk`` in a worker process: claim, search, write the result once."""
    from workers import runtime

    settings, r = runtime.settings(), runtime.redis_client()
    keys, tag, me = ChunkKeys(settings, payload["run"]), payload["tag"], runtime.worker_name()
    if r.exists(keys.result(tag)) or r.exists(keys.stop()):
        return "skipped"
    if not r.set(keys.claim(tag), me, nx=True, px=int(settings.lease_seconds * 1000)):
        return "claimed"   # another delivery runs it, or the home search took it back
    cancel, done = threading.Event(), threading.Event()
    watch = threading.Thread(target=_watch, args=(r, keys, tag, me, settings.lease_seconds, cancel, done), daemon=True)
    watch.start()
    try:
        result = _search(payload, cancel, me)
        if not cancel.is_set() or result.status in ("holds", "violated", "partial"):
            r.set(keys.result(tag), json.dumps(result.to_json()), nx=True, ex=RESULT_TTL)
        return result.status
    finally:
        done.set()
        watch.join(5)
        if r.get(keys.claim(tag)) == me.encode():
            r.delete(keys.claim(tag))


def _search(payload: dict, cancel: threading.Event, me: str):
    """Load the model (warm cache) and spec, and search the chunk."""
    from verifier.config import VerifyConfig
    from verifier.search.distribute import ChunkSpec, run_chunk
    from verifier.spec.vnnlib import load_vnnlib
    from workers import runtime

    b = runtime.blobs()
    model, _ = runtime.models().get(payload["model"], str(b.path(payload["model"])))
    spec = load_vnnlib(str(b.path(payload["spec"])))
    config = VerifyConfig.from_dict(payload["config"])
    engine, runner = _prepared(model, config)
    return run_chunk(model, spec, config, ChunkSpec.from_json(payload["chunk"]), engine=engine, cancel=cancel,
                     worker=me, runner=runner)


_PREPARED: dict = {}


def _prepared(model, config):
    """(bound engine, onnxruntime runner) of the last model this process searched chunks of: a job's
    chunks come in runs, and each is a second or two, so building them per chunk would show."""
    import torch

    from verifier.bounds import BoundEngine
    from verifier.threads import pick_device

    key = (model.sha256, config.bounds.device, config.bounds.dtype)
    if key not in _PREPARED:
        _PREPARED.clear()
        engine = BoundEngine(model.graph, device=pick_device(config.bounds.device), dtype=getattr(torch, config.bounds.dtype))
        _PREPARED[key] = (engine, model.reference_runner())
    return _PREPARED[key]


def _watch(r, keys: ChunkKeys, tag: str, me: str, ttl: float, cancel: threading.Event, done: threading.Event) -> None:
    """Beside a running chunk: renew its claim; set ``cancel`` once the home search stops its chunks."""
    while not done.wait(min(ttl / 3, 0.5)):
        try:
            if r.get(keys.claim(tag)) == me.encode():
                r.pexpire(keys.claim(tag), int(ttl * 1000))
            if r.exists(keys.stop()):
                cancel.set()
        except Exception as exc:   # Redis away for a moment: the next round retries
            log.warning("chunk %s: watch round failed: %s", tag, exc)


def for_job(job, config, settings: Settings, r, app):
    """(config, pool) for a job: the pool is None when distribution is off (``distribute_after`` < 0);
    the deployment's ``distribute_after`` applies unless the job's own config sets one."""
    import dataclasses

    if settings.distribute_after < 0:
        return config, None
    if "distribute_after" not in job.options.get("config", {}).get("bab", {}):
        config = dataclasses.replace(config, bab=dataclasses.replace(config.bab,
                                                                     distribute_after=settings.distribute_after))
    pool = ChunkPool(app, settings, r, job.id, job.model_sha256, job.spec_sha256, dataclasses.asdict(config),
                     job.queue or "cpu")
    return config, pool
