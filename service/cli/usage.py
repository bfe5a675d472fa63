"""Each command's --help: the settings it reads from the environment, and an example."""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Iterator, Sequence

from service import config

DATABASE = ("DATABASE_URL", "DATA_DIR", "LOG_LEVEL", "LOG_FORMAT")
EVERY = "every setting"  # serve and check read them all; so does a command not listed here


def jira() -> tuple[str, ...]:
    """Where Jira is, its credentials, and how to talk to it (JiraSettings)."""
    return tuple(variable.name for variable in config.variables(config.JiraSettings))


def reads(command: str) -> Sequence[str]:
    """The settings a command (`webhook install`: its first word decides) reads."""
    webhooks = ("JIRA_WEBHOOK_SECRET", "JIRA_WEBHOOK_MANAGE")
    found: dict[str, Sequence[str]] = {
        "migrate": DATABASE,
        "dead-letters": DATABASE,
        "changes": DATABASE,
        "client": DATABASE,
        "refresh": (*DATABASE, *jira(), "JIRA_CACHE_TTL"),
        "sync": (*DATABASE, *jira(), "JIRA_CACHE_TTL", "JIRA_SYNC_OVERLAP", "JIRA_SYNC_RECHECK"),
        "webhook": (*DATABASE, *jira(), *webhooks),
    }
    return found.get(command.split()[0], [variable.name for variable in config.variables()])


EXAMPLES = {
    "serve": "JIRA_BASE_URL=https://acme.atlassian.net JIRA_EMAIL=bot@acme.com \\\n"
    "  JIRA_API_TOKEN=... API_TOKENS=token-a jira-status-cache serve",
    "migrate": "DATABASE_URL=postgresql://cache:...@db:5432/cache jira-status-cache migrate",
    "check": 'eval "$(make -s env)"; jira-status-cache check   # against `make run`',
    "refresh": "jira-status-cache refresh --project checkout",
    "dead-letters": "jira-status-cache dead-letters --limit 5 --json",
    "webhook": "jira-status-cache webhook status",
    "webhook install": "jira-status-cache webhook install \\\n"
    "  --url https://cache.example.com/api/v1/webhooks/jira",
    "webhook status": "jira-status-cache webhook status --show-secret",
    "webhook uninstall": "jira-status-cache webhook uninstall",
    "changes": "jira-status-cache changes --follow --project checkout",
    "sync": "jira-status-cache sync --once",
    "client": "jira-status-cache client list",
    "client add": "jira-status-cache client add dashboard --scopes read,subscribe",
    "client list": "jira-status-cache client list",
    "client revoke": "jira-status-cache client revoke dashboard",
}


def describe(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Give every command (and each action of one, as `webhook install`) its epilog."""
    for name, command in commands(subparsers):
        if command.add_help:
            command.formatter_class = argparse.RawDescriptionHelpFormatter
            command.epilog = epilog(reads(name), EXAMPLES.get(name))


def commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], prefix: str = ""
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for name, command in subparsers.choices.items():
        yield f"{prefix}{name}", command
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                yield from commands(action, f"{prefix}{name} ")


def epilog(names: Sequence[str], example: str | None) -> str:
    listed = textwrap.fill(", ".join(names), width=78, initial_indent="  ", subsequent_indent="  ")
    text = f"settings read from the environment (README.md, Configuration):\n{listed}"
    if example is None:
        return text
    return f"{text}\n\nexample:\n  " + example.replace("\n", "\n  ")
