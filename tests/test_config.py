"""Settings from the environment: defaults, parsing, and errors that name the variable."""

from __future__ import annotations

import pytest

from service.config import ConfigError, Settings


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


def test_secrets_stay_out_of_repr() -> None:
    """Tokens and secrets never show in the settings' repr."""
    settings = Settings.from_env(
        {
            "API_TOKENS": "tok-secret",
            "DATABASE_URL": "postgresql://u:pw-secret@h/d",
            "JIRA_API_TOKEN": "jira-secret",
            "JIRA_WEBHOOK_SECRET": "hook-secret",
        }
    )
    text = repr(settings)
    assert not any(s in text for s in ("tok-secret", "pw-secret", "jira-secret", "hook-secret"))


def test_public_host_needs_tokens_or_explicit_anonymity() -> None:
    """Serving on a non-loopback host without API_TOKENS is refused unless ALLOW_ANONYMOUS."""
    jira = {"JIRA_BASE_URL": "https://acme.atlassian.net", "JIRA_EMAIL": "a@b.c"}
    jira["JIRA_API_TOKEN"] = "t"
    with pytest.raises(ConfigError, match="API_TOKENS"):
        Settings.from_env({**jira, "HOST": "0.0.0.0"}).check_serving()
    Settings.from_env({**jira, "HOST": "0.0.0.0", "ALLOW_ANONYMOUS": "true"}).check_serving()
    Settings.from_env({**jira, "HOST": "0.0.0.0", "API_TOKENS": "t"}).check_serving()
