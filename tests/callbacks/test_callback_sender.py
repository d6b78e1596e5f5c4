"""send_once against real HTTP(S) servers on loopback, and the backoff schedule."""

from __future__ import annotations

import itertools
import json
import socket
import statistics
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest
from standardwebhooks import Webhook

from toonforge.callbacks import (
    MAX_BACKOFF_SECONDS,
    AttemptResult,
    backoff_seconds,
    new_webhook_secret,
    send_once,
    verify,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import Certificate, FakeDNS, Receiver

SECRET = new_webhook_secret()
RECORD = {"id": "2221", "status": "task_postprocess_end", "pexit": "0", "outputs": []}
BODY = json.dumps(RECORD).encode()


def send(url: str, *, allow_private: bool = True, **kwargs: Any) -> AttemptResult:
    options: dict[str, Any] = {
        "secret": SECRET,
        "msg_id": "msg_task-2221",
        "timeout": 5.0,
        "allow_private": allow_private,
    }
    options.update(kwargs)
    return send_once(url, BODY, **options)


def test_delivers_a_signed_post_to_loopback_when_allowed(receiver: Receiver) -> None:
    result = send(receiver.url("/hook?task=2221"))
    assert result == AttemptResult(
        ok=True, status_code=200, error="", duration_ms=result.duration_ms, retryable=False
    )
    assert len(receiver.requests) == 1
    got = receiver.requests[0]
    assert (got.method, got.path, got.body) == ("POST", "/hook?task=2221", BODY)
    assert got.headers["content-type"] == "application/json"
    assert got.headers["webhook-id"] == "msg_task-2221"
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 30
    verify(SECRET, got.headers, got.body)
    assert Webhook(SECRET).verify(got.body, got.headers) == RECORD


def test_loopback_is_refused_without_sending_when_not_allowed(receiver: Receiver) -> None:
    for url in (receiver.url(), receiver.url(host="localhost")):
        result = send(url, allow_private=False)
        assert not result.ok and result.refused and not result.retryable
        assert result.status_code is None
        assert "loopback" in result.error
        assert "TOONFORGE_CALLBACK_ALLOW_PRIVATE=true" in result.error
    assert receiver.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1]:{port}/",
        "http://[::ffff:127.0.0.1]:{port}/",
        "http://0.0.0.0:{port}/",
        "http://127.1:{port}/",
        "http://localhost:{port}/",
    ],
)
def test_loopback_in_disguise_is_refused(receiver: Receiver, url: str) -> None:
    result = send(url.format(port=receiver.port), allow_private=False)
    assert result.refused and not result.ok
    assert receiver.requests == []


def test_host_name_is_kept_in_the_host_header(receiver: Receiver) -> None:
    result = send(receiver.url("/hook", host="localhost"))
    assert result.ok
    assert receiver.requests[0].headers["host"] == f"localhost:{receiver.port}"


def test_delivers_to_ipv6_loopback_when_allowed(receiver_v6: Receiver) -> None:
    result = send(receiver_v6.url())
    assert result.ok, result.error
    assert receiver_v6.requests[0].headers["host"] == f"[::1]:{receiver_v6.port}"


def test_connects_to_the_checked_address_not_a_fresh_lookup(
    receiver: Receiver, fake_dns: FakeDNS
) -> None:
    # DNS rebinding: the first answer passes the check, later answers point elsewhere (here an
    # address where nothing listens, so a second lookup would make the delivery fail).
    fake_dns.answers["rebind.test"] = lambda n: ["127.0.0.1"] if n == 1 else ["127.0.0.2"]
    result = send(receiver.url("/hook", host="rebind.test"))
    assert result.ok, result.error
    assert fake_dns.calls["rebind.test"] == 1
    assert receiver.requests[0].headers["host"] == f"rebind.test:{receiver.port}"


def test_falls_back_to_the_next_checked_address(receiver: Receiver, fake_dns: FakeDNS) -> None:
    fake_dns.answers["dual.test"] = ["::1", "127.0.0.1"]  # nothing listens on [::1]:port
    result = send(receiver.url("/hook", host="dual.test"))
    assert result.ok, result.error
    assert len(receiver.requests) == 1


def test_redirects_are_not_followed(receiver: Receiver, other_receiver: Receiver) -> None:
    target = quote(other_receiver.url("/landing"), safe="")
    result = send(receiver.url(f"/status/302?location={target}"))
    assert not result.ok and not result.retryable and not result.refused
    assert result.status_code == 302
    assert "redirects are not followed" in result.error
    assert other_receiver.url("/landing") in result.error
    assert len(receiver.requests) == 1
    assert other_receiver.requests == []


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_2xx_is_ok(receiver: Receiver, status: int) -> None:
    result = send(receiver.url(f"/status/{status}"))
    assert result.ok and result.status_code == status and result.error == ""


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 409, 425, 429])
def test_server_errors_and_try_later_answers_are_retryable(receiver: Receiver, status: int) -> None:
    result = send(receiver.url(f"/status/{status}?body=busy"))
    assert not result.ok and result.retryable and not result.refused
    assert result.status_code == status
    assert result.error == f"HTTP {status}: busy"


@pytest.mark.parametrize("status", [301, 303, 307, 308, 400, 401, 403, 404, 410, 422])
def test_other_answers_are_final(receiver: Receiver, status: int) -> None:
    result = send(receiver.url(f"/status/{status}"))
    assert not result.ok and not result.retryable
    assert result.status_code == status


def test_retry_after_is_reported(receiver: Receiver) -> None:
    assert send(receiver.url("/status/429?retry_after=7")).retry_after == 7.0
    capped = send(receiver.url("/status/503?retry_after=86400")).retry_after
    assert capped == MAX_BACKOFF_SECONDS
    date = send(receiver.url("/status/503?retry_after=Wed,%2021%20Oct%202015%2007:28:00%20GMT"))
    assert date.retry_after == 0.0  # a date in the past: retry whenever the schedule says
    assert send(receiver.url("/status/503?retry_after=soon")).retry_after is None
    assert send(receiver.url("/status/500")).retry_after is None


def test_timeout_is_retryable(receiver: Receiver) -> None:
    started = time.monotonic()
    result = send(receiver.url("/slow"), timeout=0.3)
    assert time.monotonic() - started < 1.5
    assert not result.ok and result.retryable and result.status_code is None
    assert "timed out" in result.error
    assert 250 <= result.duration_ms < 1500


def test_connection_refused_is_retryable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = send(f"http://127.0.0.1:{port}/hook")
    assert not result.ok and result.retryable and result.status_code is None
    assert "could not connect" in result.error


def test_response_body_is_read_up_to_a_small_cap(receiver: Receiver) -> None:
    started = time.monotonic()
    result = send(receiver.url("/big"))
    assert time.monotonic() - started < 2.0
    assert result.status_code == 500 and result.retryable
    assert len(result.error) <= 220


def test_receiver_text_is_flattened_in_the_error(receiver: Receiver) -> None:
    result = send(receiver.url("/status/400?body=" + quote("line one\r\n\x1b[31mline two")))
    assert result.error == "HTTP 400: line one [31mline two"


def test_proxy_settings_from_the_environment_are_ignored(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy would do its own DNS lookup and defeat the address check.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{dead}")
    assert send(receiver.url()).ok


def test_https_verifies_the_host_name_while_connecting_to_the_checked_ip(
    make_certificate: Callable[[str], Certificate],
    tls_receiver_factory: Callable[[Certificate], Receiver],
    fake_dns: FakeDNS,
) -> None:
    certificate = make_certificate("callback.test")
    tls_receiver = tls_receiver_factory(certificate)
    fake_dns.answers["callback.test"] = ["127.0.0.1"]
    url = tls_receiver.url("/hook", host="callback.test")
    result = send(url, ssl_context=certificate.client_context())
    assert result.ok, result.error
    assert tls_receiver.sni_names == ["callback.test"]
    assert tls_receiver.requests[0].headers["host"] == f"callback.test:{tls_receiver.port}"
    verify(SECRET, tls_receiver.requests[0].headers, tls_receiver.requests[0].body)


def test_https_refuses_a_certificate_for_another_name(
    make_certificate: Callable[[str], Certificate],
    tls_receiver_factory: Callable[[Certificate], Receiver],
    fake_dns: FakeDNS,
) -> None:
    certificate = make_certificate("someone-else.test")
    tls_receiver = tls_receiver_factory(certificate)
    fake_dns.answers["callback.test"] = ["127.0.0.1"]
    result = send(
        tls_receiver.url("/hook", host="callback.test"), ssl_context=certificate.client_context()
    )
    assert not result.ok and result.retryable and result.status_code is None
    assert "certificate" in result.error.lower()
    assert tls_receiver.requests == []


def test_https_with_default_trust_rejects_a_self_signed_certificate(
    make_certificate: Callable[[str], Certificate],
    tls_receiver_factory: Callable[[Certificate], Receiver],
    fake_dns: FakeDNS,
) -> None:
    certificate = make_certificate("callback.test")
    tls_receiver = tls_receiver_factory(certificate)
    fake_dns.answers["callback.test"] = ["127.0.0.1"]
    result = send(tls_receiver.url("/hook", host="callback.test"))
    assert not result.ok and "certificate" in result.error.lower()
    assert tls_receiver.requests == []


def test_bad_secret_or_message_id_is_a_programming_error(receiver: Receiver) -> None:
    with pytest.raises(ValueError):
        send(receiver.url(), secret="not-a-secret")
    with pytest.raises(ValueError):
        send(receiver.url(), msg_id="")
    assert receiver.requests == []


# --- backoff -------------------------------------------------------------------------------


def test_backoff_grows_exponentially_within_jitter_bounds() -> None:
    for attempt in range(1, 8):
        ceiling = 2.0 * 2 ** (attempt - 1)
        for _ in range(50):
            assert ceiling / 2 <= backoff_seconds(attempt, 2.0) <= ceiling


def test_backoff_increases_attempt_after_attempt() -> None:
    for _ in range(100):
        delays = [backoff_seconds(attempt, 1.0) for attempt in range(1, 9)]
        assert delays == sorted(delays)
    means = [statistics.mean(backoff_seconds(a, 1.0) for _ in range(200)) for a in range(1, 9)]
    assert all(later > earlier for earlier, later in itertools.pairwise(means))


def test_backoff_is_capped_and_jittered() -> None:
    samples = {backoff_seconds(40, 2.0) for _ in range(100)}
    assert all(MAX_BACKOFF_SECONDS / 2 <= s <= MAX_BACKOFF_SECONDS for s in samples)
    assert len(samples) > 1
    assert backoff_seconds(10**6, 2.0) <= MAX_BACKOFF_SECONDS  # no overflow
    assert backoff_seconds(5, 2.0, cap=10.0) <= 10.0
    assert backoff_seconds(3, 0.0) == 0.0


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        backoff_seconds(0, 2.0)
    with pytest.raises(ValueError):
        backoff_seconds(1, -1.0)
