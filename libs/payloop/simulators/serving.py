"""What every HTTP simulator does alike: serve its app on a port of the running event loop, and make its
outgoing calls (webhooks, callbacks) in the background, where a test can wait for them to land."""
from __future__ import annotations

import asyncio
from datetime import date
from typing import Any, Callable

import httpx
import uvicorn
from fastapi import FastAPI

from payloop.simulators.psa_book import Book, seed


class SimulatorServer:
    app: FastAPI

    def __init__(self, state: Any, render: Callable[[Book, Any], None] | None = None, *, seeded: bool = True,
                 today: date | None = None) -> None:
        """`state` in the vendor's shape; with `render`, seeded with the MSP book every PSA simulator serves
        (dated around `today` when given, as `payloop dev` asks)."""
        self.state = state
        if seeded and render is not None:
            book = Book()
            seed(book, today=today)
            render(book, state)
        self.faults: list = []
        self.requests: list[dict] = []
        self.base_url = ""
        self.deliveries: list[asyncio.Task] = []
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task | None = None

    def deliver(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        """POST `body` to `url` in the background, as the vendor calls out after a change."""
        self.deliveries.append(asyncio.ensure_future(self._post(url, body, headers)))

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                await client.post(url, content=body, headers={"content-type": "application/json", **headers})
        except httpx.HTTPError:
            pass  # the vendors do not retry failed deliveries: pollers catch up

    async def settle_deliveries(self) -> None:
        while self.deliveries:
            await self.deliveries.pop(0)

    async def start(self, port: int, host: str = "127.0.0.1") -> None:
        self.base_url = f"http://{host}:{port}"
        self._server = uvicorn.Server(uvicorn.Config(self.app, host=host, port=port, log_level="warning",
                                                     lifespan="off"))
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            await asyncio.sleep(0.01)

    async def serve_until_stopped(self) -> None:
        await self._task

    async def stop(self) -> None:
        await self.settle_deliveries()
        if self._server:
            self._server.should_exit = True
            await self._task
