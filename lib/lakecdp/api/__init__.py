"""The HTTP API: event intake (``POST /v1/events``, ``/v1/batch``) and segments for email platforms.

``lakecdp serve`` runs it (Starlette on uvicorn); docs/api.md describes the design.
"""

from __future__ import annotations

from lakecdp.api.config import ApiConfig, load_api_config

__all__ = ["ApiConfig", "load_api_config"]
