"""The API's shared objects (settings, store, blobs, Redis, Celery) and its auth dependency."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from workers.blobs import Blobs
from workers.events import Keys, client
from workers.settings import Settings
from workers.store import Store, is_job_id


class Services:
    """Everything a request handler may need, created once per app."""

    def __init__(self, settings: Settings):
        from redis import asyncio as aioredis

        from workers.celery_app import make_app

        self.settings = settings
        self.store = Store(settings.database_url)
        self.blobs = Blobs(Path(settings.data) / "blobs")
        self.redis = client(settings)
        self.aredis = aioredis.Redis.from_url(settings.broker_url)
        self.keys = Keys(settings)
        self.celery = make_app(settings)


@lru_cache(maxsize=1)
def default_services() -> Services:
    return Services(Settings.from_env())


def services(request: Request) -> Services:
    return request.app.state.services


Svc = Annotated[Services, Depends(services)]


def current_tenant(request: Request, svc: Svc) -> str:
    """The tenant of the request's bearer token; 401 without a valid one."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    tenant = svc.store.tenant_of(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
    if tenant is None:
        raise HTTPException(401, "missing or unknown API token", headers={"WWW-Authenticate": "Bearer"})
    return tenant


Tenant = Annotated[str, Depends(current_tenant)]


def owned(fetch, tenant: str, row_id: str, what: str):
    """``fetch(row_id, tenant)``; 422 for an id that is no UUID, 404 when absent or another tenant's
    (the two look the same to the caller)."""
    if not is_job_id(row_id):
        raise HTTPException(422, f"{what} id must be a UUID")
    row = fetch(row_id, tenant)
    if row is None:
        raise HTTPException(404, f"no {what} {row_id[:64]!r}")
    return row
