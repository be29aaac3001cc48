"""The page, its logo, and the server's state: /health, /stats, /metrics."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse, Response

from .context import Context
from .openapi import TEXT
from .responses import Health, Stats

STATIC = Path(__file__).parent / "static"


def status_router(ctx: Context) -> APIRouter:
    router = APIRouter()
    pool, settings = ctx.pool, ctx.settings

    @router.get("/", include_in_schema=False)
    async def index():
        return FileResponse(settings.ui_path or STATIC / "index.html", media_type="text/html")

    @router.get("/logo.svg", include_in_schema=False)
    async def logo():
        return FileResponse(settings.logo_path or STATIC / "logo.svg", media_type="image/svg+xml")

    @router.get("/health", response_model=Health, response_model_exclude_none=True,
                responses={503: {"model": Health, "description": "not ready: loading, warming up, or a worker "
                                 "has stopped or stalled"}})  # fmt: skip
    async def health():
        """200 once every worker has run the model (a warm-up step) and while each keeps making progress."""
        if pool.error:
            return _unready("error", pool.error)
        if not pool.loaded:
            return _unready("loading")
        if not pool.ready:
            return _unready("warming up")
        problems = pool.problems()
        if problems:
            return _unready("unhealthy", "; ".join(problems))
        stats = pool.stats()
        return Health(status="ok", ready=True, num_workers=stats["total_workers"],
                      available_workers=stats["available_workers"])  # fmt: skip

    @router.get("/stats", response_model=Stats)
    async def stats():
        return pool.stats()

    @router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": TEXT},
                                                                      "description": "Prometheus text"}})  # fmt: skip
    async def prometheus():
        return Response(ctx.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return router


def _unready(status: str, error: str | None = None) -> JSONResponse:
    body = Health(status=status, ready=False, error=error).model_dump(exclude_none=True)
    return JSONResponse(body, status_code=503)
