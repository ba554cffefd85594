"""An SMTP sink: accepts every message on loopback, keeps it in memory, lists it over HTTP.

`python -m payloop.simulators.smtp_sink --port 8220 [--smtp-port 1025]` serves SMTP on `--smtp-port`
and, on `--port`, a page (`/`) and a JSON API (`GET /messages`, `GET /messages/{n}`,
`DELETE /messages`) showing what was sent. Tests run it in-process with `SmtpSink(...).start()`.
Recipients listed in `reject` get SMTP 550 and those in `defer` 451, so tests can exercise bounces
and retries.
"""
from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import html
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class SentMessage:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def parsed(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.raw, policy=email.policy.default)  # type: ignore[return-value]

    def body(self, subtype: str) -> str:
        part = self.parsed.get_body(preferencelist=(subtype,))
        return part.get_content() if part is not None else ""

    def as_json(self, index: int) -> dict[str, Any]:
        message = self.parsed
        return {
            "index": index, "from": self.mail_from, "to": self.rcpt_tos,
            "subject": message["subject"], "message_id": message["message-id"],
            "received_at": self.received_at.isoformat(),
            "text": self.body("plain"), "html": self.body("html"),
            "headers": {k: str(v) for k, v in message.items()},
        }


class _Handler:
    def __init__(self, sink: "SmtpSink"):
        self.sink = sink

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if address.lower() in self.sink.reject:
            return "550 5.1.1 mailbox unavailable"
        if address.lower() in self.sink.defer:
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        self.sink.messages.append(SentMessage(envelope.mail_from, list(envelope.rcpt_tos), bytes(raw)))
        return "250 Message accepted for delivery"


class SmtpSink:
    def __init__(self, host: str = "127.0.0.1", smtp_port: int = 1025, http_port: int | None = None):
        self.host, self.smtp_port, self.http_port = host, smtp_port, http_port
        self.messages: list[SentMessage] = []
        self.reject: set[str] = set()  # answered 550 (a bounce)
        self.defer: set[str] = set()  # answered 451 (try again later)
        self._server: asyncio.AbstractServer | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> "SmtpSink":
        loop = asyncio.get_running_loop()
        handler = _Handler(self)
        self._server = await loop.create_server(
            lambda: SMTP(handler, hostname="payloop-smtp-sink", decode_data=False), self.host, self.smtp_port)
        if self.http_port is not None:
            self._runner = web.AppRunner(self.http_app())
            await self._runner.setup()
            await web.TCPSite(self._runner, self.host, self.http_port).start()
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._runner is not None:
            await self._runner.cleanup()

    def http_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/messages", self._list)
        app.router.add_get("/messages/{index}", self._one)
        app.router.add_delete("/messages", self._clear)
        return app

    async def _list(self, request: web.Request) -> web.Response:
        to = request.query.get("to")
        items = [m.as_json(i) for i, m in enumerate(self.messages)
                 if to is None or to.lower() in (r.lower() for r in m.rcpt_tos)]
        return web.json_response({"count": len(items), "messages": items})

    async def _one(self, request: web.Request) -> web.Response:
        index = int(request.match_info["index"])
        if not 0 <= index < len(self.messages):
            raise web.HTTPNotFound()
        return web.json_response(self.messages[index].as_json(index))

    async def _clear(self, request: web.Request) -> web.Response:
        self.messages.clear()
        return web.Response(status=204)

    async def _page(self, request: web.Request) -> web.Response:
        rows = "".join(
            f"<tr><td>{i}</td><td>{html.escape(m.received_at.isoformat(timespec='seconds'))}</td>"
            f"<td>{html.escape(', '.join(m.rcpt_tos))}</td>"
            f"<td><a href='/messages/{i}'>{html.escape(str(m.parsed['subject']))}</a></td></tr>"
            for i, m in reversed(list(enumerate(self.messages))))
        page = ("<!doctype html><title>SMTP sink</title><h1>Sent email</h1>"
                f"<p>{len(self.messages)} message(s); JSON at <a href='/messages'>/messages</a></p>"
                f"<table border=1 cellpadding=4><tr><th>#</th><th>received</th><th>to</th><th>subject</th></tr>"
                f"{rows}</table>")
        return web.Response(text=page, content_type="text/html")


async def _serve(host: str, smtp_port: int, http_port: int) -> None:
    sink = await SmtpSink(host, smtp_port, http_port).start()
    print(f"smtp sink: SMTP {host}:{smtp_port}, messages at http://{host}:{http_port}/", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await sink.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m payloop.simulators.smtp_sink", description=__doc__)
    parser.add_argument("--port", type=int, default=8220, help="HTTP port of the page and JSON API")
    parser.add_argument("--smtp-port", type=int, default=1025)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve(args.host, args.smtp_port, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
