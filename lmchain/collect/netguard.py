"""Where the crawler may connect: public addresses only, unless the deployer opens more.

Every request the crawler makes (seeds, links, every redirect hop, robots.txt, sitemaps) is
checked AFTER DNS resolution: each address the host resolves to must be public. Loopback,
private (RFC 1918), link-local, unique-local, carrier-grade NAT, unspecified, multicast,
reserved and cloud metadata addresses are refused, and a host with one such address among
public ones is refused whole (an attacker's DNS may mix them). IPv4 addresses wrapped in IPv6
(``::ffff:a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``) are judged by the IPv4 inside.

Your own sites need an explicit opt-in: ``collect.crawl.allow_private_networks`` opens every
non-public address except cloud metadata; ``collect.crawl.allow_networks`` opens only the listed
CIDRs, addresses or host names, each optionally with a port (``10.0.0.0/8``,
``127.0.0.1:8080``, ``[::1]:8080``, ``wiki.intranet:8443``). A metadata address or name is open
only when an allow_networks entry names it.

DNS rebinding: a host is resolved once per crawl, and what was checked is what is connected to.
:class:`NetGuard` caches the checked addresses of each host, and the crawler's HTTP transport
connects through :meth:`NetGuard.addresses` (see ``fetch.PinnedBackend``), which returns those
same cached addresses, never the result of a second lookup. A name that answers a public address
to the check and 127.0.0.1 to the connect therefore cannot reach anything. The client ignores
proxy settings from the environment (``trust_env=False``): through a proxy the check would
judge the proxy, not the site.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Instance metadata services: credentials live behind these, so even allow_private_networks
# leaves them closed. (AWS, GCP, Azure, OpenStack: 169.254.169.254; AWS IPv6; ECS task role;
# Alibaba.)
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "169.254.170.2", "100.100.100.200")
)
METADATA_NAMES = frozenset(
    {"metadata.google.internal", "metadata.goog", "metadata", "instance-data", "instance-data.ec2.internal"}
)
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
OPT_IN = (
    "collect.crawl.allow_private_networks or collect.crawl.allow_networks (CLI: --allow-private-networks, "
    "--allow-network)"
)


@dataclass(frozen=True)
class AllowRule:
    """One ``allow_networks`` entry: a network or a host name, and maybe a port."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    host: str | None
    port: int | None

    def matches(self, host: str, ip: IPAddress, port: int) -> bool:
        if self.port is not None and port != self.port:
            return False
        if self.host is not None:
            return host == self.host
        if self.network is None:  # parse_allow gives every rule a host or a network
            return False
        return ip in self.network or _unwrap(ip) in self.network


def parse_allow(entry: str) -> AllowRule:
    """``10.0.0.0/8``, ``127.0.0.1``, ``127.0.0.1:8080``, ``::1``, ``[::1]:8080``, ``host``, ``host:8443``."""
    text = entry.strip().lower().rstrip(".")
    port: str | None = None
    if text.startswith("["):
        addr, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"'{entry}': expected [IPv6] or [IPv6]:PORT")
            port = rest[1:]
    elif text.count(":") == 1:
        addr, port = text.split(":")
    else:
        addr = text
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"'{entry}': the port must be a number from 1 to 65535")
    number = int(port) if port is not None else None
    try:
        return AllowRule(ipaddress.ip_network(addr, strict=False), None, number)
    except ValueError:
        pass
    if not _HOSTNAME.match(addr):
        raise ValueError(f"'{entry}' is neither a CIDR, an IP address nor a host name (each with an optional :PORT)")
    return AllowRule(None, addr, number)


def _unwrap(ip: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped, NAT64 or 6to4 IPv6 address; else ``ip``."""
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if ip.sixtofour is not None:
            return ip.sixtofour
    return ip


def address_kind(ip: IPAddress) -> str | None:
    """What makes ``ip`` non-public ("loopback", "private", ...), or None for a public address."""
    ip = _unwrap(ipaddress.ip_address(str(ip).split("%")[0]))
    if ip in METADATA_ADDRESSES:
        return "cloud metadata"
    checks = [
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("carrier-grade NAT", ip.version == 4 and ip in _CGNAT),
        ("unique-local", ip.version == 6 and ip in _UNIQUE_LOCAL),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved or not ip.is_global),
    ]
    return next((kind for kind, hit in checks if hit), None)


class Refused(Exception):
    """The host may not be connected to; the message is the crawl's failure reason."""


class NetGuard:
    """Resolves hosts once per crawl and decides which (host, port) the crawl may connect to."""

    def __init__(self, allow_private_networks: bool = False, allow_networks: Sequence[str] = ()):
        self.allow_private = allow_private_networks
        self.rules = [parse_allow(e) for e in allow_networks]
        self._lookups: dict[str, asyncio.Future[list[str]]] = {}
        self.lookups = 0  # DNS queries made (IP literals need none)

    async def check(self, url: str) -> str | None:
        """Why ``url`` must not be requested (its host's addresses), or None."""
        parts = urlsplit(url)
        try:
            await self.addresses(parts.hostname or "", parts.port or _DEFAULT_PORTS.get(parts.scheme, 0))
        except Refused as exc:
            return str(exc)
        return None

    async def addresses(self, host: str, port: int) -> list[str]:
        """The checked addresses to connect to for ``host:port``; raises :class:`Refused`.

        The transport connects to exactly these (the same cached lookup the check used)."""
        host = host.lower().rstrip(".").strip("[]")
        if host in METADATA_NAMES and not self._named(host, port):
            raise Refused(
                f"blocked_address: {host} is a cloud metadata service name; refused (only an "
                "allow_networks entry naming it opens it)"
            )
        addresses = await self._resolve(host)
        for address in addresses:
            if (reason := self._refusal(host, address, port)) is not None:
                raise Refused(reason)
        return addresses

    def _named(self, host: str, port: int) -> bool:
        return any(r.host == host and r.port in (None, port) for r in self.rules)

    def _refusal(self, host: str, address: str, port: int) -> str | None:
        ip = ipaddress.ip_address(address.split("%")[0])
        kind = address_kind(ip)
        if kind is None or any(rule.matches(host, ip, port) for rule in self.rules):
            return None
        if self.allow_private and kind != "cloud metadata":
            return None
        where = host if host == address else f"{host} resolves to {address}, which"
        if kind == "cloud metadata":
            return (
                f"blocked_address: {where} is a cloud metadata address; refused (only an allow_networks "
                "entry naming it opens it)"
            )
        return (
            f"blocked_address: {where} is a {kind} address; the crawler refuses non-public addresses "
            f"by default (your own sites: {OPT_IN})"
        )

    async def _resolve(self, host: str) -> list[str]:
        if host not in self._lookups:  # the first caller resolves; concurrent callers await the same future
            self._lookups[host] = asyncio.ensure_future(self._lookup(host))
        return await self._lookups[host]

    async def _lookup(self, host: str) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]  # an IP literal: nothing to resolve
        except ValueError:
            pass
        self.lookups += 1
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError, OSError) as exc:
            raise Refused(f"dns_error: cannot resolve {host}: {exc}"[:300]) from None
        # sockaddr[0] is the address text for both families (typeshed types IPv6's tuple loosely)
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addresses:
            raise Refused(f"dns_error: {host} has no address")
        return addresses
