"""Activation: deliver segment changes to files, webhooks and hashed audiences, exactly once,
with suppression through the identity graph. The step is :func:`lakecdp.activation.job.run`."""

from __future__ import annotations

from lakecdp.activation.config import (
    DestinationFile,
    FileDestination,
    HashedAudienceDestination,
    WebhookDestination,
    load_destinations,
)
from lakecdp.activation.files import escape_csv_cell, write_export
from lakecdp.activation.hashing import hash_email, hash_phone, normalise_email, normalise_phone
from lakecdp.activation.ledger import idempotency_key
from lakecdp.activation.webhook import WebhookClient, parse_retry_after

__all__ = [
    "DestinationFile",
    "FileDestination",
    "HashedAudienceDestination",
    "WebhookDestination",
    "WebhookClient",
    "escape_csv_cell",
    "hash_email",
    "hash_phone",
    "idempotency_key",
    "load_destinations",
    "normalise_email",
    "normalise_phone",
    "parse_retry_after",
    "write_export",
]
