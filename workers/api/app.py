"""The FastAPI app: jobs, health and metrics, and the web page."""
from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from workers.api import analyses, audits, health, jobs, me, web
from workers.api.deps import Services, default_services


def create_app(services: Services | None = None) -> FastAPI:
    """The API with its routers; ``services`` defaults to the environment's settings."""
    app = FastAPI(title="nnverify", version="0.1.0",
                  description="Neural-network verification jobs: ONNX + VNN-LIB in, verdict with evidence out.")
    app.state.services = services or default_services()
    app.include_router(jobs.router)
    app.include_router(audits.router)
    app.include_router(analyses.router)
    app.include_router(me.router)
    app.include_router(health.router)
    app.include_router(web.router)
    app.mount("/static", StaticFiles(directory=web.STATIC), name="static")
    return app
