"""Settings from the environment: defaults, parsing, and errors that name the variable."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from service import config
from service.config import ConfigError, JiraSettings, Settings


def test_defaults_from_an_empty_environment() -> None:
    """With nothing set, the documented defaults apply."""
    settings = Settings.from_env({})
    assert (settings.host, settings.port, settings.cache_ttl) == ("127.0.0.1", 8000, 3600.0)
    assert settings.database_url is None and settings.api_tokens == frozenset()


def test_values_are_parsed() -> None:
    """Numbers, flags and token lists are read into typed values."""
    settings = Settings.from_env(
        {
            "PORT": "9000",
            "API_TOKENS": " a, b ,,",
            "ALLOW_ANONYMOUS": "true",
            "JIRA_CACHE_TTL": "60",
        }
    )
    assert settings.port == 9000 and settings.api_tokens == frozenset({"a", "b"})
    assert settings.allow_anonymous and settings.cache_ttl == 60.0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "70000"),
        ("ALLOW_ANONYMOUS", "maybe"),
        ("JIRA_FLAVOR", "server"),
        ("JIRA_BASE_URL", "acme.atlassian.net"),
        ("JIRA_BATCH_SIZE", "101"),
    ],
)
def test_malformed_value_names_the_variable(name: str, value: str) -> None:
    """A malformed variable raises ConfigError whose message starts with its name."""
    with pytest.raises(ConfigError, match=f"^{name}"):
        Settings.from_env({name: value})


SECRETS = {
    "API_TOKENS": "tok-a,tok-b",
    "DATABASE_URL": "postgresql://u:pw-secret@h/d",
    "JIRA_BASE_URL": "https://acme.atlassian.net",
    "JIRA_EMAIL": "bot@acme.com",
    "JIRA_API_TOKEN": "jira-secret",
    "JIRA_WEBHOOK_SECRET": "hook-secret",
    "CRON_SECRET": "cron-secret",
}


def test_secrets_stay_out_of_repr() -> None:
    """Tokens and secrets never show in the settings' repr, the Jira settings' included."""
    text = repr(Settings.from_env(SECRETS))
    assert "bot@acme.com" in text
    assert not any(s in text for s in ("tok-a", "pw-secret", "jira-secret", "hook-", "cron-"))


def test_public_host_needs_tokens_or_explicit_anonymity() -> None:
    """Serving on a non-loopback host without API_TOKENS is refused unless ALLOW_ANONYMOUS."""
    jira = {"JIRA_BASE_URL": "https://acme.atlassian.net", "JIRA_EMAIL": "a@b.c"}
    jira["JIRA_API_TOKEN"] = "t"
    with pytest.raises(ConfigError, match="API_TOKENS"):
        Settings.from_env({**jira, "HOST": "0.0.0.0"}).check_serving()
    Settings.from_env({**jira, "HOST": "0.0.0.0", "ALLOW_ANONYMOUS": "true"}).check_serving()
    Settings.from_env({**jira, "HOST": "0.0.0.0", "API_TOKENS": "t"}).check_serving()


def numeric_variables() -> list[str]:
    """The variables read into numbers, from the settings' own declarations."""
    numeric = []
    for cls in (Settings, JiraSettings):
        for spec in dataclasses.fields(cls):
            if "env" in spec.metadata and str(spec.type).split(" |")[0] in ("int", "float"):
                numeric.append(spec.metadata["env"])
    return numeric


@pytest.mark.parametrize("name", numeric_variables())
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400", "1000000000000000", "-1"])
def test_every_number_is_finite_and_bounded(name: str, value: str) -> None:
    """nan, infinities and numbers out of range fail at start-up, saying the range in words."""
    with pytest.raises(ConfigError, match=f"^{name}: expected a .*number from ") as caught:
        Settings.from_env({name: value})
    assert "None" not in str(caught.value)


def test_numbers_cover_the_numeric_settings() -> None:
    """The bounds test sees every numeric setting, the Jira client's included."""
    assert {"PORT", "JIRA_CACHE_TTL", "JIRA_MAX_RPS", "JIRA_TIMEOUT", "MEMO_SIZE"} <= set(
        numeric_variables()
    )


def test_range_is_said_in_words() -> None:
    """An out-of-range number names the variable and its range, never "outside 1 to None"."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"JIRA_BATCH_SIZE": "101"})
    assert str(caught.value) == "JIRA_BATCH_SIZE: expected a number from 1 to 100, got 101"


def test_variables_are_declared_once_with_help() -> None:
    """variables() lists each variable once, with a line of help, the Jira client's included."""
    found = config.variables()
    names = [variable.name for variable in found]
    assert len(names) == len(set(names))
    assert {"DATABASE_URL", "JIRA_BASE_URL", "JIRA_PAT", "LOG_FORMAT"} <= set(names)
    assert all(variable.help and "\n" not in variable.help for variable in found)
    shown = {variable.name: variable.default for variable in found}
    assert (shown["PORT"], shown["JIRA_CACHE_TTL"], shown["API_TOKENS"]) == (
        "8000",
        "3600",
        "unset",
    )
    assert (shown["ALLOW_ANONYMOUS"], shown["JIRA_BASE_URL"]) == ("false", "unset")


def test_readme_documents_every_variable() -> None:
    """The README's configuration table names exactly the variables the service reads."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = readme.split("## Configuration")[1].split("\n### ")[0]
    rows = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    documented = {name for row in rows for name in re.findall(r"`([A-Z_]+)`", row)}
    assert documented == {variable.name for variable in config.variables()}


def test_jira_settings_are_none_without_a_base_url() -> None:
    """Without JIRA_BASE_URL there are no Jira settings, but their values are still checked."""
    assert Settings.from_env({"JIRA_EMAIL": "a@b.c"}).jira is None
    with pytest.raises(ConfigError, match=r"^JIRA_TIMEOUT"):
        Settings.from_env({"JIRA_TIMEOUT": "soon"})


def test_jira_settings_are_built_once_complete() -> None:
    """A set JIRA_BASE_URL gives one JiraSettings with its values parsed, or names what lacks."""
    jira = {"JIRA_BASE_URL": "https://acme.atlassian.net/", "JIRA_EMAIL": "a@b.c"}
    with pytest.raises(ConfigError, match=r"^JIRA_API_TOKEN"):
        Settings.from_env(jira)
    with pytest.raises(ConfigError, match=r"^JIRA_PAT"):
        Settings.from_env({**jira, "JIRA_FLAVOR": "dc"})
    settings = Settings.from_env({**jira, "JIRA_API_TOKEN": "t", "JIRA_MAX_RETRIES": "2"})
    assert settings.jira == JiraSettings(
        base_url="https://acme.atlassian.net", email="a@b.c", api_token="t", max_retries=2
    )


def test_serve_and_refresh_need_jira() -> None:
    """serve and refresh refuse to start without Jira, naming JIRA_BASE_URL."""
    with pytest.raises(ConfigError, match=r"^JIRA_BASE_URL: required by serve"):
        Settings.from_env({}).check_serving()
    with pytest.raises(ConfigError, match=r"^JIRA_BASE_URL: required by refresh"):
        Settings.from_env({}).require_jira("refresh")


def test_secrets_lists_every_secret() -> None:
    """Every configured secret, Jira's included, is handed to the log redactor."""
    settings = Settings.from_env(SECRETS)
    assert set(settings.secrets()) == {
        "tok-a",
        "tok-b",
        "postgresql://u:pw-secret@h/d",
        "jira-secret",
        "hook-secret",
        "cron-secret",
    }


def test_a_transaction_pooler_needs_a_direct_listen_url() -> None:
    """DATABASE_POOLER=transaction without DATABASE_LISTEN_URL is refused, naming it."""
    pooled = {"DATABASE_URL": "postgresql://u@pgbouncer:6432/db", "DATABASE_POOLER": "transaction"}
    with pytest.raises(ConfigError, match="DATABASE_LISTEN_URL: required when DATABASE_POOLER"):
        Settings.from_env(pooled)
    direct = "postgresql://u@db:5432/db"
    settings = Settings.from_env(pooled | {"DATABASE_LISTEN_URL": direct})
    assert settings.database_pooler == "transaction" and settings.database_listen_url == direct
