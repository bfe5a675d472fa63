"""Query and path parameters that are whole numbers: one reading, one message, for every route."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.http.errors import ErrorCode, InvalidNumber
from service.model import whole_number


def whole_param(
    params: Mapping[str, Any],
    name: str,
    code: ErrorCode,
    default: int | None = None,
    high: int | None = None,
) -> int:
    """The parameter `name` as a whole number from 1 to `high`; absent: `default`; else 400."""
    raw = params.get(name)
    if raw is None and default is not None:
        return default
    number = None if raw is None else whole_number(str(raw), 1, high or 10**18 - 1)
    if number is None:
        raise InvalidNumber(code, name, 1, high)
    return number
