"""What can go wrong talking to Jira, and how Jira's own error messages are read.

The errors, most general first. `endpoint` is always "METHOD /path", never a full URL.

JiraError                    an answer we cannot use (an unexpected 4xx, JSON of the wrong shape)
 +-- JiraAuthError           401, 403, or X-Seraph-LoginReason says the credentials failed
 +-- JiraRateLimitedError    429 still after every retry, or a pause longer than we will wait
 +-- JiraUnavailableError    5xx, a timeout, a connection error, a body that is not JSON
      +-- CircuitOpenError   refused without asking Jira, after repeated failures
"""

from __future__ import annotations

import re
from typing import Any

# How Jira refuses a JQL (search or webhook filter) naming a project it lacks, or hides from us.
_UNKNOWN_PROJECT = re.compile(r"The value '([^']+)' does not exist for the field 'project'")
# Data Center fails a whole `key in (...)` search naming each key it does not know.
_UNKNOWN_KEY = re.compile(
    r"An issue with key '([^']+)' does not exist for field 'key'"
    r"|The issue key '([^']*)' for field 'key' is invalid"
)


class JiraError(Exception):
    """Jira answered in a way this client cannot use; the base of every error here."""

    def __init__(self, endpoint: str, status: int | None, problem: str) -> None:
        answered = f" answered {status}" if status is not None else ""
        super().__init__(f"Jira {endpoint}{answered}: {problem}")
        self.endpoint, self.status, self.problem = endpoint, status, problem


class JiraAuthError(JiraError):
    def __init__(self, endpoint: str, status: int, reason: str | None = None) -> None:
        why = f" ({reason})" if reason else ""
        problem = f"credentials refused{why}; check JIRA_EMAIL and JIRA_API_TOKEN, or JIRA_PAT"
        super().__init__(endpoint, status, problem)
        self.reason = reason


class JiraRateLimitedError(JiraError):
    def __init__(self, endpoint: str, retry_after: float, status: int | None = 429) -> None:
        super().__init__(endpoint, status, f"rate limited; retry after {retry_after:.1f}s")
        self.retry_after = retry_after


class JiraUnavailableError(JiraError):
    def __init__(
        self, endpoint: str, status: int | None, problem: str, retry_after: float | None = None
    ) -> None:
        super().__init__(endpoint, status, problem)
        self.retry_after = retry_after


class CircuitOpenError(JiraUnavailableError):
    def __init__(self, endpoint: str, retry_after: float) -> None:
        problem = f"not called after repeated failures; next try in {retry_after:.1f}s"
        super().__init__(endpoint, None, problem, retry_after)


class SearchRefusedError(JiraError):
    """A search Jira refused with 400; `texts` are its messages (unknown keys or projects)."""

    def __init__(self, endpoint: str, body: Any) -> None:
        super().__init__(endpoint, 400, message(body))
        self.texts = texts(body)

    def plain(self) -> JiraError:
        """The refusal as a plain JiraError, once no retry without a named key or project helps."""
        return JiraError(self.endpoint, 400, self.problem)


def unknown_projects_in(text: str) -> set[str]:
    """The project keys a 400's message says Jira does not have."""
    return {name.upper() for name in _UNKNOWN_PROJECT.findall(text)}


def unknown_keys_in(messages: list[str]) -> set[str]:
    """The issue keys a refused `key in (...)` search names as unknown or malformed."""
    found = (_UNKNOWN_KEY.search(text) for text in messages)
    return {(match[1] or match[2]).upper() for match in found if match}


def texts(body: Any) -> list[str]:
    """Jira's error strings: `errorMessages`, then the values of `errors`."""
    messages = body.get("errorMessages") if isinstance(body, dict) else None
    errors = body.get("errors") if isinstance(body, dict) else None
    found = [*(messages or []), *(errors.values() if isinstance(errors, dict) else [])]
    return [str(text) for text in found]


def message(body: Any) -> str:
    return "; ".join(texts(body))[:300] or "no error message"
