"""The JSON answer of the routes that serve shapes, encoded by msgspec."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.responses import JSONResponse


class ShapedResponse(JSONResponse):
    """A JSONResponse whose content may hold service.shapes structs; msgspec writes it whole."""

    def render(self, content: Any) -> bytes:
        return msgspec.json.encode(content)
