"""Where subscriptions may POST: host[:port] entries, internal addresses, checks at every
delivery and at resume, and errors that do not map the network."""

from __future__ import annotations

import httpx
import pytest

from service.config import ConfigError, Settings
from tests.conftest import app_client
from tests.live import free_port
from tests.test_changes import eventually
from tests.test_subscriptions import FAST, Receiver, fresh, receiving, status, subscribe, write

__all__ = ["fresh"]  # the fixture, used by name
NAMED = frozenset({"vm", "hooks.example.test:8443", "10.1.2.3", "[::1]:9000", "*.corp"})
EVERYWHERE = frozenset({"*"})

# (url, allowed): each form of the adversarial trial's spirit, against NAMED.
FORMS = [
    ("http://vm/", True),
    ("http://vm:80/in", True),
    ("https://vm/in", True),
    ("https://vm:443/in", True),
    ("http://vm:19222/", False),  # another port of an allowed host
    ("http://vm:019222/", False),  # the same, written with a leading zero
    ("http://vm:0/", False),
    ("http://vm:19211/_sim/reset", False),  # an admin endpoint on another port
    ("http://vm:8443/", False),
    ("http://vm./", False),
    ("http://evil.vm/", False),
    ("http://vm@evil.example/", False),
    ("http://user:pw@vm/", False),
    ("https://hooks.example.test:8443/in", True),
    ("https://hooks.example.test/in", False),  # listed with a port: only that port
    ("http://a.corp/in", True),
    ("http://a.corp:8080/in", False),
    ("http://10.1.2.3/in", True),  # an internal address listed as such
    ("http://10.1.2.4/in", False),
    ("http://[::1]:9000/in", True),
    ("http://[::1]/in", False),
    ("http://127.0.0.1/", False),
    ("http://2130706433/", False),  # 127.0.0.1 as one number
    ("http://0x7f.1/", False),
    ("http://0177.0.0.1/", False),
    ("http://169.254.169.254/latest/meta-data", False),
    ("ftp://vm/", False),
]
# With `*`: names and public addresses, but never an internal address, and only 80 and 443.
OPEN_FORMS = [
    ("http://anything.example/", True),
    ("http://93.184.216.34/", True),
    ("http://anything.example:22/", False),
    ("http://127.0.0.1/", False),
    ("http://10.0.0.1/", False),
    ("http://192.168.1.1/", False),
    ("http://169.254.169.254/", False),
    ("http://[::1]/", False),
    ("http://[::ffff:127.0.0.1]/", False),
    ("http://[fe80::1]/", False),
    ("http://0.0.0.0/", False),
]


@pytest.mark.parametrize(("allowed", "forms"), [(NAMED, FORMS), (EVERYWHERE, OPEN_FORMS)])
async def test_only_listed_hosts_and_ports_are_accepted(fresh, settings, allowed, forms) -> None:
    """Each URL form is accepted only when an entry allows its host and port; else 400."""
    async with app_client(settings, **FAST | {"subscription_allowed_hosts": allowed}) as http:
        for url, accepted in forms:
            answer = await http.post("/api/v1/subscriptions", json={"url": url})
            assert (answer.status_code == 201) == accepted, (url, answer.text)
            if not accepted:
                assert answer.status_code == 400, url
                assert answer.json()["error"]["code"] in ("host_not_allowed", "invalid_url")
        listed = (await http.get("/api/v1/subscriptions")).json()["subscriptions"]
    assert len(listed) == sum(accepted for _, accepted in forms)


@pytest.mark.parametrize("entry", ["vm:019222", "vm:0", "vm:99999", "vm:port", ":80"])
def test_a_malformed_entry_stops_start_up(entry: str) -> None:
    """An allow entry with a bad port is refused at start-up, naming the setting."""
    with pytest.raises(ConfigError, match="SUBSCRIPTION_ALLOWED_HOSTS"):
        Settings.from_env({"SUBSCRIPTION_ALLOWED_HOSTS": f"ok.example,{entry}"})


async def test_a_target_no_longer_allowed_is_paused_not_delivered(fresh, settings) -> None:
    """Made under a looser list, a subscription is paused at its next delivery, saying why,
    and resume refuses it while the list still forbids it."""
    async with receiving(Receiver()) as receiver:
        async with app_client(settings, **FAST, subscriptions_deliver=False) as loose:
            created = await subscribe(loose, receiver.url)
        narrowed = FAST | {"subscription_allowed_hosts": frozenset({"127.0.0.1:1"})}
        async with app_client(settings, **narrowed) as http:
            await write(fresh, "PRJ-1")
            await eventually(lambda: _paused(http, created))
            shown = await status(http, created)
            resumed = await http.post(f"/api/v1/subscriptions/{created['id']}/resume")
            after = await status(http, created)
    assert receiver.attempts == 0
    assert "target no longer allowed" in shown["paused_reason"]
    assert resumed.status_code == 400 and resumed.json()["error"]["code"] == "host_not_allowed"
    assert after["paused"] is True and "no longer allowed" in after["paused_reason"]


async def test_errors_tell_only_the_status_class(fresh, settings) -> None:
    """A closed port and a 405 leave last_error with no connector name and no exact status."""
    closed = f"http://127.0.0.1:{free_port()}/hook"
    async with (
        app_client(settings, **FAST, subscription_pause_after=3600) as http,
        receiving(Receiver(script=[(405, {})])) as refusing,
    ):
        down = await subscribe(http, closed)
        said_no = await subscribe(http, refusing.url)
        await write(fresh, "PRJ-1")
        await eventually(lambda: _failed(http, down))
        await eventually(lambda: _paused(http, said_no))
        errors = [(await status(http, s))["last_error"] for s in (down, said_no)]
    assert errors[0].startswith("no answer") and "Error" not in errors[0]
    assert errors[1] == "answered 4xx, which is not retried"


async def _paused(http: httpx.AsyncClient, subscription: dict[str, str]) -> bool:
    return bool((await status(http, subscription))["paused"])


async def _failed(http: httpx.AsyncClient, subscription: dict[str, str]) -> bool:
    return (await status(http, subscription))["last_error"] is not None
