"""RFC 9457 problem details for every error a service returns."""
from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = structlog.get_logger(__name__)

PROBLEM_JSON = "application/problem+json"

# SQLSTATEs of text PostgreSQL cannot store: 22021 (NUL in text), 22P05 (\u0000 in jsonb).
_UNSTORABLE_TEXT = {"22021", "22P05"}


def _is_unstorable_text(exc: BaseException) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if getattr(exc, "sqlstate", None) in _UNSTORABLE_TEXT:
            return True
        exc = getattr(exc, "orig", None) or exc.__cause__
    return False


class ProblemDetail(BaseModel):
    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None


class Problem(Exception):
    """Raise to answer with a problem+json body."""

    def __init__(self, status: int, title: str, detail: str | None = None, *,
                 type: str = "about:blank", errors: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(detail or title)
        self.status, self.title, self.detail, self.type = status, title, detail, type
        self.errors, self.headers = errors, headers


class NotFound(Problem):
    def __init__(self, what: str = "resource"):
        super().__init__(404, "Not Found", f"No such {what}")


def problem_response(request: Request, problem: Problem) -> JSONResponse:
    body = ProblemDetail(type=problem.type, title=problem.title, status=problem.status,
                         detail=problem.detail, instance=request.url.path, errors=problem.errors)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=problem.status,
                        media_type=PROBLEM_JSON, headers=problem.headers)


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ProblemDetail, "content": {PROBLEM_JSON: {}}, "description": text}
    for code, text in ((401, "Missing or invalid bearer token"), (403, "Token lacks the required scope"),
                       (404, "Not found (or belongs to another tenant)"), (422, "Invalid input"))
}


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {404: "Not Found", 405: "Method Not Allowed", 401: "Unauthorized",
                 403: "Forbidden", 413: "Content Too Large"}.get(exc.status_code, "Error")
        return problem_response(request, Problem(exc.status_code, title, str(exc.detail),
                                                 headers=getattr(exc, "headers", None)))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
                  for e in exc.errors()]
        return problem_response(request, Problem(422, "Invalid input",
                                                 "The request does not match the schema", errors=errors))

    @app.exception_handler(DBAPIError)
    async def _database(request: Request, exc: DBAPIError) -> JSONResponse:
        if _is_unstorable_text(exc):
            # PostgreSQL text cannot hold NUL characters; that is the input's fault, not ours.
            return problem_response(request, Problem(
                422, "Invalid input", "text fields must not contain NUL (\\u0000) characters"))
        return await _unexpected(request, exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("http.unhandled_error", path=request.url.path)
        return problem_response(request, Problem(500, "Internal Server Error",
                                                 "An unexpected error occurred; it has been logged"))
