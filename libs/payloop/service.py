"""What a service declares about itself, and the FastAPI app built from it.

A service package exposes one `ServiceDefinition`: its routers, event handlers, ORM metadata and
migrations. `create_app` is the composition root: it wires the database, the producer, the outbox
relay and the consumer runtime into the app's lifespan, so one process serves the API and runs the
relay and the consumers; `PAYLOOP_RUN_RELAY=false` / `PAYLOOP_RUN_CONSUMERS=false` split them.
"""
from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import MetaData, text

from payloop.body_limit import BodyLimitMiddleware
from payloop.consumer import BatchHandler, ConsumerRuntime, Handler
from payloop.db import asyncpg_dsn, make_engine, make_session_factory
from payloop.kafka import broker_reachable, make_producer
from payloop.outbox import OutboxRelay
from payloop.problems import Problem, install_problem_handlers, problem_response
from payloop.settings import platform_settings, service_database_url

log = structlog.get_logger(__name__)


@dataclass
class ServiceDefinition:
    name: str
    description: str
    metadata: MetaData
    migrations_dir: Path
    routers: list[APIRouter] = field(default_factory=list)
    handlers: dict[str, Handler] = field(default_factory=dict)
    # Set-based versions of some handlers, for busy event types (see payloop.consumer).
    batch_handlers: dict[str, BatchHandler] = field(default_factory=dict)
    # Extra background loops (schedulers, pollers): each gets (app, stop event).
    background: list[Callable[[FastAPI, asyncio.Event], "asyncio.Future | object"]] = field(default_factory=list)
    # Run at the stop, once the API, the consumer and the background loops are done: release what they
    # shared (an HTTP client's connections, say).
    on_stop: list[Callable[[FastAPI], Awaitable[None]]] = field(default_factory=list)
    version: str = "0.1.0"
    # The service's own subcommands of `python -m payloop_<name>`: name -> (help, function of argv).
    commands: dict[str, tuple[str, Callable[[list[str]], object]]] = field(default_factory=dict)
    # Tests run several copies of a service against one broker; each gets its own group.
    consumer_group: str | None = None

    @property
    def group(self) -> str:
        return self.consumer_group or self.name


def _flag(name: str, default: bool = True) -> bool:
    return os.environ.get(name, str(default)).lower() in ("1", "true", "yes", "on")


def create_app(service: ServiceDefinition, *, database_url: str | None = None) -> FastAPI:
    settings = platform_settings()
    url = database_url or service_database_url(service.name)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine = make_engine(url)
        app.state.engine = engine
        app.state.session_factory = make_session_factory(engine)
        producer = make_producer(settings)
        await _start_producer(producer)
        app.state.producer = producer
        stop = asyncio.Event()
        app.state.stop = stop
        tasks: list[asyncio.Task] = []
        if _flag("PAYLOOP_RUN_RELAY"):
            relay = OutboxRelay(service.name, asyncpg_dsn(url), producer, settings)
            app.state.relay = relay
            tasks.append(asyncio.create_task(relay.run(stop), name="outbox-relay"))
        engines = [engine]
        if _flag("PAYLOOP_RUN_CONSUMERS") and service.handlers:
            # Its own connections, unpinged: a batch that meets a dropped connection is rewound and
            # retried by the runtime anyway, and a ping would cost a round trip on every batch.
            consumer_engine = make_engine(url, pool_size=2, max_overflow=0, pre_ping=False)
            engines.append(consumer_engine)
            runtime = ConsumerRuntime(service.group, service.handlers, make_session_factory(consumer_engine),
                                      producer, settings, batch_handlers=service.batch_handlers)
            app.state.consumer = runtime
            tasks.append(asyncio.create_task(runtime.run(stop), name="consumer"))
        for loop in service.background:
            tasks.append(asyncio.create_task(loop(app, stop), name=getattr(loop, "__name__", "background")))
        for task in tasks:
            task.add_done_callback(_log_task_end)
        app.state.tasks = tasks
        log.info("service.started", service=service.name)
        try:
            yield
        finally:
            stop.set()
            # The consumer finishes the batch in hand and commits before returning.
            await asyncio.wait(tasks, timeout=30) if tasks else None
            for release in service.on_stop:
                await release(app)
            await producer.stop()
            for disposed in engines:
                await disposed.dispose()
            log.info("service.stopped", service=service.name)

    app = FastAPI(title=f"Payloop {service.name}", description=service.description,
                  version=service.version, lifespan=lifespan)
    install_problem_handlers(app)
    app.include_router(_operations_router(service))
    for router in service.routers:
        app.include_router(router)

    @app.middleware("http")
    async def _context(request: Request, call_next):
        correlation = request.headers.get("x-correlation-id") or request.headers.get("traceparent", "")
        started = time.perf_counter()
        with structlog.contextvars.bound_contextvars(correlation_id=correlation or None):
            response = await call_next(request)
        log.debug("http.request", method=request.method, path=request.url.path, status=response.status_code,
                  ms=round((time.perf_counter() - started) * 1000, 1))
        return response

    app.add_middleware(BodyLimitMiddleware)
    return app



async def _start_producer(producer) -> None:
    """Start the producer, waiting for the broker: a service may come up before Kafka does."""
    delay = 0.5
    for attempt in range(1, 61):
        try:
            await producer.start()
            return
        except Exception as exc:  # broker not there yet
            log.warning("kafka.producer.start_failed", attempt=attempt, error=repr(exc), retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5)
    await producer.start()


def _log_task_end(task: asyncio.Task) -> None:
    if task.cancelled():
        return
    if task.exception() is not None:
        log.error("service.task_crashed", task=task.get_name(), error=repr(task.exception()))


def _operations_router(service: ServiceDefinition) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="Process is up")
    async def healthz() -> dict:
        return {"status": "ok", "service": service.name}

    @router.get("/readyz", summary="Database and broker reachable, background loops alive",
                responses={503: {"description": "Not ready"}})
    async def readyz(request: Request):
        checks: dict[str, bool] = {}
        try:
            async with request.app.state.engine.connect() as conn:
                await asyncio.wait_for(conn.execute(text("SELECT 1")), 2)
            checks["database"] = True
        except Exception:
            checks["database"] = False
        checks["broker"] = await broker_reachable()
        checks["background"] = all(not t.done() for t in request.app.state.tasks)
        if all(checks.values()):
            return {"status": "ready", "service": service.name, "checks": checks}
        failed = ", ".join(k for k, ok in checks.items() if not ok)
        body = problem_response(request, Problem(503, "Not Ready", f"not ready: {failed}"))
        return body

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router
