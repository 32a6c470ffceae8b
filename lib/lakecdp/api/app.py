"""The Starlette application: routes, authentication, limits and error bodies.

Every error answer has one shape::

    {"error": {"status": 422, "code": "INVALID_EVENT", "message": "...",
               "fields": [{"field": "events[3].ts", "code": "INVALID_TIMESTAMP", "message": "..."}]}}

4xx: the caller's fault, always naming what was wrong; 5xx: ours (the log could not be
written: 503, nothing was acknowledged).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lakecdp.api.config import ApiConfig, ApiKey, KeyRing
from lakecdp.api.intake_log import IntakeLog, IntakeLogError
from lakecdp.api.validation import event_id, validate_events
from lakecdp.config import Project
from lakecdp.ingest.sources import SourceConfig

logger = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
_MAX_IDEMPOTENCY_KEY = 200


class ApiError(Exception):
    """An answer other than success: status, a stable code, a message and the fields at fault."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        fields: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.fields = fields or []
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"status": self.status, "code": self.code, "message": self.message}
        if self.fields:
            body["fields"] = self.fields
        return JSONResponse({"error": body}, status_code=self.status, headers=self.headers)


@dataclass
class TokenBucket:
    """Per-key rate limit: ``rate`` requests per second sustained, ``burst`` at once."""

    rate: float
    burst: int
    tokens: float = -1.0
    updated: float = 0.0

    def take(self, now: float) -> float:
        """0 when a request may pass (and is counted), else seconds until one may."""
        if self.tokens < 0:
            self.tokens, self.updated = float(self.burst), now
        self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class ApiState:
    """What the routes share: config, keys, sources, the intake log, the segment reader."""

    def __init__(
        self,
        project: Project,
        config: ApiConfig,
        sources: dict[str, SourceConfig],
        log: IntakeLog,
        segments: Any | None = None,
        destinations: dict[str, Any] | None = None,
    ) -> None:
        self.project, self.config, self.sources, self.log = project, config, sources, log
        self.destinations = destinations or {}
        self.keys = KeyRing(config.keys)
        self.buckets = {k.id: TokenBucket(k.rate_per_second, k.burst) for k in config.keys}
        self.segments = segments


def _state(request: Request) -> ApiState:
    return request.app.state.api


def authenticate(request: Request) -> ApiKey:
    """The caller's key (``Authorization: Bearer <key>`` or ``X-API-Key``), rate-limited."""
    state = _state(request)
    header = request.headers.get("authorization", "")
    presented = header[7:].strip() if header.lower().startswith("bearer ") else request.headers.get("x-api-key")
    if not presented:
        raise ApiError(
            401,
            "UNAUTHENTICATED",
            "no API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    key = state.keys.find(presented)
    if key is None:
        raise ApiError(401, "UNAUTHENTICATED", "the API key is not known", headers={"WWW-Authenticate": "Bearer"})
    wait = state.buckets[key.id].take(time.monotonic())
    if wait > 0:
        raise ApiError(
            429,
            "RATE_LIMITED",
            f"key {key.id!r} is limited to {key.rate_per_second:g} requests/s (burst {key.burst})",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
    return key


async def read_json_body(request: Request) -> Any:
    """The request body as JSON, refusing bodies over the configured limit before reading them."""
    limit = _state(request).config.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(
            413,
            "BODY_TOO_LARGE",
            f"body is {declared} bytes, at most {limit} allowed",
            fields=[{"field": "body", "code": "BODY_TOO_LARGE", "message": f"over {limit} bytes"}],
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(
                413,
                "BODY_TOO_LARGE",
                f"body is over {limit} bytes",
                fields=[{"field": "body", "code": "BODY_TOO_LARGE", "message": f"over {limit} bytes"}],
            )
        chunks.append(chunk)
    raw = b"".join(chunks)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("application/json", ""):
        raise ApiError(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            f"send application/json, got {content_type!r}",
            fields=[{"field": "Content-Type", "code": "UNSUPPORTED_MEDIA_TYPE", "message": content_type}],
        )
    return parse_json_body(raw)


#: an integer of 19 digits or more may lie outside 64 bits, which orjson reads as a float (lossy)
_LONG_NUMBER = re.compile(rb"[0-9]{19}")


@dataclass(frozen=True)
class JsonBody:
    """A parsed request body; ``strict``: orjson read it, so orjson writes it back exactly (no NaN,
    Infinity or integers beyond 64 bits in it)."""

    value: Any
    strict: bool


def parse_json_body(raw: bytes) -> JsonBody:
    """``raw`` as JSON: orjson for the usual body, the standard library for what orjson refuses or
    would change, so the answers stay those of the standard parser.

    orjson refuses the ``NaN`` / ``Infinity`` tokens and numbers beyond a double (``1e400``); the
    standard parser reads them, so such an event is refused by the validator with the field named
    (NON_FINITE_NUMBER) instead of a 400 for the whole body. orjson reads an integer beyond 64
    bits as a float: a body with a 19-digit run goes to the standard parser too. A ``\ud800``
    escape (a lone surrogate: not a character, cannot be stored as UTF-8) is a 400 BAD_ENCODING.
    """
    if _LONG_NUMBER.search(raw) is None:
        try:
            return JsonBody(orjson.loads(raw), strict=True)
        except orjson.JSONDecodeError:
            pass  # the standard parser decides, and words the error
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(
            400,
            "BAD_ENCODING",
            f"body is not UTF-8 (byte {exc.start})",
            fields=[{"field": "body", "code": "BAD_ENCODING", "message": str(exc)}],
        ) from exc
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApiError(
            400,
            "MALFORMED_JSON",
            f"body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            fields=[
                {
                    "field": "body",
                    "code": "MALFORMED_LINE",
                    "message": f"{exc.msg} at line {exc.lineno} column {exc.colno}",
                }
            ],
        ) from exc
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ApiError(
            400,
            "BAD_ENCODING",
            "body holds a lone surrogate escape (\\ud800-\\udfff without its pair), not a character",
            fields=[{"field": "body", "code": "BAD_ENCODING", "message": f"lone surrogate {exc.object[exc.start]!r}"}],
        ) from exc
    return JsonBody(value, strict=False)


def _field_error(field: str, code: str, message: str) -> ApiError:
    return ApiError(
        422, "INVALID_REQUEST", f"{field}: {message}", fields=[{"field": field, "code": code, "message": message}]
    )


def _source_of(body: dict[str, Any], key: ApiKey, state: ApiState) -> SourceConfig:
    name = body.get("source")
    if not isinstance(name, str) or not name:
        raise _field_error("source", "MISSING_REQUIRED", f"is required: one of {sorted(state.sources)}")
    if name not in state.sources:
        raise _field_error("source", "UNKNOWN_SOURCE", f"{name!r} is not one of {sorted(state.sources)}")
    if name not in key.sources:
        raise ApiError(
            403,
            "FORBIDDEN",
            f"key {key.id!r} may not post {name} events",
            fields=[{"field": "source", "code": "FORBIDDEN", "message": f"allowed: {key.sources}"}],
        )
    return state.sources[name]


def _idempotency_key(request: Request) -> str | None:
    value = request.headers.get(IDEMPOTENCY_HEADER)
    if value is None:
        return None
    if not value.strip() or len(value) > _MAX_IDEMPOTENCY_KEY or not value.isprintable():
        raise _field_error(
            IDEMPOTENCY_HEADER, "INVALID_HEADER", f"must be 1-{_MAX_IDEMPOTENCY_KEY} printable characters"
        )
    return value


async def _intake(request: Request, *, batch: bool) -> Response:
    state = _state(request)
    key = authenticate(request)
    idempotency_key = _idempotency_key(request)
    if idempotency_key is not None:
        earlier = state.log.answer_for(key.id, idempotency_key)
        if earlier is None and (pending := state.log.in_flight(key.id, idempotency_key)) is not None:
            try:
                earlier = await asyncio.shield(pending)
            except IntakeLogError:
                earlier = None  # the first attempt failed: this one tries again
        if earlier is not None:
            return JSONResponse({**earlier, "replayed": True}, status_code=202)
    parsed = await read_json_body(request)
    body = parsed.value
    if not isinstance(body, dict):
        raise _field_error("body", "MALFORMED_LINE", f"must be a JSON object, got {type(body).__name__}")
    source = _source_of(body, key, state)
    if batch:
        events = body.get("events")
        if not isinstance(events, list) or not events:
            raise _field_error("events", "MISSING_REQUIRED", "must be a non-empty array of events")
        if len(events) > state.config.max_batch_events:
            raise ApiError(
                413,
                "TOO_MANY_EVENTS",
                f"events: {len(events)} events, at most {state.config.max_batch_events} per batch",
                fields=[
                    {
                        "field": "events",
                        "code": "TOO_MANY_EVENTS",
                        "message": f"at most {state.config.max_batch_events}",
                    }
                ],
            )
        named = [(f"events[{i}]", e) for i, e in enumerate(events)]
    else:
        if "event" not in body:
            raise _field_error("event", "MISSING_REQUIRED", "is required: the event object")
        named = [("event", body["event"])]
    unknown = sorted(set(body) - {"source", "events" if batch else "event"})
    if unknown:
        raise _field_error(
            unknown[0],
            "UNKNOWN_FIELD",
            f"is not a field of this request (fields: source, {'events' if batch else 'event'})",
        )

    refused: list[dict[str, str]] = []
    warnings: list[dict[str, str]] = []
    # "future" is judged against when the request arrived (as Kafka judges by the broker's time)
    received = datetime.now(timezone.utc)
    events = [event for _, event in named]
    for (prefix, _), problems in zip(named, validate_events(events, source, as_of=received)):
        for problem in problems:
            entry = {
                "field": f"{prefix}.{problem.field}" if problem.field != "event" else prefix,
                "code": problem.code,
                "message": problem.message,
            }
            (refused if problem.refuses else warnings).append(entry)
    if refused:
        raise ApiError(
            422,
            "INVALID_EVENT",
            f"{len(refused)} problem(s); first: {refused[0]['field']}: {refused[0]['message']}",
            fields=refused,
        )

    # every event is an object here (anything else was refused above)
    ids = [event_id(event, source) or "" for event in events]
    fresh = state.log.reserve(source.name, ids)
    received_at = received.isoformat()
    records = [
        {"source": source.name, "id": ids[i], "event": event, "key": key.id, "idem": idempotency_key, "at": received_at}
        for i, (_, event) in enumerate(named)
        if fresh[i]
    ]
    answer: dict[str, Any] = {"accepted": len(records), "duplicates": len(named) - len(records)}
    if warnings:
        answer["warnings"] = warnings
    if not records and idempotency_key is None:
        return JSONResponse(answer, status_code=202)
    try:
        await state.log.append(
            records, key_id=key.id, idempotency_key=idempotency_key, response=answer, strict_json=parsed.strict
        )
    except IntakeLogError as exc:
        raise ApiError(
            503, "NOT_STORED", f"the events were not stored ({exc}); retry later", headers={"Retry-After": "1"}
        ) from exc
    return JSONResponse(answer, status_code=202)


async def post_event(request: Request) -> Response:
    return await _intake(request, batch=False)


async def post_batch(request: Request) -> Response:
    return await _intake(request, batch=True)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    state = _state(request)
    checks = {"intake_log": state.log.log_dir.is_dir() and state.log.writable()}
    # intake does not need the segment tables: a new warehouse has none until the first run,
    # so their absence is reported, not a reason to take the service out of rotation
    ready = checks["intake_log"]
    if state.segments is not None:
        checks["segment_tables"] = state.segments.ready()
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks}, status_code=200 if ready else 503
    )


async def openapi(request: Request) -> Response:
    from lakecdp.api.openapi import openapi_document

    return JSONResponse(openapi_document(_state(request).sources))


def _with_errors(handler):
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as error:
            return error.response()

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


def create_app(state: ApiState) -> Starlette:
    """The ASGI app for ``state`` (uvicorn runs it: ``lakecdp serve``)."""
    from lakecdp.api import segments_routes

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/v1/events", _with_errors(post_event), methods=["POST"]),
        Route("/v1/batch", _with_errors(post_batch), methods=["POST"]),
        *[Route(path, _with_errors(handler), methods=["GET"]) for path, handler in segments_routes.ROUTES],
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        code = "NOT_FOUND" if status == 404 else "METHOD_NOT_ALLOWED" if status == 405 else "HTTP_ERROR"
        return ApiError(status, code, f"{request.method} {request.url.path}: {getattr(exc, 'detail', '')}").response()

    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
    app.state.api = state
    return app
