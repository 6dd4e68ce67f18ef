"""Which requests the labeling page accepts: same-origin only (no Flask in this module).

A web page open in the same browser can send requests to the labeling server. Three checks keep
it out, in this order:

- `Host` must name the address the server listens on (its port, and its host or, for a loopback
  bind, any of `localhost`, `127.0.0.1`, `[::1]`). A DNS-rebinding page reaches the server under
  its own domain name, so this also stops it reading the labels. A wildcard bind (0.0.0.0, ::)
  accepts any IP address and the loopback names: an IP literal cannot be rebound.
- `Origin`, when the browser sends one, must be `http://` plus such an address: a foreign page's
  requests carry its own origin.
- every state-changing request must have a JSON body (`Content-Type: application/json`), which a
  foreign page can only send after a CORS preflight that this server never grants; a plain form
  or a `text/plain` fetch gets 415.

Extra names (e.g. the machine's DNS name, or `localhost:8080` behind an SSH tunnel) can be allowed
explicitly as "name" (on the served port) or "name:port".
"""

from __future__ import annotations

import ipaddress
import re

from hybrid_jax.labeling.errors import ApiError

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_PORTS = {"http": 80, "https": 443}
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})
JSON_TYPE = "application/json"

_HOST = re.compile(r"(?:\[(?P<v6>[0-9a-f:.]+)\]|(?P<name>[a-z0-9._-]+))(?::(?P<port>[0-9]{1,5}))?")
_ORIGIN = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<host>[^/?#@\s]+)")

Address = tuple  # (lowercase host without brackets, port or None)


def split_host(text: str, default_port: int | None = None) -> Address | None:
    """'name', 'name:port', '1.2.3.4:port' or '[v6]:port' -> (host, port or `default_port`); None if malformed."""
    m = _HOST.fullmatch(text.strip().lower())
    if not m:
        return None
    return m["v6"] or m["name"], int(m["port"]) if m["port"] else default_port


def parse_allowed(entries) -> frozenset:
    """Extra allowed addresses from "name" / "name:port" strings (a bare IPv6 address is one too);
    ValueError names a malformed one. Blank entries are ignored."""
    out = set()
    for entry in entries:
        bare = str(entry).strip().lower().strip("[]")
        if not bare:
            continue
        address = (bare, None) if ":" in bare and _ip(bare) is not None else split_host(str(entry))
        if address is None:
            raise ValueError(f"allowed host {entry!r} is not 'name' or 'name:port'")
        out.add(address)
    return frozenset(out)


def served_address(server_name: str, server_port: str, scheme: str = "http") -> Address:
    """The address the server listens on, from the WSGI SERVER_NAME / SERVER_PORT."""
    port = int(server_port) if str(server_port).isdigit() else DEFAULT_PORTS.get(scheme, 80)
    return str(server_name).strip().lower().strip("[]"), port


def _ip(host: str):
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def address_allowed(address: Address, served: Address, allowed: frozenset = frozenset()) -> bool:
    """Whether a request for `address` (host, port) reaches this server under an accepted name."""
    host, port = address
    s_host, s_port = served
    if (host, port) in allowed:
        return True
    if port != s_port:
        return False
    if host == s_host or (host, None) in allowed:
        return True
    if s_host in WILDCARD_BINDS:
        return host in LOOPBACK_NAMES or _ip(host) is not None
    s_ip = _ip(s_host)
    return (s_host == "localhost" or (s_ip is not None and s_ip.is_loopback)) and host in LOOPBACK_NAMES


def origin_allowed(origin: str, scheme: str, served: Address, allowed: frozenset = frozenset()) -> bool:
    """Whether an `Origin` header is this page's own origin (same scheme, accepted address)."""
    m = _ORIGIN.fullmatch(origin.strip().lower())
    if not m or m["scheme"] != scheme or scheme not in DEFAULT_PORTS:
        return False
    address = split_host(m["host"], DEFAULT_PORTS[scheme])
    return address is not None and address_allowed(address, served, allowed)


def _show(address: Address) -> str:
    host, port = address
    return f"{'[' + host + ']' if ':' in host else host}:{port}"


def refusal(*, method: str, host: str | None, origin: str | None, content_type: str, scheme: str,
            served: Address, allowed: frozenset = frozenset(), changes_state: bool | None = None
            ) -> ApiError | None:
    """The ApiError (403 or 415) for a request this page must not serve, or None to serve it.

    `host`/`origin` are the raw headers (None when absent), `content_type` the media type without
    parameters; `changes_state` defaults to "the method is not GET/HEAD/OPTIONS".
    """
    here = f"{scheme}://{_show(served)}"
    advice = (f"Open the page at {here}/ (or a localhost spelling of it); to reach it under another "
              "name or through a tunnel, start it with --allow-host NAME[:PORT].")
    if host is not None:
        address = split_host(host, DEFAULT_PORTS.get(scheme))
        if address is None or not address_allowed(address, served, allowed):
            return ApiError(403, f"refused: this labeling page is served at {here}, but the request "
                                 f"names host {host!r} (another site or a DNS-rebinding page?). {advice}")
    if origin is not None and not origin_allowed(origin, scheme, served, allowed):
        return ApiError(403, f"refused: the request comes from the web page {origin!r}, not from this "
                             f"labeling page at {here}; other sites may not read or change the labels. {advice}")
    if changes_state is None:
        changes_state = method.upper() not in SAFE_METHODS
    if changes_state and content_type.lower() != JSON_TYPE:
        return ApiError(415, f"the request body must be JSON (Content-Type: {JSON_TYPE}), got "
                             f"{content_type or 'no Content-Type'!r}; the labeling page accepts only JSON "
                             "so that other web pages cannot send it answers")
    return None
