"""Where webhooks may be sent: an allow-list checked on the address actually dialled.

A twin sends requests to URLs its callers choose, so it is an SSRF vector. The guard resolves the
target host once, refuses the target if *any* resolved address is outside the allow-list, and
returns the checked address; the dispatcher then connects to that literal address (the URL's host
replaced by it, the original name kept in the ``Host`` header and as the TLS SNI/verification
name). Nothing resolves the name a second time, so DNS rebinding cannot swap in another address
between check and connect.

Link-local (which holds the cloud metadata services), multicast, broadcast, unspecified and the
known metadata addresses are refused even when a listed network covers them, and so are IPv6
addresses that embed one of them for a translator (IPv4-mapped, NAT64, 6to4, Teredo).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import httpx2

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]

# Documented defaults for outbound delivery (the dispatcher and outbox use these).
DEFAULT_ALLOWED: Final = ("127.0.0.0/8", "::1/128")  # the system under test is usually local
MAX_PAYLOAD_BYTES: Final = 256 * 1024  # request body of one webhook
MAX_RESPONSE_BYTES: Final = 4 * 1024  # response body kept in the delivery log
MAX_LOGGED_BODY_BYTES: Final = 16 * 1024  # request body kept in the delivery log
MAX_PENDING_PER_CONNECTION: Final = 10_000  # pending deliveries before enqueue is refused
MAX_ATTEMPTS: Final = 8  # the Standard Webhooks schedule's length
DEFAULT_TIMEOUT: Final = 15.0  # seconds for a whole attempt (Svix cloud uses 15 s)

ALWAYS_REFUSED: Final[tuple[IPNetwork, ...]] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.0.0/16",  # link-local, incl. 169.254.169.254 (AWS/GCP/Azure metadata)
        "fe80::/10",  # IPv6 link-local
        "fd00:ec2::254/128",  # AWS metadata over IPv6
        "100.100.100.200/32",  # Alibaba Cloud metadata
        "168.63.129.16/32",  # Azure wire server
        "0.0.0.0/8",  # "this network": 0.0.0.0 dials the local host on Linux
        "::/128",
        "224.0.0.0/4",  # multicast
        "ff00::/8",
        "255.255.255.255/32",
    )
)


class TargetRefused(Exception):
    """The target may not be dialled; ``error_class`` is the delivery log's classification."""

    def __init__(self, error_class: str, reason: str) -> None:
        super().__init__(reason)
        self.error_class = error_class  # "invalid-url", "dns" or "refused-by-allow-list"
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL and the one address to connect to."""

    url: httpx2.URL
    address: str

    @property
    def dial_url(self) -> httpx2.URL:
        return _dial(self.url, self.address)

    @property
    def host_header(self) -> str:
        return self.url.netloc.decode("ascii")

    @property
    def server_hostname(self) -> str | None:
        # TLS must name (and verify) the original host, not the literal address dialled.
        return self.url.host if self.url.scheme == "https" else None


async def system_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class AllowList:
    """Networks webhooks may be sent to (loopback by default)."""

    def __init__(
        self, networks: Sequence[str] = DEFAULT_ALLOWED, *, resolver: Resolver | None = None
    ) -> None:
        if isinstance(networks, str):
            raise TypeError("networks must be a list of CIDR strings, not one string")
        self.networks: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in networks
        )
        self._resolve = resolver or system_resolver
        # Verdicts on addresses and on URLs naming one (no lookup, so nothing can change them):
        # every delivery to an endpoint checks the same ones.
        self._verdicts: dict[str, bool] = {}
        self._literal_targets: dict[str, Target] = {}

    def allows(self, address: str | IPAddress) -> bool:
        if isinstance(address, str):
            verdict = self._verdicts.get(address)
            if verdict is None:
                if len(self._verdicts) >= _KEPT:
                    self._verdicts.clear()
                verdict = self._verdicts[address] = self._judge(ipaddress.ip_address(address))
            return verdict
        return self._judge(address)

    def _judge(self, address: IPAddress) -> bool:
        ip = _plain(address)
        for judged in (ip, *_embedded(ip)):
            if any(judged in net for net in ALWAYS_REFUSED if net.version == judged.version):
                return False
        return any(ip in net for net in self.networks if net.version == ip.version)

    async def check(self, url: str) -> Target:
        """The target to dial for ``url``; raises :class:`TargetRefused`."""
        known = self._literal_targets.get(url)
        if known is not None:
            return known
        parsed = _parse(url)
        addresses = await self._addresses(parsed)
        refused = [a for a in addresses if not self.allows(a)]
        if refused:
            raise TargetRefused(
                "refused-by-allow-list",
                f"{parsed.host} resolves to {', '.join(refused)}, outside the allowed networks",
            )
        target = Target(parsed, addresses[0])
        if _is_address(parsed.host):
            if len(self._literal_targets) >= _KEPT:
                self._literal_targets.clear()
            self._literal_targets[url] = target
        return target

    async def _addresses(self, url: httpx2.URL) -> list[str]:
        host = url.host
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            found = await self._resolve(host, port)
        except (OSError, UnicodeError) as exc:
            raise TargetRefused("dns", f"cannot resolve {host}: {exc}") from None
        if not found:
            raise TargetRefused("dns", f"{host} resolves to no address")
        return found


_KEPT: Final = 1024  # verdicts kept per allow-list


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check_url(url: str) -> httpx2.URL:
    """``url`` parsed, if it is an absolute http(s) URL; raises :class:`TargetRefused`."""
    return _parse(url)


@functools.lru_cache(maxsize=1024)
def _dial(url: httpx2.URL, address: str) -> httpx2.URL:
    return url.copy_with(host=address)


# Cached (URLs are immutable): every delivery to an endpoint parses the same URL.
@functools.lru_cache(maxsize=1024)
def _parse(url: str) -> httpx2.URL:
    import httpx2  # its URL parser only: not at start-up, where no webhook is sent

    try:
        parsed = httpx2.URL(url)
    except (httpx2.InvalidURL, TypeError, ValueError) as exc:
        raise TargetRefused("invalid-url", f"not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise TargetRefused("invalid-url", f"only http and https URLs are allowed, not {url!r}")
    if not parsed.host:
        raise TargetRefused("invalid-url", f"the URL has no host: {url!r}")
    return parsed


_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix


def _embedded(ip: IPAddress) -> tuple[ipaddress.IPv4Address, ...]:
    """IPv4 addresses an IPv6 address reaches through a translator (NAT64, 6to4, Teredo): an
    allow-list as wide as ``::/0`` must not open a way to the metadata services."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return ()
    found: list[ipaddress.IPv4Address] = []
    if ip in _NAT64:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    return tuple(found)


def _plain(ip: IPAddress) -> IPAddress:
    # ::ffff:169.254.169.254 reaches the IPv4 address; judge it as that.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
