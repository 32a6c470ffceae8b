"""``conf/api.yaml``: where the intake log lives, limits, and the API keys (hashed).

A key is never written in YAML: an entry names the SHA-256 of the key, either inline
(``sha256: <hex>``, a hash is not a secret for a random 256-bit key) or through an environment
variable (``sha256_env: NAME``). ``lakecdp api-key new`` prints a fresh key and its hash.

Example:
    >>> config = load_api_config("conf")
    >>> config.keys[0].sources
    ['web_events', 'email_events']
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from lakecdp.config import ConfigError, StrictModel, load_model

#: the sources the intake accepts: the Kafka stream's JSON events, and shop orders (a purchase
#: posted by the shop updates the profile's order facts through the batch ingest's orders write)
INTAKE_SOURCES = ("web_events", "email_events", "shop_orders")


def hash_key(key: str) -> str:
    """The hex SHA-256 of an API key: what config and memory hold instead of the key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh random key (``lcdp_`` + 43 url-safe characters) and its hash."""
    key = "lcdp_" + secrets.token_urlsafe(32)
    return key, hash_key(key)


class ApiKey(StrictModel):
    """One API key: who it is, what it may do, how fast."""

    #: a name for logs and the rate limiter (never the key)
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    sha256_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    #: sources this key may post events of (intake)
    sources: list[Literal["web_events", "email_events", "shop_orders"]] = Field(default_factory=list)
    #: destinations (conf/destinations/<name>.yaml) whose segments this key may read
    destinations: list[str] = Field(default_factory=list)
    #: sustained requests per second, and the burst allowed above it (token bucket)
    rate_per_second: float = Field(default=200.0, gt=0)
    burst: int = Field(default=400, gt=0)

    @model_validator(mode="after")
    def _one_hash(self) -> ApiKey:
        if (self.sha256 is None) == (self.sha256_env is None):
            raise ValueError(f"key {self.id!r}: give exactly one of sha256 or sha256_env")
        return self

    def digest(self) -> str:
        """The key's hash (from the environment variable if the config names one)."""
        if self.sha256 is not None:
            return self.sha256
        value = os.environ.get(self.sha256_env or "", "").strip().lower()
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise ConfigError(
                f"api key {self.id!r}: environment variable {self.sha256_env} must hold a hex SHA-256 "
                f"(64 characters), got {len(value)} characters"
            )
        return value


class ApiConfig(StrictModel):
    """``conf/api.yaml``."""

    version: Literal[1]
    host: str = "127.0.0.1"
    port: int = Field(default=8787, ge=0, le=65535)
    #: the append-only intake log (relative paths: under the project root)
    log_dir: str = "warehouse/_intake"
    #: a segment file is closed and a new one started past this size
    segment_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    #: largest accepted request body (413 above it)
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    #: most events in one /v1/batch request
    max_batch_events: int = Field(default=1000, gt=0)
    #: a member / change page holds at most this many rows
    max_page_size: int = Field(default=1000, gt=0)
    keys: list[ApiKey] = Field(default_factory=list)

    @field_validator("keys")
    @classmethod
    def _unique(cls, keys: list[ApiKey]) -> list[ApiKey]:
        ids = [k.id for k in keys]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate key ids in {ids}")
        return keys


def load_api_config(conf_dir: str | os.PathLike[str]) -> ApiConfig:
    """Load ``<conf_dir>/api.yaml`` (errors name the file and field)."""
    return load_model(Path(conf_dir) / "api.yaml", ApiConfig)


class KeyRing:
    """Looks a presented key up by its hash (constant-time comparison)."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self._by_digest = {key.digest(): key for key in keys}

    def find(self, presented: str | None) -> ApiKey | None:
        if not presented:
            return None
        digest = hash_key(presented)
        for known, key in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                return key
        return None
