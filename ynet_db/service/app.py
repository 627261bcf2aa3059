"""The HTTP service's app factory: routes, JSON errors, request metrics, over one `Service`."""

from __future__ import annotations

from fastapi import FastAPI

from ynet_db.service import errors
from ynet_db.service.http_metrics import RequestMetrics
from ynet_db.service.routes import operations, products, search
from ynet_db.service.state import Service

DESCRIPTION = """Visual product search over the shop's PostgreSQL. Search with a photo (upload or URL), find
products like a product, and check the deployment. Every error is JSON `{"error": ..., "field": ...}`."""


def create_app(service: Service) -> FastAPI:
    app = FastAPI(title="ynet-db", version=_version(), description=DESCRIPTION)
    app.state.service = service
    errors.install(app)
    app.include_router(search.router)
    app.include_router(products.router)
    app.include_router(operations.router)
    app.add_middleware(RequestMetrics)
    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ynet-db")
    except PackageNotFoundError:
        return "0+unknown"
