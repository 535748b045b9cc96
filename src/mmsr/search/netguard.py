"""Which network addresses the page fetcher may connect to, enforced at connect time.

A search result URL is chosen by whoever wrote the web page, so reading it must not become a
way into our own network (SSRF): no loopback, private, link-local, multicast, reserved or
cloud-metadata address, in IPv4 or IPv6 (IPv4-mapped, 6to4, Teredo and NAT64 forms are
unwrapped and checked too).

The check runs inside the HTTP client's connection step (`GuardedTransport`): the host is
resolved once, every resolved address is checked, and the socket connects to the checked
address itself. Checking a name and then letting the client resolve it again would leave a
window for DNS rebinding; this way there is none. Every redirect hop opens its connection
through the same step, so each hop is checked too.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import httpcore
import httpx

from mmsr.search.errors import BackendUnavailable, RefusedURL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]  # (host, port) -> IP address strings

# Cloud instance-metadata endpoints, refused even when an allow-list would let them through.
# Most are link-local or private anyway; Azure's wireserver (168.63.129.16) is a public
# address, so it needs naming.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
        "169.254.170.2",  # AWS ECS task metadata
        "168.63.129.16",  # Azure wireserver
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
        "fd00:ec2::254",  # AWS over IPv6
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address tunnels to (6to4, Teredo)."""
    inner: list[ipaddress.IPv4Address] = []
    if ip.sixtofour is not None:
        inner.append(ip.sixtofour)
    if ip.teredo is not None:
        inner.extend(ip.teredo)
    return inner


def refusal_reason(ip: IPAddress) -> str | None:
    """Why a connection to `ip` is refused by default, or None if it is public unicast."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv6Address) and ip in _NAT64:
        # DNS64 networks map every IPv4 site into 64:ff9b::/96: judge the embedded address.
        inner = refusal_reason(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        return f"tunnels to a {inner}" if inner else None
    if ip in METADATA_ADDRESSES:
        return "cloud metadata address"
    for label, flag in (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("unspecified", ip.is_unspecified),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    ):
        if flag:
            return f"{label} address"
    if isinstance(ip, ipaddress.IPv6Address):
        for inner in _embedded_ipv4(ip):
            reason = refusal_reason(inner)
            if reason:
                return f"tunnels to a {reason}"
    if not ip.is_global:
        return "address not globally routable"
    return None


@dataclass(frozen=True)
class AddressPolicy:
    """Default: public unicast only. `allow_networks` opens given CIDRs (an intranet, or a
    test's fake server on 127.0.0.1); metadata addresses stay refused regardless."""

    allow_networks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for cidr in self.allow_networks:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as err:
                raise ValueError(f"AddressPolicy: bad allow_networks entry {cidr!r}") from err

    def refusal(self, address: str) -> str | None:
        """Why `address` is refused under this policy, or None when it may be used."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
        except ValueError:
            return f"not an IP address: {address!r}"
        canonical = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        canonical = canonical or ip
        if canonical in METADATA_ADDRESSES:
            return "cloud metadata address"
        for cidr in self.allow_networks:
            if canonical in ipaddress.ip_network(cidr, strict=False):
                return None
        return refusal_reason(canonical)


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for `host` (IPv4 and IPv6)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise BackendUnavailable(f"cannot resolve host {host!r}: {err}", backend="fetch") from err
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def checked_addresses(host: str, port: int, policy: AddressPolicy, resolver: Resolver) -> list[str]:
    """Resolve `host` and return its addresses, or raise RefusedURL if *any* is refused
    (a name that also points inside our network is refused as a whole)."""
    host = host.strip("[]")
    addresses = resolver(host, port)
    if not addresses:
        raise BackendUnavailable(f"host {host!r} resolved to no address", backend="fetch")
    for address in addresses:
        reason = policy.refusal(address)
        if reason:
            shown = host if host == address else f"{host} ({address})"
            raise RefusedURL(f"refused to connect to {shown}: {reason}", backend="fetch")
    return addresses


class _GuardedNetworkBackend(httpcore.SyncBackend):
    """httpcore's socket backend, but it connects only to policy-checked addresses."""

    def __init__(self, policy: AddressPolicy, resolver: Resolver):
        self.policy = policy
        self.resolver = resolver

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = checked_addresses(host, port, self.policy, self.resolver)
        last_error: Exception | None = None
        for address in addresses:
            try:
                # TLS still verifies the certificate against the URL's host name: httpcore
                # passes that as server_hostname, independent of the address used here.
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as err:
                last_error = err
        assert last_error is not None
        raise last_error

    def connect_unix_socket(self, *args: typing.Any, **kwargs: typing.Any) -> typing.NoReturn:
        raise RefusedURL("refused: unix sockets are not web pages", backend="fetch")


class GuardedTransport(httpx.HTTPTransport):
    """An httpx transport whose every TCP connection goes through `AddressPolicy`.

    Environment proxies are ignored on purpose: through a proxy we would check the proxy's
    address, not the page's.
    """

    def __init__(
        self,
        policy: AddressPolicy | None = None,
        resolver: Resolver | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 20,
    ):
        super().__init__(trust_env=False)
        self.policy = policy or AddressPolicy()
        self.network_backend = _GuardedNetworkBackend(self.policy, resolver or system_resolver)
        # httpx.HTTPTransport has no network-backend argument; the pool it builds is replaced
        # by an identical one that uses the guarded backend. tests/search/test_search_fetch.py
        # proves the guard is on the path (a name resolving to loopback is refused).
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(trust_env=False),
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=5.0,
            network_backend=self.network_backend,
        )
