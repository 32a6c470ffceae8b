"""Hashed identifiers for ad platforms' audience uploads (Google Customer Match, Meta Custom
Audiences): normalise first, then SHA-256 as lower-case hex.

- email: trimmed and lower-cased (both platforms' published rule).
- phone: E.164 (``+447700900123``; Google) or the same digits without ``+`` (Meta).

Example:
    >>> hash_email("  Ada@Example.COM ")
    'e1e3a4c4...'
"""

from __future__ import annotations

import hashlib
from typing import Literal

import phonenumbers


def normalise_email(email: str | None) -> str | None:
    """Trimmed, lower-cased; None for empty or a value without ``@``."""
    if email is None:
        return None
    value = email.strip().lower()
    return value if "@" in value else None


def normalise_phone(
    phone: str | None, *, default_region: str = "GB", phone_format: Literal["e164", "digits"] = "e164"
) -> str | None:
    """E.164 (or its digits) for a valid number; None for anything that does not parse."""
    if phone is None or not phone.strip():
        return None
    try:
        parsed = phonenumbers.parse(phone.strip(), default_region)
    except phonenumbers.NumberParseException:
        return None
    # is_possible, not is_valid: reserved ranges (Ofcom drama numbers) are still real formats
    if parsed.national_number == 0 or not phonenumbers.is_possible_number(parsed):
        return None
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return e164 if phone_format == "e164" else e164.lstrip("+")


def sha256_hex(value: str | None) -> str | None:
    return None if value is None else hashlib.sha256(value.encode("utf-8")).hexdigest()


def hash_email(email: str | None) -> str | None:
    return sha256_hex(normalise_email(email))


def hash_phone(
    phone: str | None, *, default_region: str = "GB", phone_format: Literal["e164", "digits"] = "e164"
) -> str | None:
    return sha256_hex(normalise_phone(phone, default_region=default_region, phone_format=phone_format))
