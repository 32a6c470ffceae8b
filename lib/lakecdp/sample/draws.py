"""Deterministic chance: every random choice is a hash of (seed, entity keys, purpose).

A :class:`Draw` is bound to one entity (``Draw(seed, "person", 17)``); ``draw.u("first_name")``
is the same number in every run, on every machine, in whatever Spark partition the entity lands,
for any population size. Nothing here uses ``random`` or Spark's ``rand()``, whose values depend on
partitioning.
"""

from __future__ import annotations

from collections.abc import Sequence
from hashlib import blake2b
from typing import TypeVar

T = TypeVar("T")
_SCALE = float(1 << 64)


class Draw:
    """Random-looking but fixed numbers for one entity, keyed by purpose."""

    __slots__ = ("_prefix",)

    def __init__(self, seed: int, *keys: object) -> None:
        self._prefix = ("\x1f".join([str(seed), *map(str, keys)]) + "\x1e").encode()

    def child(self, *keys: object) -> Draw:
        """A draw for a sub-entity (a session of a person, an item of an order)."""
        child = Draw.__new__(Draw)
        child._prefix = self._prefix + ("\x1f".join(map(str, keys)) + "\x1e").encode()
        return child

    def u(self, purpose: str) -> float:
        """A number in [0, 1)."""
        digest = blake2b(self._prefix + purpose.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / _SCALE

    def chance(self, purpose: str, rate: float) -> bool:
        return self.u(purpose) < rate

    def integer(self, purpose: str, low: int, high: int) -> int:
        """A whole number in [low, high], both inclusive."""
        return low + int(self.u(purpose) * (high - low + 1))

    def pick(self, purpose: str, values: Sequence[T]) -> T:
        return values[int(self.u(purpose) * len(values))]

    def digits(self, purpose: str, count: int) -> str:
        return str(int(self.u(purpose) * 10**count)).zfill(count)

    def hex(self, purpose: str, length: int = 16) -> str:
        return blake2b(self._prefix + purpose.encode(), digest_size=length // 2).hexdigest()


def permuted(number: int, seed: int, *, digits: int) -> str:
    """A bijection of [0, 10**digits): ids look random, stay unique and never reveal person order."""
    modulus = 10**digits
    if not 0 <= number < modulus:
        raise ValueError(f"id number {number} does not fit in {digits} digits; use fewer people")
    # a multiplier coprime to 10 permutes the residues modulo 10**digits
    return str((number * 7_654_321 + seed * 1_000_003) % modulus).zfill(digits)
