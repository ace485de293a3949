"""Compare computed numbers with values printed in the spec, to the digits printed."""

from __future__ import annotations

from decimal import Decimal

import numpy as np


def half_ulp(listed: str) -> float:
    """Half a unit in the last printed digit of ``listed`` (e.g. "0.019987" -> 5e-7)."""
    return 0.5 * 10.0 ** Decimal(listed).as_tuple().exponent


def assert_listed(actual, listed) -> None:
    """Assert that every ``actual`` value rounds to the corresponding printed string in ``listed``.

    Tolerance: half a unit in the last printed digit, i.e. exactly "agrees to the digits listed"
    (a float64 rounding slack of 1e-15 relative is added for values printed exactly, like "0.8").
    """
    if isinstance(listed, str):
        listed, actual = [listed], [actual]
    actual = np.asarray(actual, dtype=np.float64).ravel()
    assert actual.size == len(listed), (actual, listed)
    for a, s in zip(actual, listed):
        tol = half_ulp(s) + 1e-15 * abs(float(s))
        assert abs(a - float(s)) <= tol, f"{a!r} does not match listed {s} (tol {tol:g})"
