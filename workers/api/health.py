"""``/healthz`` and ``/metrics`` (Prometheus text format)."""
from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from workers.api.deps import Svc
from workers.events import registered_workers

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(svc: Svc) -> dict:
    """Liveness of the API and its two dependencies (the store and Redis)."""
    svc.store.counts()
    svc.redis.ping()
    return {"ok": True}


@router.get("/metrics")
def metrics(svc: Svc) -> Response:
    registry = CollectorRegistry()
    registry.register(_Collector(svc))
    return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")


class _Collector:
    """Reads queue depth, job counts and verification time when scraped (no state in the API)."""

    def __init__(self, svc):
        self.svc = svc

    def collect(self):
        svc = self.svc
        depth = GaugeMetricFamily("nnverify_queue_depth", "Messages waiting in a queue", labels=["queue"])
        for q in ("gpu", "cpu"):
            depth.add_metric([q], sum(svc.redis.llen(k) for k in svc.settings.queue_keys(q)))
        yield depth
        jobs = GaugeMetricFamily("nnverify_jobs", "Jobs by state", labels=["state"])
        for state, n in svc.store.counts().items():
            jobs.add_metric([state], n)
        yield jobs
        secs = CounterMetricFamily("nnverify_verification_seconds", "Time spent in verify, by verdict",
                                   labels=["verdict"])
        runs = CounterMetricFamily("nnverify_verifications", "Finished verifications, by verdict", labels=["verdict"])
        for verdict, (n, total) in svc.store.seconds_summary().items():
            secs.add_metric([verdict], total)
            runs.add_metric([verdict], n)
        yield secs
        yield runs
        workers = registered_workers(svc.redis, svc.keys)
        count = GaugeMetricFamily("nnverify_workers", "Registered worker processes, by queue", labels=["queue"])
        for q in ("gpu", "cpu"):
            count.add_metric([q], sum(int(w.get("concurrency", 1)) for w in workers if q in w.get("queues", [])))
        yield count
