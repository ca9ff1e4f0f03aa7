"""Checks of numeric parameters, shared by the library functions that take them.

A bad value (NaN, infinite, outside its range, a fraction for an integer) raises one
``NerveError`` naming the parameter as the command line spells it and the allowed range,
so the API refuses what ``nnunet-nerve`` refuses (for example a negative lesion ``k``,
which would flag every nerve slice as a lesion).
"""
from __future__ import annotations

import math
import numbers

from nnunet_nerve.errors import NerveError


def require_number(value, name: str, *, minimum: "float | None" = None, maximum: "float | None" = None,
                   above: "float | None" = None, integer: bool = False) -> None:
    """NerveError unless ``value`` is a finite number (an integer when ``integer``) with
    ``minimum <= value <= maximum`` and ``value > above`` (each bound optional)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    ok = ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum) \
        and (above is None or value > above)
    if not ok:
        bounds = [f"> {above:g}" if above is not None else None,
                  f">= {minimum:g}" if minimum is not None else None,
                  f"<= {maximum:g}" if maximum is not None else None]
        kind = "an integer" if integer else "a finite number"
        raise NerveError(f"{name} {value!r}: expected {kind} " + " and ".join(b for b in bounds if b))
