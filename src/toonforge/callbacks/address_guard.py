"""Decide whether a callback URL may be contacted, and pin the address that was checked.

A callback URL is chosen by the API client, so without this check anyone holding an API key
could make the server POST to its own private network or to a cloud metadata service (SSRF).
The check resolves the host once and returns the addresses it approved; the sender connects
to one of those addresses, never to a fresh lookup, so a DNS answer that changes between the
check and the connection (DNS rebinding) cannot redirect the request.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOW_PRIVATE_ENV = "TOONFORGE_CALLBACK_ALLOW_PRIVATE"
_MAX_URL_LENGTH = 2048
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST_NAME = re.compile(r"[A-Za-z0-9_.-]+")  # after IDNA encoding; IPv4 forms fit too

# Instance metadata services hand out cloud credentials: refused even when private addresses
# are allowed, since no legitimate callback receiver lives there.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean...
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.170.23",  # AWS EKS pod identity
        "100.100.100.200",  # Alibaba Cloud
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::23",  # AWS EKS pod identity over IPv6
    )
)

_SHARED_ADDRESS_SPACE = ipaddress.IPv4Network("100.64.0.0/10")  # carrier-grade NAT, RFC 6598
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: low 32 bits are IPv4


class CallbackRefused(Exception):
    """The callback URL may not be contacted. `reason` is meant for the API client to read.

    `retryable` is true only when the refusal may go away by itself (a failed DNS lookup).
    """

    def __init__(self, reason: str, *, retryable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


@dataclass(frozen=True)
class ResolvedTarget:
    """A checked callback URL and the addresses the sender may connect to, in order."""

    url: str
    scheme: str
    host: str  # ASCII (IDNA) host name or IP literal, without brackets
    port: int
    addresses: tuple[IPAddress, ...]

    @property
    def host_is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address that traffic to `ip` really reaches, for the IPv6 forms that embed one."""
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    if ip.teredo is not None:
        return "Teredo", ip.teredo[1]
    if ip in _NAT64_WELL_KNOWN:
        return "NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _classify(ip: IPAddress) -> str | None:
    """Why `ip` is not a public unicast address, or None if it is one. Order matters: the first
    matching reason is the most specific (169.254.169.254 is also link-local, say metadata)."""
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            form, v4 = embedded
            inner = _classify(v4)
            if inner is not None:
                return f"the {form} form of {v4}, which is {inner}"
            if form == "IPv4-mapped":
                # Sockets send these to the IPv4 address itself, which is public.
                return None
    checks: tuple[tuple[bool, str], ...] = (
        (ip.is_unspecified, "unspecified"),
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (
            isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED_ADDRESS_SPACE,
            "in the shared address space 100.64.0.0/10",
        ),
        (ip.is_multicast, "multicast"),
        (ip.is_reserved, "reserved"),
        (ip.is_private, "private"),
    )
    for matched, reason in checks:
        if matched:
            return reason
    # Catch-all for special ranges the flags above miss (documentation, benchmarking, ...).
    if not ip.is_global:
        return "not globally routable"
    return None


def _is_metadata(ip: IPAddress) -> bool:
    if ip in METADATA_ADDRESSES:
        return True
    embedded = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
    return embedded is not None and embedded[1] in METADATA_ADDRESSES


def _is_literal(host: str, ip: IPAddress) -> bool:
    try:
        return ipaddress.ip_address(host) == ip
    except ValueError:
        return False


def _show(ip: IPAddress) -> str:
    # Python 3.11 prints ::ffff:127.0.0.1 as ::ffff:7f00:1; keep the dotted form people type.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return f"::ffff:{ip.ipv4_mapped}"
    return str(ip)


def refusal_reason(ip: IPAddress, allow_private: bool, host: str | None = None) -> str | None:
    """Why a callback may not go to `ip` under this policy, or None if it may. `host` is the
    name that resolved to `ip`, if it was a name, so that the message can say so."""
    reason = _classify(ip)
    if reason is None:
        return None
    subject = f"callback address {_show(ip)} is"
    if host is not None and not _is_literal(host, ip):
        subject = f"callback host {host} resolves to {_show(ip)}, which is"
    if _is_metadata(ip):
        return f"{subject} {reason}; it is never allowed"
    if allow_private:
        return None
    return f"{subject} {reason}; set {ALLOW_PRIVATE_ENV}=true to allow it"


def _parse(url: str) -> tuple[str, str, int]:
    """Scheme, ASCII host and port of `url`, or CallbackRefused if it is not usable."""
    if len(url) > _MAX_URL_LENGTH:
        raise CallbackRefused(f"callback URL is longer than {_MAX_URL_LENGTH} characters")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise CallbackRefused(f"callback URL is not valid: {exc}") from exc
    if parsed.scheme not in _DEFAULT_PORTS:
        raise CallbackRefused("callback URL must use http or https")
    # The sender parses with the same httpx.URL, so the host checked is the host contacted.
    host = parsed.raw_host.decode("ascii")
    if not host:
        raise CallbackRefused("callback URL has no host")
    if parsed.userinfo:
        # Credentials would be stored and echoed back in task records; signatures replace them.
        raise CallbackRefused("callback URL must not contain credentials (user:password@)")
    if ":" in host:
        if "%" in host:
            raise CallbackRefused("callback URL must not use an IPv6 zone identifier")
    elif not _HOST_NAME.fullmatch(host):
        # httpx percent-encodes odd characters instead of refusing them; a resolver would
        # only fail on them later, with a less helpful message.
        raise CallbackRefused(f"callback URL host {host!r} is not a valid host name")
    return parsed.scheme, host, parsed.port or _DEFAULT_PORTS[parsed.scheme]


def _resolve(host: str, port: int) -> tuple[IPAddress, ...]:
    """All addresses `host` resolves to, in the resolver's preferred order, deduplicated."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise CallbackRefused(
            f"callback host {host} could not be resolved: {exc}", retryable=True
        ) from exc
    addresses: dict[IPAddress, None] = {}
    for family, _type, _proto, _canon, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        # Scoped IPv6 answers come back as "fe80::1%eth0": the scope is not part of the address.
        addresses[ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])] = None
    if not addresses:
        raise CallbackRefused(f"callback host {host} has no IP address", retryable=True)
    return tuple(addresses)


def check_url(url: str, allow_private: bool) -> ResolvedTarget:
    """Validate `url`, resolve its host once, and approve it only if every address is allowed.

    Every address must pass, not just the first: the sender may fall back to the others, and
    an attacker could otherwise pair a public address with a private one.
    """
    scheme, host, port = _parse(url)
    addresses = _resolve(host, port)
    for ip in addresses:
        reason = refusal_reason(ip, allow_private, host)
        if reason is not None:
            raise CallbackRefused(reason)
    return ResolvedTarget(url=url, scheme=scheme, host=host, port=port, addresses=addresses)
