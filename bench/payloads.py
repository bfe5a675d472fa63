"""Signed `jira:issue_updated` bodies of about 5 KB, as Jira Cloud sends them, made fast.

The simulator renders the event; the fields it leaves out and real Cloud payloads carry
(creator, watches, progress, time tracking, empty lists, unset custom fields, a description)
bring it to a realistic size. Each body is then a template with a few slots filled in, so
that tens of thousands are ready in about a second.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cache
from typing import Any

from jira_simulator import SimOptions, Simulator
from jira_simulator.state import STATUSES

PROJECT = "BENCH"
FIRST_ID = 10000  # issue n (from 1) has id FIRST_ID + n and key BENCH-n, as in the simulator
SLOTS = ("__ID__", "__KEY__", "__SUMMARY__", "__UPDATED__", '"__STAMP__"', '"__CHANGE__"')
DESCRIPTION = (
    "When the nightly export runs while a customer edits their billing address, the sync "
    "job picks up the half-written record and sends it to the ledger. Steps: open the "
    "account page, change the address, trigger the export from the admin console, then "
    "compare the ledger entry. Expected: the ledger shows the old or the new address. "
    "Actual: the ledger shows the street of the new address and the city of the old one. "
) * 2


def issue_key(number: int) -> str:
    return f"{PROJECT}-{number}"


def issue_id(number: int) -> int:
    return FIRST_ID + number


def _pad(payload: dict[str, Any]) -> dict[str, Any]:
    fields = payload["issue"]["fields"]
    person = dict(payload["user"])
    base = person["avatarUrls"]["48x48"].split("?")[0]
    person["avatarUrls"] = {
        size: f"{base}?s={size}" for size in ("48x48", "24x24", "16x16", "32x32")
    }
    payload["user"] = person
    fields["reporter"] = fields["creator"] = person
    fields["description"] = DESCRIPTION
    fields["watches"] = {"self": "…/watchers", "watchCount": 1, "isWatching": False}
    fields["votes"] = {"self": "…/votes", "votes": 0, "hasVoted": False}
    fields["progress"] = fields["aggregateprogress"] = {"progress": 0, "total": 0}
    fields["timetracking"] = {}
    for name in ("components", "fixVersions", "versions", "issuelinks", "subtasks", "attachment"):
        fields[name] = []
    for name in ("environment", "duedate", "lastViewed", "timespent", "timeestimate", "security"):
        fields[name] = None
    fields.update({f"customfield_{10000 + n}": None for n in range(20)})
    return payload


@cache
def _template(status_index: int) -> tuple[str, ...]:
    """The JSON text of one event, split at its slots, for a move into STATUSES[status_index]."""
    sim = Simulator(SimOptions())
    sim.base_url = "https://acme.atlassian.net"
    key = sim.add_issue(PROJECT, status=STATUSES[status_index - 1].name, assignee="Grace Hopper")
    sim.transition(key, STATUSES[status_index].name)
    payload = _pad(sim.events[-1])
    issue = payload["issue"]
    issue["id"], issue["key"] = "__ID__", "__KEY__"
    issue["self"] = issue["self"].rsplit("/", 1)[0] + "/__ID__"
    issue["fields"]["summary"] = "__SUMMARY__"
    issue["fields"]["updated"] = issue["fields"]["statuscategorychangedate"] = "__UPDATED__"
    payload["timestamp"], payload["changelog"]["id"] = "__STAMP__", "__CHANGE__"
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    parts = [text]
    for slot in SLOTS:
        parts = [piece for part in parts for piece in _split(part, slot)]
    return tuple(parts)


def _split(text: str, slot: str) -> list[str]:
    pieces = text.split(slot)
    out = [pieces[0]]
    for piece in pieces[1:]:
        out += [slot, piece]
    return out


def jira_time(ms: int) -> str:
    text = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    return text[:-6] + "+0000"


def body(number: int, step: int, sequence: int, updated_ms: int) -> bytes:
    """The event for issue `number`: its status moves on with each step."""
    values = {
        "__ID__": str(issue_id(number)),
        "__KEY__": issue_key(number),
        "__SUMMARY__": f"bench step {step} delivery {sequence}",
        "__UPDATED__": jira_time(updated_ms),
        '"__STAMP__"': str(updated_ms),
        '"__CHANGE__"': f'"{sequence + 100000}"',
    }
    template = _template((step + number) % len(STATUSES))
    return "".join(values.get(part, part) for part in template).encode()


def signed_bodies(
    secret: str, step: int, count: int, issues: int, first_sequence: int, base_ms: int
) -> Iterator[tuple[str, bytes, str]]:
    """(delivery id, body, hex HMAC-SHA256) for `count` deliveries cycling over the issues.

    Delivery s (counted over the whole run) names issue s % issues + 1 and is `updated` at
    base_ms + s, so that every delivery is newer than any before it for its issue.
    """
    key = secret.encode()
    for sequence in range(first_sequence, first_sequence + count):
        data = body(sequence % issues + 1, step, sequence, base_ms + sequence)
        signature = hmac.new(key, data, hashlib.sha256).hexdigest()
        yield f"bench-{step}-{sequence}", data, signature
