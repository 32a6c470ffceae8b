"""Sending batches to a REST endpoint: retries, backoff with jitter, 429 Retry-After,
per-row rejects, bisection of rejected batches, rate limiting. Stdlib only (urllib).

Outcome of one batch:

- 2xx: delivered, except rows the response names in ``{"errors": [{"index": i, "reason": ...}]}``
  (index into the batch's ``items``), which are rejected.
- 4xx other than 408/429: the destination refused the request as a whole; a batch of more than
  one item is split in halves until the bad rows are isolated; a single item is rejected.
- 408, 429, 5xx, timeouts, connection errors: retried with exponential backoff and full jitter
  (a 429's ``Retry-After`` wins); after ``max_attempts`` the items go to the dead letter.

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
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

from jinja2.sandbox import SandboxedEnvironment

from lakecdp.activation.config import WebhookSettings, expand_env
from lakecdp.config import ConfigError

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


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def to_json(value: Any) -> str:
    return json.dumps(value, default=_json_default, ensure_ascii=False, sort_keys=True)


def _payload_environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(autoescape=False)
    env.policies["json.dumps_function"] = lambda obj, **kw: json.dumps(obj, default=_json_default, **kw)
    env.policies["json.dumps_kwargs"] = {"sort_keys": True, "ensure_ascii": False}
    return env


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
        self.url = expand_env(settings.url, what=f"destination {name}: url")
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._next_request_at = 0.0
        self._auth_headers = self._resolve_auth()
        self._template = _payload_environment().from_string(settings.payload_template)
        self.requests_sent = 0

    # -- request building ------------------------------------------------------------
    def _env(self, variable: str) -> str:
        value = os.environ.get(variable)
        if not value:
            raise ConfigError(f"destination {self.name}: environment variable {variable} is not set")
        return value

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
        return self._template.render(items=plain, destination=self.name, run_id=self.run_id).encode("utf-8")

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

    def _request(self, body: bytes, key: str) -> _Response:
        headers = {
            "Content-Type": self.settings.content_type,
            "Idempotency-Key": key,
            "User-Agent": "lakecdp-activation",
            **self.settings.headers,
            **self._auth_headers,
        }
        request = urllib.request.Request(self.url, data=body, headers=headers, method=self.settings.method)
        self._throttle()
        self.requests_sent += 1
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout_seconds) as response:
                return _Response(response.status, response.read().decode("utf-8", "replace"))
        except urllib.error.HTTPError as exc:
            text = exc.read().decode("utf-8", "replace") if exc.fp is not None else ""
            return _Response(exc.code, text, parse_retry_after(exc.headers.get("Retry-After")))
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError,
                http.client.HTTPException, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return _Response(None, "", error=f"{type(reason).__name__}: {reason}")

    def _backoff(self, attempt: int) -> float:
        policy = self.settings.retry
        ceiling = min(policy.max_delay_seconds, policy.base_delay_seconds * (2 ** (attempt - 1)))
        return self._rng.uniform(0, ceiling)

    def _send_with_retries(self, items: Sequence[Item]) -> tuple[_Response, int]:
        body = self.render(items)
        key = self.batch_key(items)
        policy = self.settings.retry
        response = _Response(None, "", error="not sent")
        for attempt in range(1, policy.max_attempts + 1):
            response = self._request(body, key)
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
                self.name, len(items), attempt, policy.max_attempts,
                response.code or response.error, wait,
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

    def _deliver_one_request(
        self, items: Sequence[Item], on_result: Callable[[Finalised], None]
    ) -> Finalised:
        response, attempts = self._send_with_retries(items)
        result = Finalised()
        code = response.code
        if code is not None and 200 <= code < 300:
            errors = self._row_errors(response.body, len(items))
            for index, item in enumerate(items):
                if index in errors:
                    result.rejected.append((item, errors[index], code, attempts))
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
            reason = f"HTTP {code}: {response.body[:500]}".strip()
            result.rejected.append((items[0], reason, code, attempts))
        else:
            reason = (
                f"HTTP {code}: {response.body[:200]}".strip() if code is not None else str(response.error)
            )
            reason = f"gave up after {attempts} attempts; last: {reason}"
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
            total.extend(self._deliver_one_request(list(items[start:start + size]), on_result))
        return total
