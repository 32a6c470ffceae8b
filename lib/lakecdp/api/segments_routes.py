"""``GET /v1/segments``, ``/v1/segments/{id}/members``, ``/v1/segments/{id}/changes``.

A key reads the segments of the destinations it names (``conf/api.yaml`` ``destinations``;
a destination's ``segments`` list, empty meaning every segment, as activation reads it).
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from lakecdp.api.app import ApiError, _state, authenticate
from lakecdp.api.config import ApiKey
from lakecdp.api.segments import NotFound, SegmentReader


def allowed_segments(request: Request, key: ApiKey) -> set[str] | None:
    """The segment ids ``key`` may read (None: all); 403 for a key with no destination."""
    state = _state(request)
    if not key.destinations:
        raise ApiError(
            403,
            "FORBIDDEN",
            f"key {key.id!r} is not scoped to any destination",
            fields=[{"field": "Authorization", "code": "FORBIDDEN", "message": "no destinations"}],
        )
    allowed: set[str] = set()
    for name in key.destinations:
        destination = state.destinations.get(name)
        if destination is None:
            continue
        if not destination.segments:
            return None
        allowed.update(destination.segments)
    return allowed


def _segment(request: Request, key: ApiKey) -> str:
    segment_id = request.path_params["segment_id"]
    allowed = allowed_segments(request, key)
    if allowed is not None and segment_id not in allowed:
        raise ApiError(
            403,
            "FORBIDDEN",
            f"key {key.id!r} may not read segment {segment_id!r}",
            fields=[{"field": "segment_id", "code": "FORBIDDEN", "message": f"allowed: {sorted(allowed)}"}],
        )
    return segment_id


def _limit(request: Request) -> int:
    maximum = _state(request).config.max_page_size
    text = request.query_params.get("limit", str(maximum))
    if not text.isdigit() or not 1 <= int(text) <= maximum:
        raise ApiError(
            400,
            "INVALID_PARAMETER",
            f"limit must be an integer from 1 to {maximum}, got {text!r}",
            fields=[{"field": "limit", "code": "INVALID_PARAMETER", "message": f"1..{maximum}"}],
        )
    return int(text)


def _not_found(error: NotFound) -> ApiError:
    status = 404 if error.field in ("segment_id", "run_id") else 400
    return ApiError(
        status,
        "NOT_FOUND" if status == 404 else "INVALID_PARAMETER",
        str(error),
        fields=[
            {"field": error.field, "code": "NOT_FOUND" if status == 404 else "INVALID_TOKEN", "message": str(error)}
        ],
    )


def _reader(request: Request) -> SegmentReader:
    reader = _state(request).segments
    if reader is None:
        raise RuntimeError("the API runs without a segment reader (lakecdp.api.server.build_state makes one)")
    return reader


async def list_segments(request: Request) -> Response:
    key = authenticate(request)
    allowed = allowed_segments(request, key)
    segments = await run_in_threadpool(_reader(request).list_segments, allowed)
    return JSONResponse({"segments": segments})


async def segment_members(request: Request) -> Response:
    key = authenticate(request)
    segment_id = _segment(request, key)
    limit = _limit(request)
    reader = _reader(request)
    try:
        page = await run_in_threadpool(
            reader.members,
            segment_id,
            run_id=request.query_params.get("run_id"),
            page_token=request.query_params.get("page_token"),
            limit=limit,
        )
    except NotFound as error:
        raise _not_found(error) from error
    return JSONResponse(page)


async def segment_changes(request: Request) -> Response:
    key = authenticate(request)
    segment_id = _segment(request, key)
    limit = _limit(request)
    reader = _reader(request)
    try:
        page = await run_in_threadpool(
            reader.changes, segment_id, cursor=request.query_params.get("cursor"), limit=limit
        )
    except NotFound as error:
        raise _not_found(error) from error
    return JSONResponse(page)


ROUTES = (
    ("/v1/segments", list_segments),
    ("/v1/segments/{segment_id}/members", segment_members),
    ("/v1/segments/{segment_id}/changes", segment_changes),
)
