"""Jira webhook bodies in the shape Jira sends them, and their signatures."""

from __future__ import annotations

import hmac
import json
from typing import Any

SECRET = "hook-secret-0123456789"


def issue_json(
    id: int = 10007,
    key: str = "PRJ-7",
    status: str = "In Progress",
    category: str = "indeterminate",
    updated: str = "2026-11-26T05:00:00.000-0600",
    summary: str = "Login fails",
) -> dict[str, Any]:
    return {
        "id": str(id),
        "self": f"https://acme.atlassian.net/rest/api/2/issue/{id}",
        "key": key,
        "fields": {
            "summary": summary,
            "status": {
                "id": "3",
                "name": status,
                "statusCategory": {"id": 4, "key": category, "name": "In Arbeit"},
            },
            "assignee": {"accountId": "5b10a2844c20165700ede21g", "displayName": "Mia Krystof"},
            "priority": {"id": "2", "name": "High"},
            "updated": updated,
            "labels": [],
        },
    }


def event(name: str = "jira:issue_updated", **issue: Any) -> dict[str, Any]:
    return {
        "timestamp": 1795000000000,
        "webhookEvent": name,
        "issue_event_type_name": "issue_generic",
        "user": {"accountId": "5b10a2844c20165700ede21g", "displayName": "Mia Krystof"},
        "issue": issue_json(**issue),
        "changelog": {"id": "10100", "items": []},
    }


def sign(body: bytes, secret: str = SECRET, method: str = "sha256") -> str:
    return f"{method}={hmac.new(secret.encode(), body, method).hexdigest()}"


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def headers(body: bytes, delivery: str = "d-1", secret: str = SECRET) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Atlassian-Webhook-Identifier": delivery,
        "X-Hub-Signature": sign(body, secret),
    }
