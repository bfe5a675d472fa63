"""A faithful Jira simulator: REST reads, rate limits, faults and webhooks, in memory."""

from __future__ import annotations

from .cli import main
from .hooks import Attempt, Switches, sign
from .options import ENGLISH_CATEGORIES, GERMAN_CATEGORIES, SimOptions
from .server import Simulator
from .state import IssueNotFoundError, UnknownStatusError, UnknownUserError
from .traffic import RequestRecord

__all__ = [
    "ENGLISH_CATEGORIES",
    "GERMAN_CATEGORIES",
    "Attempt",
    "IssueNotFoundError",
    "RequestRecord",
    "SimOptions",
    "Simulator",
    "Switches",
    "UnknownStatusError",
    "UnknownUserError",
    "main",
    "sign",
]
