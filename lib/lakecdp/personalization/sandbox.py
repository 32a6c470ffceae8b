"""The template sandbox with a render budget: every template (email templates and webhook
payload templates) renders in a :class:`BudgetedSandbox`.

Jinja2's ``ImmutableSandboxedEnvironment`` already refuses dunder attributes and calls that
change lists, dicts and sets (``segments.append('vip')``), so a template can never change the
data it is given. On top of it a render has a budget (:class:`RenderBudget`):

- **time**: checked at every loop iteration, call, filter, arithmetic operator and output chunk;
- **output size**: the rendered text, and every intermediate string or list, is at most
  ``max_output_chars`` long (a larger one cannot be part of a valid answer);
- **loop iterations**: all ``{% for %}`` iterations of one render together;
- **arithmetic**: ``**`` whose result would exceed ``max_int_bits``; ``*`` and ``%`` that
  would build a string or list beyond the output cap are refused *before* they run;
- padding and repetition arguments (``center``, ``ljust``, ``format`` widths, ``lipsum``...)
  above the output cap are refused before they run.

Refusals raise :class:`RenderBudgetExceeded` (a ``SecurityError``) naming the limit.

Example:
    >>> env = BudgetedSandbox(budget=RenderBudget(max_seconds=1))
    >>> env.render_string("{{ 9 ** (9 ** 9) }}", {})
    Traceback (most recent call last):
    lakecdp.personalization.sandbox.RenderBudgetExceeded: render budget: 9 ** 387420489 has about 1228093894 bits (limit 4096)
"""

from __future__ import annotations

import contextvars
import math
import operator
import re
import time
from collections.abc import Iterable, Iterator, Sized
from dataclasses import dataclass
from typing import Any

from jinja2 import nodes, pass_context
from jinja2.compiler import CodeGenerator
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import _PassArg


class RenderBudgetExceeded(SecurityError):
    """A render went over its budget (time, output size, loop iterations, number size)."""


@dataclass(frozen=True)
class RenderBudget:
    """Limits of one render. Defaults fit an email: shipped templates use a tiny fraction."""

    max_seconds: float = 2.0
    max_output_chars: int = 1_000_000
    max_loop_iterations: int = 100_000
    # 4096 bits: any number a template has reason to show, far from 9**(9**9)
    max_int_bits: int = 4096


class _Meter:
    """The running count of one render against its budget."""

    def __init__(self, budget: RenderBudget) -> None:
        self.budget = budget
        self.deadline = time.monotonic() + budget.max_seconds
        self.iterations = 0
        self.output = 0

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise RenderBudgetExceeded(f"render budget: took longer than {self.budget.max_seconds:g} s (max_seconds)")

    def size(self, value: Any, what: str) -> Any:
        if isinstance(value, (str, bytes, list, tuple)) and len(value) > self.budget.max_output_chars:
            raise RenderBudgetExceeded(
                f"render budget: {what} is {len(value):,} long (max_output_chars {self.budget.max_output_chars:,})"
            )
        return value

    def planned(self, length: float, what: str) -> None:
        if length > self.budget.max_output_chars:
            raise RenderBudgetExceeded(
                f"render budget: {what} would be {int(length):,} long (max_output_chars "
                f"{self.budget.max_output_chars:,})"
            )


_METER: contextvars.ContextVar[_Meter | None] = contextvars.ContextVar("render_meter", default=None)
_DEFAULT_BUDGET = RenderBudget()


def _meter() -> _Meter:
    # outside a render (Jinja folding constants at compile time) the default limits apply
    return _METER.get() or _Meter(_DEFAULT_BUDGET)


_PERCENT_WIDTH = re.compile(r"%[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_BRACE_FIELD = re.compile(r"\{[^{}]*\}")
_DIGITS = re.compile(r"\d+")
# str methods (and filters) whose integer arguments set the size of what they build
_SIZING_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})
_SIZING_FILTERS = frozenset({"center", "indent", "slice", "batch", "wordwrap", "truncate", "urlize"})


def _check_percent_format(fmt: Any, args: tuple[Any, ...], meter: _Meter) -> None:
    if not isinstance(fmt, str):
        return
    for width, precision in _PERCENT_WIDTH.findall(fmt):
        for number in (width, precision):
            if number == "*":
                for arg in args if isinstance(args, tuple) else (args,):
                    if isinstance(arg, int) and not isinstance(arg, bool):
                        meter.planned(abs(arg), "a '*' width in a format string")
            elif number:
                meter.planned(int(number), f"a %-format width {number}")


def _check_brace_format(fmt: str, meter: _Meter) -> None:
    for field in _BRACE_FIELD.findall(fmt):
        for number in _DIGITS.findall(field):
            meter.planned(int(number), f"a format width {number}")


def _check_int_args(args: Iterable[Any], meter: _Meter, what: str) -> None:
    for arg in args:
        if isinstance(arg, int) and not isinstance(arg, bool):
            meter.planned(abs(arg), f"{what} of size {arg}")


def _estimate_join(separator: Any, parts: Any, meter: _Meter) -> None:
    if isinstance(parts, (list, tuple)):
        sep = len(separator) if isinstance(separator, str) else 1
        total = 0
        for part in parts:
            total += (len(part) if isinstance(part, Sized) else 20) + sep
            meter.planned(total, "a join")


def _estimate_replace(text: Any, args: tuple[Any, ...], meter: _Meter) -> None:
    if isinstance(text, str) and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        count = len(text) + 1 if args[0] == "" else text.count(args[0])
        if len(args) > 2 and isinstance(args[2], int) and args[2] >= 0:
            count = min(count, args[2])
        meter.planned(len(text) + count * (len(args[1]) - len(args[0])), "a replace")


def _pre_check_call(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], meter: _Meter) -> None:
    # the sandbox hands out str.format wrapped (functools.update_wrapper keeps __wrapped__)
    bound = getattr(func, "__wrapped__", func)
    owner = getattr(bound, "__self__", None)
    name = getattr(bound, "__name__", "")
    if isinstance(owner, str):
        if name in _SIZING_METHODS:
            _check_int_args((*args, *kwargs.values()), meter, f"str.{name}")
        elif name in ("format", "format_map"):
            _check_brace_format(owner, meter)
        elif name == "join" and args:
            _estimate_join(owner, args[0], meter)
        elif name == "replace":
            _estimate_replace(owner, args, meter)
    elif name == "generate_lorem_ipsum":
        _check_int_args((*args, *kwargs.values()), meter, "lipsum")
        n = args[0] if args else kwargs.get("n", 5)
        if isinstance(n, int) and n > 100:
            raise RenderBudgetExceeded(f"render budget: lipsum of {n} paragraphs (at most 100)")


def _budgeted_filter(name: str, func: Any) -> Any:
    """``func`` wrapped to check the budget; marked ``pass_context`` so Jinja never runs it
    while compiling (constant folding happens outside any render's budget)."""
    pass_arg = _PassArg.from_obj(func)

    @pass_context
    def wrapper(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
        meter = _meter()
        meter.tick()
        if name in _SIZING_FILTERS:
            _check_int_args((*args, *kwargs.values()), meter, f"filter {name}")
        elif name == "format":
            _check_percent_format(value, args, meter)
        elif name == "join":
            parts = list(value) if not isinstance(value, (list, tuple, str)) else value
            meter.size(parts, "the input of join")
            _estimate_join(args[0] if args else kwargs.get("d", ""), parts, meter)
            value = parts
        elif name == "replace":
            _estimate_replace(str(value), args, meter)
        if pass_arg is _PassArg.context:
            result = func(context, value, *args, **kwargs)
        elif pass_arg is _PassArg.eval_context:
            result = func(context.eval_ctx, value, *args, **kwargs)
        elif pass_arg is _PassArg.environment:
            result = func(context.environment, value, *args, **kwargs)
        else:
            result = func(value, *args, **kwargs)
        return meter.size(result, f"the result of filter {name}")

    wrapper.__name__ = getattr(func, "__name__", name)
    return wrapper


def _budget_loop(iterable: Any) -> Iterator[Any]:
    """Every ``{% for %}`` iterates through this: counts iterations, checks the clock."""
    meter = _meter()
    limit = meter.budget.max_loop_iterations
    for item in iterable:
        meter.iterations += 1
        if meter.iterations > limit:
            raise RenderBudgetExceeded(f"render budget: more than {limit:,} loop iterations (max_loop_iterations)")
        meter.tick()
        yield item


def _budget_concat(value: Any) -> Any:
    """``a ~ b`` results pass through this: a doubling string stops at the output cap."""
    meter = _meter()
    meter.tick()
    return meter.size(value, "a joined string (~)")


_LOOP_FILTER = "_lakecdp_budget_loop"
_CONCAT_FILTER = "_lakecdp_budget_concat"


class _BudgetCodeGenerator(CodeGenerator):
    """Wraps every loop's iterable and every ``~`` before the template is compiled."""

    def visit_Template(self, node: nodes.Template, frame: Any = None) -> None:
        for loop in node.find_all(nodes.For):
            if not (isinstance(loop.iter, nodes.Filter) and loop.iter.name == _LOOP_FILTER):
                loop.iter = nodes.Filter(loop.iter, _LOOP_FILTER, [], [], None, None, lineno=loop.lineno)
        for parent in list(node.find_all(nodes.Node)):
            for field_name, value in parent.iter_fields():
                if isinstance(value, nodes.Concat):
                    setattr(parent, field_name, self._wrap_concat(value))
                elif isinstance(value, list):
                    value[:] = [self._wrap_concat(v) if isinstance(v, nodes.Concat) else v for v in value]
        super().visit_Template(node, frame)

    @staticmethod
    def _wrap_concat(node: nodes.Concat) -> nodes.Filter:
        return nodes.Filter(node, _CONCAT_FILTER, [], [], None, None, lineno=node.lineno)


_BINOPS = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "//": operator.floordiv,
    "%": operator.mod,
    "**": operator.pow,
}


def _int_bits(value: Any) -> int:
    return abs(value).bit_length() if isinstance(value, int) else 0


class BudgetedSandbox(ImmutableSandboxedEnvironment):
    """An immutable Jinja2 sandbox whose renders keep to a :class:`RenderBudget`.

    Render with :meth:`render_template` / :meth:`render_string` (or inside
    :meth:`metered`); a plain ``template.render`` still runs sandboxed, with the default budget
    checked per operation.
    """

    code_generator_class = _BudgetCodeGenerator
    # checked here (before Python runs them), and never folded at compile time
    intercepted_binops = frozenset(_BINOPS)

    def __init__(self, *, budget: RenderBudget | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.budget = budget or RenderBudget()
        self.filters[_LOOP_FILTER] = _budget_loop
        self.filters[_CONCAT_FILTER] = _budget_concat
        self._wrap_filters()

    def _wrap_filters(self) -> None:
        for name, func in list(self.filters.items()):
            if name not in (_LOOP_FILTER, _CONCAT_FILTER) and not getattr(func, "_lakecdp_budgeted", False):
                wrapped = _budgeted_filter(name, func)
                wrapped._lakecdp_budgeted = True
                self.filters[name] = wrapped

    def add_filter(self, name: str, func: Any) -> None:
        """Register a filter; it gets the same budget checks as the built-in ones."""
        self.filters[name] = func
        self._wrap_filters()

    # -- hooks the sandbox calls for every operator, call and attribute -----------------
    def call_binop(self, context: Context, operator_symbol: str, left: Any, right: Any) -> Any:
        meter = _meter()
        meter.tick()
        if operator_symbol == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
            bits = right * math.log2(abs(left)) if abs(left) > 1 else 1
            if bits > meter.budget.max_int_bits:
                raise RenderBudgetExceeded(
                    f"render budget: {left} ** {right} has about {int(bits)} bits (limit {meter.budget.max_int_bits})"
                )
        elif operator_symbol == "*":
            for sequence, times in ((left, right), (right, left)):
                if isinstance(sequence, (str, list, tuple)) and isinstance(times, int):
                    meter.planned(len(sequence) * times, f"a repeated {type(sequence).__name__}")
            if isinstance(left, int) and isinstance(right, int):
                if _int_bits(left) + _int_bits(right) > meter.budget.max_int_bits:
                    raise RenderBudgetExceeded(
                        f"render budget: a product of more than {meter.budget.max_int_bits} bits"
                    )
        elif operator_symbol == "%" and isinstance(left, str):
            _check_percent_format(left, right if isinstance(right, tuple) else (right,), meter)
        result = _BINOPS[operator_symbol](left, right)
        if isinstance(result, int) and _int_bits(result) > meter.budget.max_int_bits:
            raise RenderBudgetExceeded(
                f"render budget: a number of {_int_bits(result)} bits (limit {meter.budget.max_int_bits})"
            )
        return meter.size(result, f"the result of {operator_symbol!r}")

    def call(self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N807
        meter = _meter()
        meter.tick()
        _pre_check_call(__obj, args, kwargs, meter)
        result = super().call(__context, __obj, *args, **kwargs)
        return meter.size(result, f"the result of {getattr(__obj, '__name__', 'a call')}()")

    def getattr(self, obj: Any, attribute: str) -> Any:
        _meter().tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _meter().tick()
        return super().getitem(obj, argument)

    # -- rendering under a budget ---------------------------------------------------------
    def render_template(self, template: Any, context: dict[str, Any], *, budget: RenderBudget | None = None) -> str:
        """Render a compiled ``template`` with ``context`` within ``budget`` (default: this
        environment's), counting output as it is produced."""
        meter = _Meter(budget or self.budget)
        token = _METER.set(meter)
        try:
            parts = []
            for chunk in template.generate(context):
                meter.output += len(chunk)
                if meter.output > meter.budget.max_output_chars:
                    raise RenderBudgetExceeded(
                        f"render budget: output longer than {meter.budget.max_output_chars:,} "
                        "characters (max_output_chars)"
                    )
                meter.tick()
                parts.append(chunk)
            return "".join(parts)
        finally:
            _METER.reset(token)

    def render_string(self, source: str, context: dict[str, Any], *, budget: RenderBudget | None = None) -> str:
        return self.render_template(self.from_string(source), context, budget=budget)
