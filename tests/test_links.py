"""Linking an issue reads it at once through Jira, like a read-through, and says what it found."""

from __future__ import annotations

import asyncpg

from jira_simulator import Simulator
from service.config import Settings
from tests.conftest import app_client
from tests.live import free_port, jira_settings


async def test_link_reads_the_issue_at_once(db: asyncpg.Pool, settings: Settings, sim) -> None:
    """A new link answers the issue read from Jira, and the project's links show it."""
    (key,) = sim.seed(1, ["ALPHA"])
    async with app_client(jira_settings(settings, sim)) as http:
        linked = await http.put(f"/api/v1/projects/checkout/jira/{key}")
        listed = (await http.get("/api/v1/projects/checkout/jira")).json()
    assert linked.status_code == 201
    assert linked.json()["state"] == "ok" and linked.json()["issue"]["key"] == key
    assert listed["links"][0]["issue"]["summary"] == sim.site.find(key).summary


async def test_link_reports_a_key_jira_does_not_know(
    db: asyncpg.Pool, settings: Settings, sim: Simulator
) -> None:
    """Linking a key Jira does not know stores the link and says not_found, with no issue."""
    async with app_client(jira_settings(settings, sim)) as http:
        linked = await http.put("/api/v1/projects/checkout/jira/NOPE-1")
        listed = (await http.get("/api/v1/projects/checkout/jira")).json()
    assert linked.status_code == 201
    assert (linked.json()["state"], linked.json()["issue"]) == ("not_found", None)
    assert listed["links"] == [
        {
            "key": "NOPE-1",
            "linked_at": listed["links"][0]["linked_at"],
            "state": "not_found",
            "issue": None,
        }
    ]


async def test_link_survives_jira_down(db: asyncpg.Pool, settings: Settings, sim) -> None:
    """With Jira unreachable the link is still stored; its read is reported pending."""
    down = jira_settings(
        settings, sim, jira_base_url=f"http://127.0.0.1:{free_port()}", jira_max_retries=0
    )
    async with app_client(down) as http:
        linked = await http.put("/api/v1/projects/checkout/jira/ALPHA-1")
        listed = (await http.get("/api/v1/projects/checkout/jira")).json()
    assert linked.status_code == 201
    assert (linked.json()["state"], linked.json()["issue"]) == ("pending", None)
    assert [link["key"] for link in listed["links"]] == ["ALPHA-1"]
