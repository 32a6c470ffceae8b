"""Recommendation feedback links: "not interested" / "wrong recommendation" for one product or category.

A template puts ``{{ feedback_link(product.product_id) }}`` (or ``feedback_link(category=...,
reason='wrong_recommendation')``) beside a recommendation. The link is the configured
``feedback_url`` (``conf/personalization.yaml``) with one query parameter, the token::

    lakecdp_feedback=<reason>.<p|c>.<id>      e.g. lakecdp_feedback=not_interested.p.P00042

The email platform reports the click with that url in its engagement export (or posts it to
the HTTP intake); ``conf/sources/email_events.yaml`` maps such a click to a
``feedback_<reason>`` event with ``product_id`` or ``category``, and the features step keeps that
product (category) out of the customer's recommendations for ``feedback_suppression_days``
(:mod:`lakecdp.features.recommend`). The token names no person: the click's email does.
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlencode, urlsplit, urlunsplit

FEEDBACK_PARAMETER = "lakecdp_feedback"
REASONS = ("not_interested", "wrong_recommendation")
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

Reason = Literal["not_interested", "wrong_recommendation"]


def feedback_token(
    *, reason: str = "not_interested", product_id: str | None = None, category: str | None = None
) -> str:
    """``<reason>.<p|c>.<id>``; exactly one of ``product_id`` and ``category``.

    Example:
        >>> feedback_token(product_id="P00042")
        'not_interested.p.P00042'
    """
    if reason not in REASONS:
        raise ValueError(f"feedback reason must be one of {list(REASONS)}, got {reason!r}")
    if (product_id is None) == (category is None):
        raise ValueError("give exactly one of product_id and category")
    kind, value = ("p", product_id) if product_id is not None else ("c", category)
    if not _ID.match(str(value)):
        raise ValueError(f"feedback id {value!r} must be 1-64 characters of A-Z a-z 0-9 _ -")
    return f"{reason}.{kind}.{value}"


def feedback_url(base_url: str, token: str) -> str:
    """``base_url`` with ``lakecdp_feedback=<token>`` added to its query."""
    parts = urlsplit(base_url)
    query = "&".join(q for q in (parts.query, urlencode({FEEDBACK_PARAMETER: token})) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def make_feedback_link(base_url: str):
    """The ``feedback_link`` template function for ``base_url``."""

    def feedback_link(
        product_id: str | None = None, *, category: str | None = None, reason: str = "not_interested"
    ) -> str:
        return feedback_url(base_url, feedback_token(reason=reason, product_id=product_id, category=category))

    return feedback_link
