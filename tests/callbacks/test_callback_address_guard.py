"""The address guard: which callback URLs are refused, why, and what it resolves.

Only `check_url` is called here: it resolves names but never connects, so the non-loopback
addresses below are never contacted.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import TYPE_CHECKING

import pytest

from toonforge.callbacks import ALLOW_PRIVATE_ENV, CallbackRefused, check_url

if TYPE_CHECKING:
    from conftest import FakeDNS


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:8000/hook", "127.0.0.1 is loopback"),
        ("http://127.0.0.2/", "loopback"),
        ("http://10.0.0.5/hook", "10.0.0.5 is private"),
        ("http://172.16.3.4/", "private"),
        ("http://192.168.1.10/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://169.254.1.1/", "link-local"),
        ("http://100.64.0.1/", "shared address space"),
        ("http://0.0.0.0:8000/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
        ("http://240.0.0.1/", "reserved"),
        ("http://255.255.255.255/", "reserved"),
        ("http://192.0.2.10/", "private"),  # documentation range (TEST-NET-1)
        ("http://[::1]:8000/", "::1 is loopback"),
        ("http://[::]/", "unspecified"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[fc00::1]/", "private"),
        ("http://[ff02::1]/", "multicast"),
        ("http://[2001:db8::1]/", "private"),  # documentation range
        ("http://[fd00:ec2::254]/", "cloud metadata"),
        ("http://[::ffff:127.0.0.1]/", "IPv4-mapped form of 127.0.0.1, which is loopback"),
        ("http://[::ffff:10.1.2.3]/", "IPv4-mapped form of 10.1.2.3, which is private"),
        ("http://[::ffff:169.254.169.254]/", "which is a cloud metadata address"),
        ("http://[2002:7f00:1::]/", "6to4 form of 127.0.0.1"),
        ("http://[2002:a9fe:a9fe::]/", "6to4 form of 169.254.169.254"),
        ("http://[64:ff9b::a00:1]/", "NAT64 form of 10.0.0.1"),
        ("http://[::127.0.0.1]/", "reserved"),  # deprecated IPv4-compatible form
        ("http://localhost:8000/", "host localhost resolves to"),
        ("http://LOCALHOST/", "loopback"),
        # Shorthand IPv4 forms: the resolver turns them into 127.0.0.1, which is what is checked.
        ("http://2130706433/", "resolves to 127.0.0.1, which is loopback"),
        ("http://127.1/", "resolves to 127.0.0.1, which is loopback"),
        ("http://0x7f.0.0.1/", "resolves to 127.0.0.1, which is loopback"),
    ],
)
def test_non_public_addresses_are_refused(url: str, reason: str) -> None:
    with pytest.raises(CallbackRefused) as info:
        check_url(url, allow_private=False)
    assert reason in info.value.reason
    assert not info.value.retryable


def test_refusal_tells_the_operator_how_to_allow_it() -> None:
    with pytest.raises(CallbackRefused) as info:
        check_url("http://127.0.0.1/", allow_private=False)
    assert info.value.reason == (
        f"callback address 127.0.0.1 is loopback; set {ALLOW_PRIVATE_ENV}=true to allow it"
    )
    assert str(info.value) == info.value.reason


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/",
        "http://localhost:9/",
        "http://[::1]:9/",
        "http://10.0.0.5/",
        "http://[::ffff:127.0.0.1]/",
        "http://100.64.0.1/",
    ],
)
def test_allow_private_lets_private_and_loopback_through(url: str) -> None:
    target = check_url(url, allow_private=True)
    assert target.addresses
    assert all(not ip.is_global for ip in target.addresses)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/",
        "http://[fd00:ec2::254]/",
        "http://[::ffff:169.254.169.254]/",
        "http://100.100.100.200/",
    ],
)
def test_metadata_addresses_are_refused_even_when_private_is_allowed(url: str) -> None:
    with pytest.raises(CallbackRefused, match="cloud metadata address; it is never allowed"):
        check_url(url, allow_private=True)


def test_public_addresses_pass_and_are_returned() -> None:
    target = check_url("https://8.8.8.8/hooks?x=1", allow_private=False)
    assert (target.scheme, target.host, target.port) == ("https", "8.8.8.8", 443)
    assert target.addresses == (ipaddress.ip_address("8.8.8.8"),)
    assert target.host_is_ip

    v6 = check_url("http://[2606:4700:4700::1111]:8080/", allow_private=False)
    assert (v6.host, v6.port) == ("2606:4700:4700::1111", 8080)
    # A mapped public IPv4 address reaches that public address.
    assert check_url("http://[::ffff:8.8.8.8]/", allow_private=False).addresses


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("javascript:alert(1)", "http or https"),
        ("gopher://127.0.0.1:6379/", "http or https"),
        ("", "http or https"),
        ("not a url", "http or https"),
        ("http://", "no host"),
        ("http:///path", "no host"),
        ("http://user:pass@example.com/", "credentials"),
        ("http://[fe80::1%25eth0]/", "zone identifier"),
        ("http://example.com/" + "a" * 3000, "longer than"),
        ("http://exa mple.com/", "not a valid host name"),
        ("http://a_b%00.test/", "not a valid host name"),
    ],
)
def test_unusable_urls_are_refused(url: str, reason: str) -> None:
    with pytest.raises(CallbackRefused, match=reason):
        check_url(url, allow_private=True)


def test_host_name_is_resolved_and_every_address_must_pass(fake_dns: FakeDNS) -> None:
    fake_dns.answers["mixed.test"] = ["8.8.8.8", "10.1.2.3"]
    with pytest.raises(CallbackRefused) as info:
        check_url("http://mixed.test/hook", allow_private=False)
    assert "mixed.test resolves to 10.1.2.3, which is private" in info.value.reason

    fake_dns.answers["public.test"] = ["8.8.8.8", "2606:4700:4700::1111", "8.8.8.8"]
    target = check_url("http://public.test/hook", allow_private=False)
    assert target.host == "public.test"
    assert [str(ip) for ip in target.addresses] == ["8.8.8.8", "2606:4700:4700::1111"]
    assert not target.host_is_ip


def test_international_names_are_resolved_in_their_ascii_form(fake_dns: FakeDNS) -> None:
    fake_dns.answers["xn--bcher-kva.test"] = ["127.0.0.1"]
    with pytest.raises(CallbackRefused, match=r"xn--bcher-kva\.test resolves to 127\.0\.0\.1"):
        check_url("http://bücher.test/", allow_private=False)
    assert fake_dns.calls["xn--bcher-kva.test"] == 1


def test_a_failed_lookup_is_a_retryable_refusal(fake_dns: FakeDNS) -> None:
    fake_dns.answers["gone.test"] = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    with pytest.raises(CallbackRefused) as info:
        check_url("https://gone.test/", allow_private=False)
    assert info.value.retryable
    assert "could not be resolved" in info.value.reason
