"""The dashboard page at `/`: a server-rendered shell whose script reads the same /v1 API.

The page itself holds no data and needs no token; the script takes the token from the URL
fragment (`#token=...`, never sent to servers or logs), from `?token=`, or from a prompt, and keeps
it in sessionStorage for the tab.
"""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

STATIC = Path(__file__).parent / "static"

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
async def dashboard() -> HTMLResponse:
    return HTMLResponse((STATIC / "dashboard.html").read_text(),
                        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


@router.get("/static/dashboard.js")
async def dashboard_script() -> FileResponse:
    return FileResponse(STATIC / "dashboard.js", media_type="text/javascript")


@router.get("/static/dashboard.css")
async def dashboard_styles() -> FileResponse:
    return FileResponse(STATIC / "dashboard.css", media_type="text/css")
