"""Every error the server sends is JSON: {"error": {"message", "type", "param"}}; this builds them."""

from __future__ import annotations

import re

from fastapi.responses import JSONResponse

_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param=None, headers=None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.headers = status, message, type_, param, headers


def error_response(status: int, message: str, type_: str = "invalid_request_error", param=None,
                   headers=None) -> JSONResponse:  # fmt: skip
    body = {"error": {"message": message, "type": type_, "param": param}}
    return JSONResponse(body, status_code=status, headers=headers)


def validation_error(errors: list[dict]) -> JSONResponse:
    """pydantic's errors -> one 400 naming the parameter (`messages`, `top_p`, ...) and the problem."""
    if not errors:
        return error_response(400, "invalid request")
    # in a union (a string or a list), the member whose type fit says more than "input should be a valid list"
    first = next((e for e in errors if not str(e.get("type", "")).endswith("_type")), errors[0])
    if first.get("type") == "json_invalid":  # loc holds a character offset, not a parameter
        return error_response(400, f"malformed JSON: {first.get('msg')}")
    # keep field names and indexes; drop "body" and pydantic's names for union members ("list[Part]")
    path = [str(x) for x in first.get("loc", ()) if isinstance(x, int) or (_FIELD.fullmatch(x) and x != "body")]
    message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
    if first.get("type") == "string_unicode":
        message = "the text holds a lone surrogate: send valid UTF-8, or a complete UTF-16 pair of \\u escapes"
    param = ".".join(path) or None
    return error_response(400, f"{param}: {message}" if param else message, param=param)
