"""Errors as OpenAI's API reports them: `{"error": {"message", "type", "param", "code"}}` with an HTTP status.

Clients written against OpenAI (its Python and JS libraries, curl scripts) branch on the status and on
`type`/`code`, so every refusal the server makes is one of these, never a bare 500 or a traceback.
"""

from __future__ import annotations

from starlette.responses import JSONResponse

INVALID_REQUEST = "invalid_request_error"
AUTHENTICATION = "authentication_error"
NOT_FOUND = "not_found_error"
SERVER_BUSY = "server_busy_error"
SERVER_ERROR = "server_error"


class APIError(Exception):
    """A request the server refuses or cannot serve; `response()` is what the client gets."""

    def __init__(self, status: int, message: str, type: str = INVALID_REQUEST, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_field(param: str, message: str, code: str = "invalid_value") -> APIError:
    """400 naming the field at fault (`messages[0].content[1].image_url`, `size`, ...)."""
    return APIError(400, f"{param}: {message}", param=param, code=code)


def too_large(message: str, param: str | None = None, code: str = "request_too_large") -> APIError:
    return APIError(413, message, param=param, code=code)


def unauthorized() -> APIError:
    return APIError(401, "missing or wrong API key: send the header 'Authorization: Bearer <key>' with the key "
                         "the server was started with (--api-key)", type=AUTHENTICATION, code="invalid_api_key",
                    headers={"WWW-Authenticate": "Bearer"})


def busy(message: str, code: str, retry_after_s: int) -> APIError:
    """503 with Retry-After: the queue is full, the model is still loading, or the server is stopping."""
    return APIError(503, message, type=SERVER_BUSY, code=code, headers={"Retry-After": str(retry_after_s)})


def internal(message: str) -> APIError:
    """A fault of the server itself: one line for the client, the traceback stays in the server's log."""
    return APIError(500, message, type=SERVER_ERROR, code="internal_error")
