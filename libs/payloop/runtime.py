"""The process entry point of a service: `python -m payloop_<name> serve|migrate|openapi`."""
from __future__ import annotations

import argparse
import asyncio
import json
import sys

import uvicorn

from payloop.logging import configure_logging
from payloop.migrations import ensure_database, upgrade
from payloop.service import ServiceDefinition, create_app
from payloop.services import service as service_spec
from payloop.settings import platform_settings, service_database_url


def _default_port(name: str) -> int:
    try:
        return service_spec(name).port
    except KeyError:
        return 8000


def main(service: ServiceDefinition, argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in service.commands:
        _help, command = service.commands[argv[0]]
        command(argv[1:])
        return
    own = "".join(f"\n  {name:10} {text}" for name, (text, _) in sorted(service.commands.items()))
    parser = argparse.ArgumentParser(
        prog=f"python -m payloop_{service.name}", description=service.description,
        epilog=f"service commands (each has --help):{own}" if own else None,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the API, the outbox relay and the consumers")
    serve.add_argument("--port", type=int, default=_default_port(service.name))
    serve.add_argument("--host", default=None)
    serve.add_argument("--migrate", action="store_true",
                       help="upgrade the database first (dev: one process start instead of two)")
    migrate = sub.add_parser("migrate", help="upgrade the service database to the newest schema")
    migrate.add_argument("--create-database", action="store_true", help="create the database if missing")
    sub.add_parser("openapi", help="print the OpenAPI document")
    args = parser.parse_args(argv)

    settings = platform_settings()
    configure_logging(service.name, settings.log_level, settings.log_json)
    if args.command == "migrate":
        url = service_database_url(service.name)
        if args.create_database:
            asyncio.run(ensure_database(url))
        upgrade(service.migrations_dir, url)
    elif args.command == "openapi":
        json.dump(create_app(service, database_url="postgresql+asyncpg://unused/unused").openapi(),
                  sys.stdout, indent=2)
    else:
        if args.migrate:
            upgrade(service.migrations_dir, service_database_url(service.name))
        app = create_app(service)
        config = uvicorn.Config(app, host=args.host or settings.host, port=args.port, log_config=None,
                                access_log=False, lifespan="on", timeout_graceful_shutdown=20)
        uvicorn.Server(config).run()
