"""The OpenAPI 3.1 document, built from the source configs (the event schemas are theirs).

Served at ``/openapi.json``; the committed copy is ``docs/openapi.json``
(``lakecdp api-openapi > docs/openapi.json``; a test checks the two are equal).
"""

from __future__ import annotations

from typing import Any

from lakecdp import __version__
from lakecdp.ingest.sources import SourceConfig

_JSON_TYPES = {
    "string": "string",
    "int": "integer",
    "bigint": "integer",
    "double": "number",
    "boolean": "boolean",
    "date": "string",
    "timestamp": "string",
}


def _column_schema(type_name: str) -> dict[str, Any]:
    if type_name in _JSON_TYPES:
        schema: dict[str, Any] = {"type": [_JSON_TYPES[type_name], "null"]}
        if type_name in ("date", "timestamp"):
            schema["format"] = "date-time" if type_name == "timestamp" else "date"
        return schema
    if type_name.startswith("struct<"):
        inner = type_name[len("struct<") : -1]
        return {
            "type": ["object", "null"],
            "properties": {part.split(":", 1)[0]: _column_schema(part.split(":", 1)[1]) for part in inner.split(",")},
        }
    if type_name.startswith("array<"):
        return {"type": ["array", "null"], "items": _column_schema(type_name[len("array<") : -1])}
    return {}


def event_schema(source: SourceConfig) -> dict[str, Any]:
    """JSON schema of one event of ``source`` (unknown fields are kept, so allowed)."""
    return {
        "type": "object",
        "description": f"conf/sources/{source.name}.yaml (docs/sample-data.md#{source.name})",
        "required": [r for r in source.required if "." not in r],
        "properties": {c.name: _column_schema(c.type) for c in source.columns},
    }


def _error() -> dict[str, Any]:
    return {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def openapi_document(sources: dict[str, SourceConfig]) -> dict[str, Any]:
    names = sorted(sources)
    one_of = [{"$ref": f"#/components/schemas/{n}"} for n in names]
    auth: list[dict[str, list[str]]] = [{"bearer": []}]
    errors = {
        "400": _error(),
        "401": _error(),
        "403": _error(),
        "413": _error(),
        "422": _error(),
        "429": _error(),
        "503": _error(),
    }
    accepted = {
        "description": "stored durably (fsync'd) before this answer",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}},
    }
    idem = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "maxLength": 200},
        "description": "a retried request with the same key is stored once and gets the first answer",
    }
    page = [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}}]
    segment = {"name": "segment_id", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "lakecdp API",
            "version": __version__,
            "description": "Event intake and segments for email platforms (docs/api.md).",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                **{n: event_schema(sources[n]) for n in names},
                "Accepted": {
                    "type": "object",
                    "properties": {
                        "accepted": {"type": "integer"},
                        "duplicates": {"type": "integer"},
                        "replayed": {"type": "boolean"},
                        "warnings": {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"}},
                    },
                },
                "FieldError": {
                    "type": "object",
                    "properties": {
                        "field": {"type": "string"},
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                    },
                },
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {
                            "type": "object",
                            "properties": {
                                "status": {"type": "integer"},
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "fields": {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"}},
                            },
                        }
                    },
                },
            },
        },
        "paths": {
            "/healthz": {"get": {"summary": "the process answers", "responses": {"200": {"description": "ok"}}}},
            "/readyz": {
                "get": {
                    "summary": "the intake log is writable and segment tables readable",
                    "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}},
                }
            },
            "/v1/events": {
                "post": {
                    "summary": "one event",
                    "security": auth,
                    "parameters": [idem],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["source", "event"],
                                    "additionalProperties": False,
                                    "properties": {"source": {"enum": names}, "event": {"oneOf": one_of}},
                                }
                            }
                        },
                    },
                    "responses": {"202": accepted, **errors},
                }
            },
            "/v1/batch": {
                "post": {
                    "summary": "many events of one source",
                    "security": auth,
                    "parameters": [idem],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["source", "events"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "source": {"enum": names},
                                        "events": {"type": "array", "items": {"oneOf": one_of}},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {"202": accepted, **errors},
                }
            },
            "/v1/segments": {
                "get": {
                    "summary": "segments this key may read",
                    "security": auth,
                    "responses": {"200": {"description": "segments"}, **errors},
                }
            },
            "/v1/segments/{segment_id}/members": {
                "get": {
                    "summary": "members as of a run (default: latest), paged; suppressed people left out",
                    "security": auth,
                    "parameters": [
                        segment,
                        *page,
                        {"name": "run_id", "in": "query", "schema": {"type": "string"}},
                        {"name": "page_token", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": {"200": {"description": "a page"}, "404": _error(), **errors},
                }
            },
            "/v1/segments/{segment_id}/changes": {
                "get": {
                    "summary": "entered / exited / updated / rekeyed changes after a cursor, each once per cursor",
                    "security": auth,
                    "parameters": [segment, *page, {"name": "cursor", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "a page and the next cursor"}, "404": _error(), **errors},
                }
            },
        },
    }
