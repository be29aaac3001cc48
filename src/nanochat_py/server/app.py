"""The FastAPI app: the routers (status_routes, native_api, openai_api, completions_api, tokenizer_api), the
middleware in front of them, and error handlers that make every error a JSON body.

Nothing here runs the model: requests become Jobs for the worker pool, and their events become SSE streams
or JSON. Prompts and replies are never logged unless the server was started with --log-messages.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .completions_api import completions_router
from .context import Context, Settings
from .errors import ApiError, error_response, validation_error
from .metrics import Metrics
from .middleware import BodyLimit, CountRequests, HostGuard, JsonCORS
from .native_api import native_router
from .openai_api import openai_router
from .openapi import install as install_openapi
from .pool import WorkerPool
from .status_routes import status_router
from .tokenizer_api import tokenizer_router

__all__ = ["Settings", "create_app"]  # Settings lives in context.py; callers import it from here


def create_app(pool: WorkerPool, settings: Settings) -> FastAPI:
    app = FastAPI(title="nanochat-py", docs_url=None, redoc_url=None)
    metrics = Metrics(pool)
    ctx = Context(pool, settings, metrics)
    app.state.pool, app.state.settings, app.state.metrics = pool, settings, metrics
    for router in (status_router(ctx), native_router(ctx), openai_router(ctx), completions_router(ctx),
                   tokenizer_router(ctx)):  # fmt: skip
        app.include_router(router)

    # the last added runs first: count, check Host, then CORS, then read the body
    app.add_middleware(BodyLimit)
    if settings.cors_origins:
        app.add_middleware(JsonCORS, allow_origins=list(settings.cors_origins), allow_methods=["*"],
                           allow_headers=["*"])  # fmt: skip
    host_check = "*" not in settings.allowed_hosts
    if host_check:
        app.add_middleware(HostGuard, names=settings.allowed_hosts, any_ip=settings.allow_ip_hosts)
    app.add_middleware(CountRequests, metrics=metrics)
    install_openapi(app, api_key=bool(settings.api_key), host_check=host_check)

    @app.exception_handler(ApiError)
    async def _api_error(request, e: ApiError):
        return error_response(e.status, e.message, e.type, e.param, e.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, e: RequestValidationError):
        return validation_error(list(e.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, e: StarletteHTTPException):
        return error_response(e.status_code, str(e.detail), headers=e.headers)  # 405 keeps its Allow header

    return app
