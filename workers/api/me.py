"""``/v1/me``: who the token belongs to."""
from __future__ import annotations

from fastapi import APIRouter

from workers.api.deps import Tenant
from workers.api.schemas import Me

router = APIRouter(prefix="/v1", tags=["tenant"])


@router.get("/me", response_model=Me)
def me(tenant: Tenant) -> Me:
    return Me(tenant=tenant)
