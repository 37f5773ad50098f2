"""Strict equality of RON values for the RON tests (plain == treats 1, 1.0 and True as equal)."""

from __future__ import annotations

import math

from mlxstory.formats import ron


def same(a: object, b: object) -> bool:
    """Equality that also checks types (1 != 1.0 != True), struct names and float bits (-0.0, NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a.hex() == b.hex() or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (ron.Struct, ron.TupleStruct)) and a.name != b.name:
        return False
    if isinstance(a, dict):
        return len(a) == len(b) and all(same(ka, kb) and same(va, vb)
                                        for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b
