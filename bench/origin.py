"""The origin feature's refresh, as the baseline: per link one GET, then one UPDATE, in turn.

`python -m bench.origin DSN JIRA_URL EMAIL TOKEN LIMIT` refreshes the first LIMIT linked
keys that way and prints what it did as JSON. Each UPDATE is its own statement and
transaction, by the primary key, so the baseline pays nothing for a missing index.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import asyncpg

from service.model import Issue, normalize_issue
from service.storage.pool import Connection

FIELDS = "status,summary,assignee,priority,updated"
UPDATE = """
UPDATE issues
   SET key = $2, status_id = $3, status_name = $4, status_category = $5, summary = $6,
       assignee_account_id = $7, assignee_display_name = $8, priority = $9,
       jira_updated_at = $10, fetched_at = now(), source = 'poll', state = 'ok'
 WHERE id = $1
"""


def row(issue: Issue) -> tuple[Any, ...]:
    status, person = issue.status, issue.assignee
    return (
        issue.id,
        issue.key,
        status.id if status else None,
        status.name if status else None,
        status.category if status else None,
        issue.summary,
        person.account_id if person else None,
        person.display_name if person else None,
        issue.priority,
        issue.updated,
    )


async def update_each(connection: Connection, issues: Sequence[Issue]) -> None:
    """One UPDATE statement (and so one transaction) per issue, one after another."""
    for issue in issues:
        await connection.execute(UPDATE, *row(issue))


async def refresh(dsn: str, jira: str, auth: str, limit: int) -> dict[str, Any]:
    connection = await asyncpg.connect(dsn)
    headers = {"Authorization": auth, "Accept": "application/json"}
    requests = 0
    try:
        async with aiohttp.ClientSession(headers=headers) as session:
            start = time.perf_counter()
            keys = await connection.fetch(
                "SELECT key FROM links WHERE project_id = 'bench' ORDER BY linked_at, key LIMIT $1",
                limit,
            )
            for record in keys:
                url = f"{jira}/rest/api/3/issue/{record['key']}"
                async with session.get(url, params={"fields": FIELDS}) as reply:
                    requests += 1
                    reply.raise_for_status()
                    issue = normalize_issue(await reply.json())
                await update_each(connection, [issue])
            seconds = time.perf_counter() - start
    finally:
        await connection.close()
    return {"issues": len(keys), "requests": requests, "seconds": seconds}


def main(argv: list[str]) -> int:
    dsn, jira, email, token, limit = argv
    auth = "Basic " + base64.b64encode(f"{email}:{token}".encode()).decode()
    print(json.dumps(asyncio.run(refresh(dsn, jira, auth, int(limit)))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
