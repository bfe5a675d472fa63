"""Requests cut by the shutdown grace answer a JSON 503, not uvicorn's plain-text 500."""

from __future__ import annotations

import asyncio
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.http.errors import ErrorCode, error_response

log = logging.getLogger(__name__)
# A replica that is stopping will not answer again; another one, or this one restarted, will.
RETRY_AFTER_SECONDS = 5


class ShutdownAnswer:
    """Outermost middleware: turns the cancellation uvicorn sends at the grace's end into a 503."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except asyncio.CancelledError:
            if started:
                raise
            # The top of the request's task: uvicorn cancelled it and only waits for it to end,
            # so answering here, not re-raising, is what lets the client know.
            log.warning("request cut by shutdown", extra={"path": scope["path"]})
            answer = error_response(
                503,
                ErrorCode.SHUTTING_DOWN,
                "the service is shutting down and stopped this request; retry it",
                {"Retry-After": str(RETRY_AFTER_SECONDS), "Connection": "close"},
            )
            await answer(scope, receive, send)
