"""/openapi.json as the server really behaves: 400 (not FastAPI's 422) with the error body for a bad request,
each route's other errors, 401 only with --api-key and 421 only when Host names are checked."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from .responses import ErrorBody

WHY = {
    400: "a malformed, mistyped or out-of-range request; the message names the parameter",
    401: "a missing or wrong API key (only with --api-key)",
    404: "no such model",
    413: "a request body over 1 MB",
    421: "a Host header this server does not answer to (see --allowed-hosts)",
    500: "generation failed inside the server",
    503: "the model is loading, the queue is full (with Retry-After), or the server is shutting down",
}
TEXT = {"schema": {"type": "string"}}


def event_stream(event: type[BaseModel], done: str | None = None) -> dict:
    """A text/event-stream media type whose events (OpenAPI 3.2's itemSchema) carry JSON matching `event`'s
    `event` field in `data`, or else the literal `done` marker."""
    payload = event.model_json_schema()
    json_data = {"type": "string", "contentMediaType": "application/json",
                 "contentSchema": {**payload["properties"]["event"], "$defs": payload.get("$defs", {})}}  # fmt: skip
    data = json_data if done is None else {"type": "string", "if": {"const": done}, "else": json_data}
    return {"itemSchema": {"type": "object", "required": ["data"], "properties": {"data": data}}}


def errors(*codes: int) -> dict:
    """The `responses=` entries of a route for these error statuses."""
    return {code: {"model": ErrorBody, "description": WHY[code]} for code in codes}


def install(app: FastAPI, api_key: bool, host_check: bool) -> None:
    """Replace app.openapi with one that tells the truth about errors."""

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        for path, operations in schema["paths"].items():
            for operation in operations.values():
                responses = operation["responses"]
                responses.pop("422", None)
                for code, response in responses.items():
                    content = response.get("content", {})
                    if int(code) >= 400 and content:  # errors are JSON, even on an SSE route
                        response["content"] = {"application/json": next(iter(content.values()))}
                    elif "itemSchema" in content.get("text/event-stream", {}):  # events, not one string
                        content["text/event-stream"].pop("schema", None)
                extra = ([401] if api_key and _is_api(path) else []) + ([421] if host_check else [])
                for code in extra:
                    responses[str(code)] = _error_response(code)
        components = schema.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi


def _is_api(path: str) -> bool:
    return path in ("/chat/completions", "/tokenize", "/detokenize", "/tokenizer_info") or path.startswith("/v1/")


def _error_response(code: int) -> dict:
    return {"description": WHY[code],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}  # fmt: skip
