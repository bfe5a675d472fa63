"""Where a subscription may POST: SUBSCRIPTION_ALLOWED_HOSTS entries `host[:port]`, checked
when it is created, resumed, and before every delivery (the list may have narrowed since).

The URL is parsed by yarl, the parser aiohttp sends with, so that what is checked is what is
called. A bare entry allows ports 80 and 443 only; an IP literal of a loopback, link-local,
private or otherwise internal range is allowed only by an entry naming that address, never by
a pattern; a number written in any other form than dotted decimal (`2130706433`, `0x7f.1`)
or a port written with a leading zero is refused, since resolvers read them differently.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import socket

from yarl import URL

from service.config import ANY_PORT, PORT, split_entry

MAX_URL = 2048
DEFAULT_PORTS = frozenset({80, 443})
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetRefusedError(Exception):
    """A subscription URL that may not be called; `code` is the API's error code."""

    def __init__(self, code: str, problem: str) -> None:
        super().__init__(problem)
        self.code = code


def check_target(url: object, allowed: frozenset[str]) -> str:
    """The URL if a subscription may POST to it; else TargetRefusedError saying why."""
    parsed = _parse(url)
    host, port = parsed.host or "", _port(parsed)
    if not allowed:
        raise TargetRefusedError(
            "host_not_allowed",
            "no subscription can be made until the operator sets SUBSCRIPTION_ALLOWED_HOSTS",
        )
    if not any(allows(entry, host, port) for entry in allowed):
        shown = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
        raise TargetRefusedError(
            "host_not_allowed",
            f"{shown!r} is not in SUBSCRIPTION_ALLOWED_HOSTS (a bare host allows ports 80, 443)",
        )
    return str(url)


def allows(entry: str, host: str, port: int) -> bool:
    """Whether one `host[:port]` entry admits this host and port."""
    pattern, entry_port = split_entry(entry)
    if entry_port != ANY_PORT and port not in (
        DEFAULT_PORTS if entry_port is None else {entry_port}
    ):
        return False
    address = _address(host)
    if address is not None and internal(address):
        # Only the address itself, listed as such: no pattern reaches the inside.
        return _address(pattern) == address
    return fnmatch.fnmatchcase(host, pattern.lower())


def internal(address: IpAddress) -> bool:
    """Loopback, link-local, private, unspecified, reserved or multicast: not the internet."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return internal(address.ipv4_mapped)
    return not address.is_global or address.is_multicast


def _parse(url: object) -> URL:
    invalid = TargetRefusedError(
        "invalid_url", f"url must be an http:// or https:// URL of at most {MAX_URL} characters"
    )
    if not isinstance(url, str) or len(url) > MAX_URL:
        raise invalid
    try:
        parsed = URL(url)
        parsed.port  # noqa: B018  (raises ValueError for a port out of range)
    except (ValueError, TypeError):
        raise TargetRefusedError(
            "invalid_url", "url is not a URL (a port is from 1 to 65535)"
        ) from None
    if parsed.scheme not in ("http", "https") or not parsed.host or not parsed.is_absolute():
        raise TargetRefusedError(
            "invalid_url", "url must be an http:// or https:// URL with a host"
        )
    if parsed.user is not None or parsed.password is not None:
        raise TargetRefusedError("invalid_url", "url must not carry a user or password")
    if _address(parsed.host) is None and _numeric(parsed.host):
        raise TargetRefusedError("invalid_url", "an IPv4 address must be in dotted decimal")
    return parsed


def _port(parsed: URL) -> int:
    """The port the POST goes to; one written oddly (`019222`, `0`) is refused."""
    if parsed.explicit_port is None:
        return 80 if parsed.scheme == "http" else 443
    written = (parsed.raw_authority or "").rpartition(":")[2]
    if not PORT.fullmatch(written) or int(written) != parsed.explicit_port:
        raise TargetRefusedError("invalid_url", "the port must be a number from 1 to 65535")
    return parsed.explicit_port


def _address(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _numeric(host: str) -> bool:
    """A host the C resolver reads as an IPv4 address although it is not dotted decimal."""
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return True
