"""Request bodies: read within a size limit, and decoded into their shapes or answered 400.

A body is decoded straight into its msgspec struct, which bounds its depth too: a value
nested where the shape has none is refused at its first level, so no input can recurse.
The 400 names the member at fault (`$.fields[1]`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TypeVar

import msgspec
from starlette.requests import Request

from service.http.errors import ApiError, BodyTooLarge, ErrorCode

T = TypeVar("T")
_AT = re.compile(r" - at `\$\.?([^`]*)`$")


async def read_body(request: Request, limit: int, what: str = "request body") -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(what, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def decode(body: bytes, shape: type[T], codes: Mapping[str, ErrorCode] | None = None) -> T:
    """The body as `shape`; else 400, with the code `codes` gives the member at fault (its
    first name) or invalid_body, and a message naming that member."""
    try:
        return msgspec.json.decode(body, type=shape)
    except msgspec.ValidationError as exc:
        path = _at(str(exc))
        code = (codes or {}).get(re.split(r"[.\[]", path, maxsplit=1)[0], ErrorCode.INVALID_BODY)
        raise ApiError(400, code, _message(str(exc), path)) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, ErrorCode.INVALID_BODY, f"the body is not JSON: {exc}") from None


def _at(problem: str) -> str:
    found = _AT.search(problem)
    return found.group(1) if found else ""


def _message(problem: str, path: str) -> str:
    what = _AT.sub("", problem)
    return f"{path}: {what}" if path else f"the body: {what}"
