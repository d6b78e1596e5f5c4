"""One signed callback POST, classified for the retry loop, plus the backoff schedule.

Synchronous on purpose: deliveries run in a background thread of the server, one at a time
per thread, and a plain httpx.Client keeps the address pinning below easy to follow.
"""

from __future__ import annotations

import random
import ssl
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import httpx

from toonforge import __version__
from toonforge.callbacks.address_guard import CallbackRefused, IPAddress, ResolvedTarget, check_url
from toonforge.callbacks.signing import sign

MAX_BACKOFF_SECONDS = 300.0
# Besides 5xx: request timeout, conflict (often a lock on the receiver's side), too early,
# rate limited. Every other 4xx means the receiver rejects this request as it is.
RETRYABLE_STATUSES = frozenset({408, 409, 425, 429})
# We only need enough of a failing response to show the client why it failed.
RESPONSE_BODY_CAP = 2048
_ERROR_TEXT_CHARS = 200
USER_AGENT = f"toonforge-callbacks/{__version__}"


@dataclass(frozen=True)
class AttemptResult:
    """The outcome of one delivery attempt, in the shape the attempt log stores."""

    ok: bool
    status_code: int | None
    error: str  # empty when ok
    duration_ms: int
    retryable: bool
    # The address guard refused the URL: no request was sent, and retrying will not help.
    refused: bool = False
    # Seconds the receiver asked us to wait (Retry-After on a retryable answer), capped.
    retry_after: float | None = None


def backoff_seconds(attempt: int, base: float, *, cap: float = MAX_BACKOFF_SECONDS) -> float:
    """Delay before retrying after failed attempt number `attempt` (1 = the first attempt).

    Exponential (base, 2*base, 4*base, ... up to `cap`) with "equal jitter": half of the delay
    is fixed and half random. The random half spreads out the retries of many callbacks that
    failed together (a receiver outage); the fixed half keeps delays growing attempt by attempt.
    A caller honouring `AttemptResult.retry_after` should wait the larger of the two.
    """
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    if base < 0 or cap < 0:
        raise ValueError("base and cap must not be negative")
    # The exponent is bounded so that a very large attempt number cannot overflow a float.
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 64))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def _default_ssl_context() -> ssl.SSLContext:
    # The client itself runs with trust_env=False (no proxies, see below), so the CA settings
    # an operator may give in SSL_CERT_FILE / SSL_CERT_DIR are honoured here instead. Made per
    # attempt, not shared: httpcore sets ALPN on the context it is given, and deliveries may
    # run in several threads; callbacks are rare enough for the cost not to matter.
    return httpx.create_ssl_context(trust_env=True)


def send_once(
    url: str,
    body: bytes,
    *,
    secret: str,
    msg_id: str,
    timeout: float,
    allow_private: bool,
    ssl_context: ssl.SSLContext | None = None,
) -> AttemptResult:
    """Check `url`, then POST the signed JSON `body` to it once. Never raises for anything the
    network or the receiver does; raises ValueError only for a bad `secret` or `msg_id`.

    `msg_id` must stay the same across the retries of one callback. `ssl_context` replaces the
    default CA trust (certifi, or SSL_CERT_FILE / SSL_CERT_DIR).
    """
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    start = time.monotonic()
    # Signed before any network work so that a bad secret is an error, not a failed attempt.
    headers = sign(secret, msg_id, int(time.time()), body)
    try:
        target = check_url(url, allow_private)
    except CallbackRefused as exc:
        return AttemptResult(
            ok=False,
            status_code=None,
            error=exc.reason,
            duration_ms=_elapsed_ms(start),
            retryable=exc.retryable,
            refused=not exc.retryable,
        )
    headers |= {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        # A compressed error page could expand far past RESPONSE_BODY_CAP; ask for none.
        "Accept-Encoding": "identity",
        # We connect to an IP; the receiver still sees the host name it was given.
        "Host": httpx.URL(url).netloc.decode("ascii"),
    }
    # trust_env=False: a proxy from HTTP(S)_PROXY would connect to the host by itself, after
    # its own DNS lookup, which would defeat the address check.
    with httpx.Client(
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        trust_env=False,
        verify=ssl_context or _default_ssl_context(),
    ) as client:
        last_error: httpx.ConnectError | None = None
        for ip in target.addresses:
            try:
                return _post(client, target, ip, body, headers, start, timeout)
            except httpx.ConnectError as exc:
                # Nothing was sent; every address was approved, so try the next one (a host
                # with an AAAA record the server cannot reach may still answer over IPv4).
                last_error = exc
            except httpx.TimeoutException as exc:
                return _transport_failure(f"timed out ({type(exc).__name__})", start)
            except httpx.HTTPError as exc:
                return _transport_failure(_describe(exc), start)
        assert last_error is not None  # check_url never approves an empty address list
        return _transport_failure(f"could not connect: {_describe(last_error)}", start)


def _post(
    client: httpx.Client,
    target: ResolvedTarget,
    ip: IPAddress,
    body: bytes,
    headers: dict[str, str],
    start: float,
    timeout: float,
) -> AttemptResult:
    """POST to `ip` as if it were `target.host`; raises httpx errors for the caller to sort."""
    request_url = httpx.URL(target.url).copy_with(host=str(ip))
    extensions: dict[str, str] = {}
    if target.scheme == "https" and not target.host_is_ip:
        # TLS must name (SNI) and verify the certificate of the host, not of the IP.
        extensions["sni_hostname"] = target.host
    with client.stream(
        "POST", request_url, content=body, headers=headers, extensions=extensions
    ) as response:
        status = response.status_code
        if 200 <= status < 300:
            # Success needs no body: closing without reading it is fine on a one-off client.
            return AttemptResult(True, status, "", _elapsed_ms(start), retryable=False)
        text = _read_capped(response, deadline=start + timeout)
    return _failure_for_status(status, response.headers, text, start)


def _read_capped(response: httpx.Response, deadline: float) -> str:
    """At most RESPONSE_BODY_CAP bytes of the body, given up on at `deadline`; for messages."""
    data = bytearray()
    try:
        for chunk in response.iter_raw():
            data += chunk
            if len(data) >= RESPONSE_BODY_CAP or time.monotonic() > deadline:
                break
    except httpx.HTTPError:
        pass  # the status line already says what matters
    return data[:RESPONSE_BODY_CAP].decode("utf-8", errors="replace")


def _failure_for_status(
    status: int, headers: httpx.Headers, text: str, start: float
) -> AttemptResult:
    if 300 <= status < 400:
        location = headers.get("location", "")
        where = f" (Location: {_clean(location)})" if location else ""
        error = f"HTTP {status}: redirects are not followed{where}"
        return AttemptResult(False, status, error, _elapsed_ms(start), retryable=False)
    retryable = status >= 500 or status in RETRYABLE_STATUSES
    error = f"HTTP {status}" + (f": {_clean(text)}" if text.strip() else "")
    retry_after = _retry_after(headers.get("retry-after")) if retryable else None
    return AttemptResult(
        ok=False,
        status_code=status,
        error=error,
        duration_ms=_elapsed_ms(start),
        retryable=retryable,
        retry_after=retry_after,
    )


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds from now (delta-seconds or HTTP date), within [0, max backoff]."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return min(max(seconds, 0.0), MAX_BACKOFF_SECONDS)


def _transport_failure(error: str, start: float) -> AttemptResult:
    # Timeouts, refused or reset connections, TLS failures: all may pass, so all are retried.
    return AttemptResult(False, None, error, _elapsed_ms(start), retryable=True)


def _describe(exc: Exception) -> str:
    detail = str(exc) or repr(exc.__cause__ or exc.__context__ or "")
    return _clean(f"{type(exc).__name__}: {detail}")


def _clean(text: str) -> str:
    """Receiver-controlled text, made safe to store and show: one line, printable, short."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    if len(flat) > _ERROR_TEXT_CHARS:
        return flat[: _ERROR_TEXT_CHARS - 1] + "…"
    return flat


def _elapsed_ms(start: float) -> int:
    return int((time.monotonic() - start) * 1000)
