"""The template engine: an immutable Jinja2 sandbox with a render budget
(:mod:`lakecdp.personalization.sandbox`) and tracking of missing fields.

- HTML templates (``.html``, ``.htm``) are autoescaped; text templates (``.txt``) are not.
- A field the data lacks renders empty and is recorded as *missing* (or, with ``strict=True``,
  raises like ``StrictUndefined``); ``{{ first_name | fallback('there') }}`` uses the fallback
  and records *fallback usage* instead.
- ``in_segment('vip')`` is true when the customer is in the segment (by id or display name).
- ``feedback_link(product_id)`` is the recommendation feedback link of ``feedback_url``
  (:mod:`lakecdp.personalization.feedback`); defined only when the engine has a ``feedback_url``.
- Customer data is only ever passed as values: it is never compiled as template code, and the
  sandbox blocks attribute tricks (``__class__``, ``mro``) from templates.
- The sandbox is immutable (``segments.append('vip')`` is refused: the caller's context never
  changes) and each render keeps to a :class:`RenderBudget` (time, output size, loop
  iterations, number size); going over raises :class:`RenderBudgetExceeded`.

Example:
    >>> engine = TemplateEngine(Path("templates"))
    >>> engine.render("welcome.html", {"first_name": "Ada"}).text
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, Undefined, pass_context, select_autoescape
from jinja2.runtime import Context

from lakecdp.personalization.feedback import make_feedback_link
from lakecdp.personalization.sandbox import BudgetedSandbox, RenderBudget

_REPORT: contextvars.ContextVar[RenderReport | None] = contextvars.ContextVar("render_report", default=None)


@dataclass
class RenderReport:
    """What one render noticed: fields it needed but did not have, fallbacks it used."""

    missing: set[str] = field(default_factory=set)
    fallbacks: set[str] = field(default_factory=set)


@dataclass
class Rendered:
    template: str
    text: str
    missing: set[str]
    fallbacks: set[str]


def _record_missing(undefined: Undefined) -> None:
    report = _REPORT.get()
    if report is not None:
        report.missing.add(undefined._undefined_name or "<unknown>")


class TrackingUndefined(Undefined):
    """Renders as empty, and records the field as missing."""

    __slots__ = ()

    def __str__(self) -> str:
        _record_missing(self)
        return ""

    def __iter__(self):
        _record_missing(self)
        return iter(())

    def __len__(self) -> int:
        _record_missing(self)
        return 0


class StrictTrackingUndefined(StrictUndefined):
    """Records the field as missing, then fails like ``StrictUndefined``."""

    __slots__ = ()

    def _fail_with_undefined_error(self, *args: Any, **kwargs: Any):
        _record_missing(self)
        return super()._fail_with_undefined_error(*args, **kwargs)

    __str__ = __iter__ = __len__ = __eq__ = __ne__ = __bool__ = __hash__ = _fail_with_undefined_error
    __add__ = __radd__ = __contains__ = __getitem__ = _fail_with_undefined_error


def _is_empty(value: Any) -> bool:
    return isinstance(value, Undefined) or value is None or value == "" or value == [] or value == {}


def fallback(value: Any, default: Any = "", name: str | None = None) -> Any:
    """``value`` unless it is missing or empty, else ``default`` (recorded as fallback usage)."""
    if not _is_empty(value):
        return value
    report = _REPORT.get()
    if report is not None:
        label = value._undefined_name if isinstance(value, Undefined) else None
        report.fallbacks.add(name or label or "<value>")
    return default


@pass_context
def in_segment(context: Context, segment: str) -> bool:
    """True when the customer is in ``segment`` (its id or its display name)."""
    segments = context.get("segments")
    names = context.get("segment_names")
    member_of = set(segments) if isinstance(segments, (list, tuple)) else set()
    if isinstance(names, (list, tuple)):
        member_of |= set(names)
    return segment in member_of


class TemplateEngine:
    """Loads templates from one folder and renders them in the sandbox.

    Args:
        templates_dir: the template folder (``{% include 'blocks/...' %}`` resolves in it).
        strict: raise on a missing field instead of rendering it empty.
        budget: limits of each render (default :class:`RenderBudget`).
    """

    def __init__(
        self,
        templates_dir: Path,
        *,
        strict: bool = False,
        budget: RenderBudget | None = None,
        feedback_url: str | None = None,
    ) -> None:
        self.templates_dir = Path(templates_dir)
        self.environment = BudgetedSandbox(
            budget=budget,
            loader=FileSystemLoader(str(self.templates_dir)),
            autoescape=select_autoescape(enabled_extensions=("html", "htm", "xml"), default_for_string=False),
            undefined=StrictTrackingUndefined if strict else TrackingUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self.environment.add_filter("fallback", fallback)
        self.environment.globals["in_segment"] = in_segment
        if feedback_url:
            # without it a template's ``{% if feedback_link is defined %}`` leaves the link out
            self.environment.globals["feedback_link"] = make_feedback_link(feedback_url)

    def template_names(self) -> list[str]:
        """Renderable templates: ``*.html`` and ``*.txt`` outside ``blocks/`` (which holds includes)."""
        names = []
        for path in sorted(self.templates_dir.rglob("*")):
            relative = path.relative_to(self.templates_dir).as_posix()
            if path.is_file() and path.suffix in (".html", ".txt") and not relative.startswith("blocks/"):
                names.append(relative)
        return names

    def source(self, name: str) -> str:
        return (self.templates_dir / name).read_text(encoding="utf-8")

    def check_syntax(self, name: str) -> None:
        """Parse ``name`` (and nothing else); a syntax error raises ``TemplateSyntaxError`` with its line."""
        self.environment.parse(self.source(name), name, str(self.templates_dir / name))

    def render(self, name: str, context: dict[str, Any]) -> Rendered:
        """Render template ``name`` with ``context`` (plain data, never template code)."""
        report = RenderReport()
        token = _REPORT.set(report)
        try:
            text = self.environment.render_template(self.environment.get_template(name), context)
        finally:
            _REPORT.reset(token)
        return Rendered(template=name, text=text, missing=report.missing, fallbacks=report.fallbacks)
