"""The baseline server: bare Starlette endpoints under the same uvicorn settings as `serve`.

`GET /issue/{key}` answers a constant issue (the size of ours); `POST /hook` reads the body
and answers a constant outcome. Whatever ours costs beyond these is our own code.
"""

from __future__ import annotations

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ISSUE = {
    "key": "BENCH-7",
    "id": "10007",
    "status": {"id": "3", "name": "In Progress", "category": "indeterminate"},
    "summary": "Fix the billing sync",
    "assignee": {"account_id": "712020:0b7e6c55-7d51", "display_name": "Grace Hopper"},
    "priority": "High",
    "jira_updated_at": "2026-11-26T11:00:00.123Z",
    "fetched_at": "2026-11-26T11:00:01.002Z",
    "verified_at": "2026-11-26T11:00:01.002Z",
    "age_seconds": 12.4,
    "stale": False,
    "source": "webhook",
    "state": "ok",
    "error": None,
}


async def issue(request: Request) -> Response:
    return JSONResponse(ISSUE)


async def hook(request: Request) -> Response:
    await request.body()
    return JSONResponse({"outcome": "applied"})


async def ready(request: Request) -> Response:
    return JSONResponse({"status": "ready"})


app = Starlette(
    routes=[
        Route("/issue/{key}", issue, methods=["GET"]),
        Route("/hook", hook, methods=["POST"]),
        Route("/readyz", ready, methods=["GET"]),
    ]
)


def main(argv: list[str]) -> int:
    # The arguments of service.cli.serve, so that only the application differs.
    uvicorn.run(app, host="127.0.0.1", port=int(argv[0]), log_level="warning", lifespan="on")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
