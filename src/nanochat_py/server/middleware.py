"""The ASGI layers in front of the routes: request counting, the Host check against DNS rebinding, the body
limits (size and JSON nesting), and CORS whose refusals are JSON like every other error.

All plain ASGI (not BaseHTTPMiddleware), so handlers still see http.disconnect and can stop generating for
a client that has gone away.
"""

from __future__ import annotations

import ipaddress
import re

import numpy as np
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from .errors import error_response
from .metrics import Metrics

MAX_BODY_BYTES = 1_000_000
MAX_JSON_DEPTH = 32  # the deepest request the APIs take is 5 levels ({"messages": [{"content": [{...}]}]})
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


class CountRequests:
    """Count requests by route and status."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.metrics.observe_request(getattr(scope.get("route"), "path", "unmatched"), status)


class HostGuard:
    """Answer only requests whose Host header names this server, so that a page on another site cannot reach a
    local server through a DNS name it points at 127.0.0.1 (DNS rebinding). `names` may hold "*" (any name);
    `any_ip` lets every IP address literal through (a rebinding attack always comes with a DNS name)."""

    def __init__(self, app, names: tuple[str, ...], any_ip: bool):
        self.app, self.names, self.any_ip = app, {n.lower().strip("[]") for n in names}, any_ip

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or "*" in self.names:
            return await self.app(scope, receive, send)
        host = Headers(scope=scope).get("host", "")
        if self.allows(host_name(host)):
            return await self.app(scope, receive, send)
        message = (
            f"this server does not answer to the Host {host!r} (a page on another site may be trying to reach it "
            "through DNS rebinding); to serve that name, start it with --allowed-hosts NAME"
        )
        await error_response(421, message, param="Host")(scope, receive, send)

    def allows(self, name: str) -> bool:
        if name in self.names:
            return True
        try:
            return self.any_ip and bool(ipaddress.ip_address(name))
        except ValueError:
            return False


def host_name(host: str) -> str:
    """The name in a Host header, without its port, brackets or trailing dot: "[::1]:8000" -> "::1"."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        host = name
    return host.removesuffix(".")


class BodyLimit:
    """Read the whole request body (at most MAX_BODY_BYTES, declared or chunked) before the app sees it: over
    the limit is a 413, JSON nested deeper than MAX_JSON_DEPTH a 400 (a deep body would otherwise cost the
    parser its recursion limit), and the body is then handed on unchanged."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return await _too_large(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left while sending
                return await self.app(scope, _replay([message], receive), send)
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > MAX_BODY_BYTES:
                return await _too_large(scope, receive, send)
        body = b"".join(chunks)
        content_type = headers.get("content-type", "")
        if body and (not content_type or "json" in content_type):
            depth = json_depth(body)
            if depth > MAX_JSON_DEPTH:
                message = f"the JSON body is nested {depth} levels deep; the limit is {MAX_JSON_DEPTH}"
                return await error_response(400, message)(scope, receive, send)
        await self.app(scope, _replay([{"type": "http.request", "body": body, "more_body": False}], receive), send)


def json_depth(body: bytes) -> int:
    """How deep the arrays and objects of a JSON text nest (brackets inside strings do not count), in time
    linear in its length: strings are cut out by a regular expression, the depth is a cumulative sum."""
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    codes = np.frombuffer(brackets, dtype=np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1)
    return int(np.cumsum(steps).max())


def _replay(messages: list[dict], receive):
    async def replayed():
        return messages.pop(0) if messages else await receive()

    return replayed


async def _too_large(scope, receive, send):
    response = error_response(413, f"the request body is over {MAX_BODY_BYTES} bytes; send less")
    await response(scope, receive, send)


class JsonCORS(CORSMiddleware):
    """Starlette's CORS, but a refused preflight is a JSON error that says which flag allows it."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        refused = bytes(response.body).decode().removeprefix("Disallowed CORS ")
        message = (f"CORS preflight refused: the request's {refused} is not allowed; start the server with "
                   "--cors-origins ORIGIN to let a page from ORIGIN call the API")  # fmt: skip
        keep = {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}
        return error_response(400, message, headers=keep)
