"""Where partner webhooks may go: not to loopback, private, link-local or otherwise non-public
addresses (unless the settings allow it, as dev and tests do), so an endpoint URL cannot make the
tenants service call a database, a metadata service or an admin port inside our network.

The URL's host is resolved and every address it resolves to must be public. It is checked when an
endpoint is registered or changed, and again before each delivery, because a name's DNS answer may
change after it was registered.
"""
from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from payloop_tenants.settings import TenantsSettings


class UnsafeDestination(Exception):
    """The URL's host is, or resolves to, an address partners' webhooks may not reach."""


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    return ip.is_global and not ip.is_multicast


async def check_destination(url: str) -> None:
    if TenantsSettings().private_urls_allowed():
        return
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise UnsafeDestination("the URL has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:
        raise UnsafeDestination(f"cannot resolve {host}: {exc}") from None
    for *_, sockaddr in found:
        if not _public(sockaddr[0]):
            raise UnsafeDestination(f"{host} resolves to a non-public address ({sockaddr[0]})")
