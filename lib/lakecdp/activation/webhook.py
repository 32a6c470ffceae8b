"""Sending batches to a REST endpoint: retries, backoff with jitter, 429 Retry-After,
per-row rejects, bisection of rejected batches, rate limiting. Stdlib only (http.client).

Every request is bounded and goes only where the config says:

- ``timeout_seconds`` is a **total** deadline (connect, send, the whole answer): a watchdog
  shuts the socket when it passes, so a server trickling bytes cannot hold the client;
- at most ``max_response_bytes`` of an answer are read;
- redirects are **never** followed (a 3xx is a failure, dead-lettered; the credentials go
  nowhere but the configured host);
- the host is resolved once per request and every address is checked against the address
  policy (:func:`lakecdp.activation.config.address_refusal`) before connecting; the client
  connects to the checked address itself (no second lookup, no DNS rebinding).

Outcome of one batch:

- 2xx: delivered, except rows the response names in ``{"errors": [{"index": i, "reason": ...}]}``
  (index into the batch's ``items``), which are rejected.
- 4xx other than 408/429: the destination refused the request as a whole; a batch of more than
  one item is split in halves until the bad rows are isolated; a single item is rejected.
- 408, 429, 5xx, timeouts, connection errors: retried with exponential backoff and full jitter
  (a 429's ``Retry-After`` wins); after ``max_attempts`` the items go to the dead letter.
- a redirect, a refused address, a 2xx answer larger than ``max_response_bytes``: not retried
  in this run; the items go to the dead letter (the next runs retry them, see the ledger).

Each request carries an ``Idempotency-Key`` header (the item's key for one item, else a hash
of the batch's keys) and every item carries its own ``idempotency_key``.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import logging
import os
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from jinja2 import TemplateError
from jinja2.sandbox import SecurityError

from lakecdp.activation.config import WebhookSettings, address_refusal, env_references, expand_env
from lakecdp.config import ConfigError
from lakecdp.personalization.sandbox import BudgetedSandbox, RenderBudget

logger = logging.getLogger(__name__)

Item = Mapping[str, Any]
_TRANSIENT_CODES = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass
class Finalised:
    """Items whose fate one request decided; passed to the ``on_result`` callback."""

    delivered: list[tuple[Item, int, int]] = field(default_factory=list)  # item, attempts, code
    rejected: list[tuple[Item, str, int | None, int]] = field(default_factory=list)  # item, reason, code, attempts
    dead: list[tuple[Item, str, int | None, int]] = field(default_factory=list)

    def extend(self, other: Finalised) -> None:
        self.delivered += other.delivered
        self.rejected += other.rejected
        self.dead += other.dead


@dataclass
class _Response:
    code: int | None  # None: no HTTP response (timeout, reset, refused)
    body: str
    retry_after: float | None = None
    error: str | None = None
    # a failure retrying in this run cannot fix (redirect, refused address, oversized answer)
    final: bool = False


class _Refused(Exception):
    """The address policy refused every address of the host; nothing was sent."""


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def to_json(value: Any) -> str:
    return json.dumps(value, default=_json_default, ensure_ascii=False, sort_keys=True)


# a request body: up to batch_size (<= 10,000) items of a few hundred bytes each
PAYLOAD_BUDGET = RenderBudget(max_seconds=10.0, max_output_chars=50_000_000, max_loop_iterations=1_000_000)


def _payload_environment() -> BudgetedSandbox:
    env = BudgetedSandbox(budget=PAYLOAD_BUDGET, autoescape=False)
    env.policies["json.dumps_function"] = lambda obj, **kw: json.dumps(obj, default=_json_default, **kw)
    env.policies["json.dumps_kwargs"] = {"sort_keys": True, "ensure_ascii": False}
    return env


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to an address checked beforehand; the Host header keeps the configured name."""

    def __init__(self, host: str, port: int | None, *, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int | None, *, address: str, timeout: float) -> None:
        self._tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self._tls)
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


def _shut(connection: http.client.HTTPConnection) -> None:
    """The deadline watchdog: unblock any read or write in progress."""
    sock = connection.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


class WebhookClient:
    """Delivers items to one endpoint.

    Args:
        name: destination name (for messages and the batch idempotency key).
        settings: the validated webhook settings.
        run_id: stamped into the template context.
        sleep, rng: injectable for tests of the backoff arithmetic; defaults are real.

    Example:
        >>> client = WebhookClient("crm", settings, run_id="r1")
        >>> result = client.deliver(items, on_result=lambda r: ledger_write(r))
    """

    def __init__(
        self,
        name: str,
        settings: WebhookSettings,
        *,
        run_id: str,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.run_id = run_id
        self._secrets: list[str] = []
        self.url = self._resolve_url()
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._next_request_at = 0.0
        self._headers = self._resolve_headers()
        self._environment = _payload_environment()
        self._template = self._environment.from_string(settings.payload_template)
        self.requests_sent = 0

    # -- request building ------------------------------------------------------------
    def _env(self, variable: str) -> str:
        value = os.environ.get(variable)
        if not value:
            raise ConfigError(f"destination {self.name}: environment variable {variable} is not set")
        self._secrets.append(value)
        return value

    def _resolve_url(self) -> str:
        """The URL with ``${VAR}`` expanded; it must still be http(s) with a host, without
        control characters, and an IP-literal host must pass the address policy."""
        what = f"destination {self.name}: url"
        raw = self.settings.url
        for variable in env_references(raw):
            if os.environ.get(variable):
                self._secrets.append(os.environ[variable])  # a URL from env may carry a token
        url = expand_env(raw, what=what)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ConfigError(
                f"{what}: resolves to scheme {parts.scheme or '(none)'!r}; only http and https are allowed"
            )
        if not parts.hostname:
            raise ConfigError(f"{what}: resolves to a URL without a host")
        if any(ord(c) < 33 or ord(c) == 127 for c in url):
            raise ConfigError(f"{what}: resolves to a URL with spaces or control characters (CR/LF)")
        if parts.username is not None or parts.password is not None:
            raise ConfigError(f"{what}: resolves to a URL with user:password@; use auth: with env variables")
        return url

    def _resolve_headers(self) -> dict[str, str]:
        headers = {}
        for header, value in {**self.settings.headers, **self._resolve_auth()}.items():
            for variable in env_references(value):
                self._env(variable)  # set, and remembered as a secret
            resolved = expand_env(value, what=f"destination {self.name}: header {header}")
            if any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in resolved):
                raise ConfigError(
                    f"destination {self.name}: header {header}: value contains control "
                    "characters (CR/LF) after resolving its environment variables"
                )
            headers[header] = resolved
        return headers

    def redact(self, text: str) -> str:
        """``text`` without any secret this client resolved (tokens, env-supplied URLs)."""
        for secret in sorted(set(self._secrets), key=len, reverse=True):
            if len(secret) >= 4:
                text = text.replace(secret, "[redacted]")
        return text

    def _resolve_auth(self) -> dict[str, str]:
        auth = self.settings.auth
        if auth is None:
            return {}
        if auth.type == "bearer":
            return {"Authorization": f"Bearer {self._env(auth.token_env or '')}"}
        if auth.type == "header":
            return {auth.header: self._env(auth.token_env or "")}
        user = self._env(auth.username_env or "")
        password = self._env(auth.password_env or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        return {"Authorization": f"Basic {token}"}

    def render(self, items: Sequence[Item]) -> bytes:
        """The request body for ``items`` (JSON-safe dicts) from the payload template."""
        plain = json.loads(to_json([dict(i) for i in items]))
        context = {"items": plain, "destination": self.name, "run_id": self.run_id}
        return self._environment.render_template(self._template, context).encode("utf-8")

    def batch_key(self, items: Sequence[Item]) -> str:
        if len(items) == 1:
            return str(items[0]["idempotency_key"])
        joined = "\x1f".join(sorted(str(i["idempotency_key"]) for i in items))
        return hashlib.sha256(f"{self.name}\x1e{joined}".encode()).hexdigest()

    # -- one HTTP request ------------------------------------------------------------
    def _throttle(self) -> None:
        rate = self.settings.rate_limit_per_second
        if rate is None:
            return
        now = time.monotonic()
        if now < self._next_request_at:
            self._sleep(self._next_request_at - now)
        self._next_request_at = max(now, self._next_request_at) + 1.0 / rate

    def _addresses(self, host: str, port: int) -> list[str]:
        """Every address ``host`` resolves to, each allowed by the address policy."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise OSError(f"cannot resolve {host}: {exc}") from exc
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        for address in addresses:
            refusal = address_refusal(address, allow_private_network=self.settings.allow_private_network)
            if refusal:
                raise _Refused(f"address policy: {host} resolves to {refusal}; nothing was sent")
        return addresses

    def _request(self, body: bytes, key: str) -> _Response:
        headers = {
            "Content-Type": self.settings.content_type,
            "Idempotency-Key": key,
            "User-Agent": "lakecdp-activation",
            **self._headers,
        }
        parts = urlsplit(self.url)
        https = parts.scheme == "https"
        port = parts.port or (443 if https else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        timeout = self.settings.timeout_seconds
        self._throttle()
        self.requests_sent += 1
        try:
            addresses = self._addresses(parts.hostname or "", port)
        except _Refused as exc:
            return _Response(None, "", error=str(exc), final=True)
        except OSError as exc:
            return _Response(None, "", error=str(exc))
        deadline = time.monotonic() + timeout
        last_error = "no address"
        for address in addresses:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            kind = _PinnedHTTPSConnection if https else _PinnedHTTPConnection
            connection = kind(parts.hostname or "", port, address=address, timeout=remaining)
            watchdog = threading.Timer(remaining, _shut, (connection,))
            watchdog.daemon = True
            watchdog.start()
            try:
                connection.request(self.settings.method, path, body=body, headers=headers)
                answer = connection.getresponse()
                return self._read_answer(answer, deadline)
            except (OSError, http.client.HTTPException) as exc:
                if time.monotonic() >= deadline:
                    return _Response(
                        None, "", error=f"no complete answer within the {timeout:g} s deadline (timeout_seconds)"
                    )
                last_error = f"{type(exc).__name__}: {exc}"
                if connection.sock is not None:  # connected: the request may have arrived; do not
                    break  # try another address in this attempt
            finally:
                watchdog.cancel()
                connection.close()
        return _Response(None, "", error=last_error)

    def _read_answer(self, answer: http.client.HTTPResponse, deadline: float) -> _Response:
        cap = self.settings.max_response_bytes
        code = answer.status
        retry_after = parse_retry_after(answer.getheader("Retry-After"))
        if 300 <= code < 400:
            location = (answer.getheader("Location") or "")[:200]
            return _Response(
                code,
                "",
                error=f"HTTP {code} redirect to {location!r} not followed (redirects are never followed)",
                final=True,
            )
        chunks: list[bytes] = []
        size = 0
        while size <= cap:
            chunk = answer.read1(min(65_536, cap + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if time.monotonic() > deadline:
                raise TimeoutError("deadline passed while reading the answer")
        if time.monotonic() >= deadline:  # the watchdog shut the socket: what we have is partial
            raise TimeoutError("deadline passed while reading the answer")
        if size <= cap and answer.length:  # the server promised more than it sent
            raise http.client.IncompleteRead(b"".join(chunks), answer.length)
        text = b"".join(chunks)[:cap].decode("utf-8", "replace")
        if size > cap and 200 <= code < 300:
            return _Response(
                code,
                text[:200],
                error=f"HTTP {code} answer larger than max_response_bytes ({cap:,}); "
                "stopped reading, per-row results unknown",
                final=True,
            )
        return _Response(code, text, retry_after)

    def _backoff(self, attempt: int) -> float:
        policy = self.settings.retry
        ceiling = min(policy.max_delay_seconds, policy.base_delay_seconds * (2 ** (attempt - 1)))
        return self._rng.uniform(0, ceiling)

    def _send_with_retries(self, items: Sequence[Item]) -> tuple[_Response, int]:
        try:
            body = self.render(items)
        except (TemplateError, SecurityError, OverflowError, RecursionError) as exc:
            # nothing is sent; the batch is dead-lettered (later runs retry it up to retry.max_runs)
            return _Response(None, "", error=f"payload_template failed: {type(exc).__name__}: {exc}", final=True), 0
        key = self.batch_key(items)
        policy = self.settings.retry
        response = _Response(None, "", error="not sent")
        for attempt in range(1, policy.max_attempts + 1):
            response = self._request(body, key)
            if response.final:
                return response, attempt
            transient = response.code is None or response.code in _TRANSIENT_CODES
            if not transient:
                return response, attempt
            if attempt == policy.max_attempts:
                break
            if response.retry_after is not None:
                wait = min(response.retry_after, policy.max_retry_after_seconds)
            else:
                wait = self._backoff(attempt)
            logger.warning(
                "%s: %d items, attempt %d/%d failed (%s); retrying in %.2fs",
                self.name,
                len(items),
                attempt,
                policy.max_attempts,
                response.code or self.redact(str(response.error)),
                wait,
            )
            self._sleep(wait)
        return response, policy.max_attempts

    # -- outcome of a batch ----------------------------------------------------------
    @staticmethod
    def _row_errors(body: str, size: int) -> dict[int, str]:
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            return {}
        if not isinstance(parsed, dict) or not isinstance(parsed.get("errors"), list):
            return {}
        errors: dict[int, str] = {}
        for error in parsed["errors"]:
            if isinstance(error, dict) and isinstance(error.get("index"), int) and 0 <= error["index"] < size:
                errors[error["index"]] = str(error.get("reason", "rejected by destination"))
        return errors

    def _deliver_one_request(self, items: Sequence[Item], on_result: Callable[[Finalised], None]) -> Finalised:
        response, attempts = self._send_with_retries(items)
        result = Finalised()
        code = response.code
        if response.final:
            reason = self.redact(str(response.error))
            logger.warning("%s: %d items dead-lettered: %s", self.name, len(items), reason)
            result.dead += [(item, reason, code, attempts) for item in items]
        elif code is not None and 200 <= code < 300:
            errors = self._row_errors(response.body, len(items))
            for index, item in enumerate(items):
                if index in errors:
                    result.rejected.append((item, self.redact(errors[index]), code, attempts))
                else:
                    result.delivered.append((item, attempts, code))
        elif code is not None and code not in _TRANSIENT_CODES and 400 <= code < 500:
            if len(items) > 1:
                # one bad row spoils the request: split until it stands alone
                middle = len(items) // 2
                logger.info("%s: %d items rejected with %d; bisecting", self.name, len(items), code)
                combined = Finalised()
                combined.extend(self._deliver_one_request(items[:middle], on_result))
                combined.extend(self._deliver_one_request(items[middle:], on_result))
                return combined
            reason = self.redact(f"HTTP {code}: {response.body[:500]}".strip())
            result.rejected.append((items[0], reason, code, attempts))
        else:
            reason = f"HTTP {code}: {response.body[:200]}".strip() if code is not None else str(response.error)
            reason = self.redact(f"gave up after {attempts} attempts; last: {reason}")
            result.dead += [(item, reason, code, attempts) for item in items]
        on_result(result)
        return result

    def deliver(
        self,
        items: Sequence[Item],
        *,
        on_result: Callable[[Finalised], None] = lambda _result: None,
    ) -> Finalised:
        """Send ``items`` in batches of ``batch_size``; ``on_result`` runs after each request
        that decided some items' fate (write the ledger there).

        Returns:
            Everything delivered, rejected and dead-lettered.
        """
        total = Finalised()
        size = self.settings.batch_size
        for start in range(0, len(items), size):
            total.extend(self._deliver_one_request(list(items[start : start + size]), on_result))
        return total
