"""Per-connection base URLs: expand a template from a connection's values, and refuse internal hosts.

A plugin declares a base URL as a template over its connection's settings and credentials::

    "https://{subdomain}.zendesk.com"                 # a placeholder in the host: one DNS label
    "https://api.atlassian.com/ex/jira/{cloud_id}"    # a placeholder in the path: one encoded segment
    "{host_url}/api/v3"                               # a leading placeholder: a whole http(s) URL

``expand_base_url`` fills it in and validates every value, raising ``InputError`` naming the field, so a
user's ``subdomain`` of ``evil.com/x?`` cannot change the host, and a ``cloud_id`` of ``../../x`` cannot
climb out of its path segment.

``check_public_url`` is the guard against server-side request forgery: a URL whose host a user chose
(a whole-URL field, a host label under a wildcard domain) must not reach the API server's own network,
because every request carries the connection's credentials and its answer comes back to the user. It
refuses loopback, link-local (cloud metadata at 169.254.169.254), private, unspecified, multicast,
reserved and other non-global addresses, checking IP literals directly and names through
``socket.getaddrinfo`` (injectable). An operator's ``HISSUNO_<PLUGIN>_<NAME>_URL`` override is trusted:
the runtime passes ``allow_private=True`` for it, so a self-hosted provider or a local fake still works.

The check runs when the URL is built, not at connect time of each request: a name that resolves to a
public address now and to a private one later (DNS rebinding) is not caught here.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import SplitResult, quote, urlsplit

from .errors import InputError, ProviderUnavailable
from .redaction import sanitize_url

Resolver = Callable[[str, int], Iterable[str]]
"""``resolve(host, port)`` -> the IP addresses a connection to ``host`` may reach."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.IGNORECASE)
_TEMPLATE = re.compile(r"(?P<scheme>https?)://(?P<authority>[^/?#]*)(?P<rest>.*)", re.DOTALL)


def template_fields(template: str) -> tuple[str, ...]:
    """The placeholder names of a base URL template, in order of first use."""
    return tuple(dict.fromkeys(_PLACEHOLDER.findall(template)))


def expand_base_url(template: str, values: Mapping[str, object]) -> str:
    """Fill a base URL template from a connection's values, validating each by where it lands.

    Args:
        template: ``https://{subdomain}.zendesk.com``, ``https://api.atlassian.com/ex/jira/{cloud_id}``,
            ``{host_url}`` or ``{host_url}/api/v3``; placeholders may appear in the host (as one DNS
            label or part of one), in the path (as one segment, percent-encoded), or at the very start
            (a whole URL); nowhere else.
        values: The connection's settings and credentials by field name; text (or an int), with
            surrounding whitespace ignored.

    Returns:
        The base URL, without a trailing slash.

    Raises:
        InputError: A value is missing or empty, is not one DNS label where the host needs one, is
            ``.``/``..`` where a path segment needs one, or is not an http(s) URL with a host where a
            whole URL is needed; ``field`` names it.
        ValueError: The template itself is malformed (a plugin bug, not user input).
    """
    leading = re.match(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", template)
    if leading is not None:
        name = leading.group(1)
        rest = template[leading.end() :]
        if rest and not rest.startswith("/"):
            msg = f"base URL template {template!r}: a leading placeholder must be followed by '/' or nothing"
            raise ValueError(msg)
        _check_literal_parts(template, rest)
        base = _whole_url(name, _value(values, name))
        return (base + _expand_path(rest, values)).rstrip("/")

    match = _TEMPLATE.fullmatch(template)
    if match is None:
        msg = f"base URL template {template!r}: expected http(s)://host[/path] or a leading {{field}}"
        raise ValueError(msg)
    authority, rest = match.group("authority"), match.group("rest")
    host, sep, port = authority.partition(":")
    if "@" in authority or _PLACEHOLDER.search(port) or not host:
        msg = f"base URL template {template!r}: placeholders may fill the host name only, not user info or port"
        raise ValueError(msg)
    _check_literal_parts(template, rest)

    def label(m: re.Match[str]) -> str:
        name = m.group(1)
        value = _value(values, name)
        if not _DNS_LABEL.fullmatch(value):
            msg = (
                f"{name}: expected one DNS label (letters, digits and inner hyphens, at most 63 characters),"
                f" like 'acme'; got {_shown(value)!r}"
            )
            raise InputError(msg, field=name)
        return value

    filled_host = _PLACEHOLDER.sub(label, host)
    names = _PLACEHOLDER.findall(host)
    if names and not all(_DNS_LABEL.fullmatch(part) for part in filled_host.split(".")):
        # Each value is a valid label, but joined with the template's text a label ran past 63.
        msg = f"{names[0]}: the host {_shown(filled_host)!r} is not a valid host name"
        raise InputError(msg, field=names[0])
    return f"{match.group('scheme')}://{filled_host}{sep}{port}{_expand_path(rest, values)}".rstrip("/")


def host_fields(template: str) -> tuple[str, ...]:
    """Placeholders that decide the host of ``template`` (a leading whole URL, or labels in the host)."""
    leading = re.match(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", template)
    if leading is not None:
        return (leading.group(1),)
    match = _TEMPLATE.fullmatch(template)
    if match is None:
        return ()
    return template_fields(match.group("authority"))


def build_base_url(
    template: str,
    values: Mapping[str, object],
    *,
    allow_private: bool = False,
    resolve: Resolver | None = None,
) -> str:
    """``expand_base_url``, then ``check_public_url`` when a value chose the host.

    A template whose host is fixed (``https://api.atlassian.com/ex/jira/{cloud_id}``) is the plugin
    author's, and is not resolved.

    Raises:
        InputError: See ``expand_base_url`` and ``check_public_url``; ``field`` names the host field.
        ProviderUnavailable: The host name could not be resolved right now (a temporary DNS failure).
    """
    url = expand_base_url(template, values)
    fields = host_fields(template)
    if fields:
        check_public_url(url, field=fields[0], allow_private=allow_private, resolve=resolve)
    return url


def resolve_host(host: str, port: int) -> list[str]:
    """The addresses ``socket.getaddrinfo`` gives for ``host`` (the default ``Resolver``)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def address_category(address: IPAddress) -> str | None:
    """Why ``address`` is not a public destination (``"loopback"``, ``"private"``, ...), or ``None``.

    An IPv4 address embedded in IPv6 (``::ffff:127.0.0.1``, 6to4, Teredo) is judged as itself.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is not None:
            return address_category(embedded)
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        # Shared address space (100.64.0.0/10, where some clouds put metadata services) and the like.
        ("non-public", not address.is_global),
    )
    return next((name for name, hit in checks if hit), None)


def check_public_url(
    url: str,
    *,
    field: str,
    allow_private: bool = False,
    resolve: Resolver | None = None,
) -> str:
    """Refuse a URL whose host is, or resolves to, an internal address.

    Args:
        url: The final base URL.
        field: The connection field that chose the host, named in the error.
        allow_private: The URL is the operator's ``HISSUNO_<PLUGIN>_<NAME>_URL`` override; skip the
            address check (the URL must still be http(s) with a host).
        resolve: ``resolve(host, port)`` -> addresses; defaults to ``resolve_host`` (``getaddrinfo``).

    Returns:
        ``url`` unchanged.

    Raises:
        InputError: The URL is not http(s) with a host, its host cannot be resolved, or one of its
            addresses is loopback, link-local, private, unspecified, multicast, reserved or otherwise
            not global.
        ProviderUnavailable: The resolver failed temporarily (``EAI_AGAIN``); worth retrying.
    """
    parts = _split(url, field)
    host = parts.hostname or ""
    if allow_private:
        return url
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses: list[IPAddress] = [ipaddress.ip_address(host)]
    except ValueError:
        addresses = _resolve(host, port, field, resolve or resolve_host)
    for address in addresses:
        category = address_category(address)
        if category is not None:
            via = "" if str(address) == host else f" resolves to {address}, which"
            msg = (
                f"{field}: the host {host!r}{via} is a {category} address; refusing to send a connection's"
                " requests into an internal network (an operator can point at one on purpose with"
                " HISSUNO_<PLUGIN>_<NAME>_URL)"
            )
            raise InputError(msg, field=field)
    return url


def _resolve(host: str, port: int, field: str, resolve: Resolver) -> list[IPAddress]:
    try:
        found = list(resolve(host, port))
    except socket.gaierror as exc:
        if exc.errno == socket.EAI_AGAIN:
            msg = f"{field}: could not resolve {host!r} right now (temporary DNS failure)"
            raise ProviderUnavailable(msg) from exc
        msg = f"{field}: the host {host!r} cannot be resolved"
        raise InputError(msg, field=field) from exc
    except (UnicodeError, OSError) as exc:
        msg = f"{field}: the host {host!r} cannot be resolved"
        raise InputError(msg, field=field) from exc
    addresses: list[IPAddress] = []
    for raw in found:
        try:
            addresses.append(ipaddress.ip_address(raw.split("%", 1)[0]))
        except ValueError as exc:
            msg = f"{field}: the host {host!r} resolved to something that is not an IP address"
            raise InputError(msg, field=field) from exc
    if not addresses:
        msg = f"{field}: the host {host!r} cannot be resolved"
        raise InputError(msg, field=field)
    return addresses


def _value(values: Mapping[str, object], name: str) -> str:
    raw = values.get(name)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        msg = f"{name}: required to build the provider's URL"
        raise InputError(msg, field=name)
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        msg = f"{name}: expected text; got {type(raw).__name__}"
        raise InputError(msg, field=name)
    return str(raw).strip()


def _whole_url(name: str, value: str) -> str:
    parts = _split(value, name)
    if parts.query or parts.fragment or "?" in value or "#" in value:
        msg = f"{name}: expected a base URL without query or fragment; got {_shown(_sanitized(value))!r}"
        raise InputError(msg, field=name)
    return value.rstrip("/")


def _split(url: str, field: str) -> SplitResult:
    """Parse an http(s) URL with a host and no user info, or raise ``InputError`` naming ``field``."""
    expected = f"{field}: expected an http(s) URL with a host, like 'https://github.example.com'"
    if not url or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        msg = f"{expected}; got {_shown(_sanitized(url))!r}"
        raise InputError(msg, field=field)
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a malformed port
    except ValueError as exc:
        msg = f"{expected}; got a malformed URL"
        raise InputError(msg, field=field) from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        msg = f"{expected}; got {_shown(_sanitized(url))!r}"
        raise InputError(msg, field=field)
    if "@" in parts.netloc:
        msg = f"{field}: expected a URL without a user name or password"
        raise InputError(msg, field=field)
    return parts


def _sanitized(url: str) -> str:
    try:
        return sanitize_url(url)
    except ValueError:
        return "<unparseable>"


def _shown(value: str, limit: int = 80) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _check_literal_parts(template: str, rest: str) -> None:
    path = re.split(r"[?#]", rest, maxsplit=1)
    if len(path) > 1 and _PLACEHOLDER.search(path[1]):
        msg = f"base URL template {template!r}: placeholders may not appear in the query or fragment"
        raise ValueError(msg)
    if _PLACEHOLDER.sub("", template).count("{") or _PLACEHOLDER.sub("", template).count("}"):
        msg = f"base URL template {template!r}: unbalanced or invalid placeholder"
        raise ValueError(msg)
    for segment in path[0].split("/"):
        if _PLACEHOLDER.search(segment) and _PLACEHOLDER.fullmatch(segment) is None:
            msg = f"base URL template {template!r}: a path placeholder must be a whole segment ({segment!r})"
            raise ValueError(msg)


def _expand_path(rest: str, values: Mapping[str, object]) -> str:
    def segment(m: re.Match[str]) -> str:
        name = m.group(1)
        value = _value(values, name)
        if value in (".", ".."):
            msg = f"{name}: expected an identifier; got {value!r}"
            raise InputError(msg, field=name)
        return quote(value, safe="")

    return _PLACEHOLDER.sub(segment, rest)
