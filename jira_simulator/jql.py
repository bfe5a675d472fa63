"""The sliver of JQL a cache sends: keys, ids, projects, update times, AND, and ORDER BY."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from .state import SimIssue, Site

_TOKEN = re.compile(r"""\s*(?:"([^"]*)"|'([^']*)'|(>=|<=|!=|=|>|<|\(|\)|,)|([^\s(),=<>!"']+))""")
_KEY = re.compile(r"^[A-Z][A-Z0-9_]*-[0-9]+$")
_PERIOD = re.compile(r"^-(\d+)([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DATE_FORMATS = ("%Y/%m/%d %H:%M", "%Y-%m-%d %H:%M", "%Y/%m/%d", "%Y-%m-%d")
_FIELDS = frozenset({"key", "issuekey", "id", "project", "updated", "created"})
_COMPARE: dict[str, Callable[[datetime, datetime], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}

Lookup = Callable[[str], SimIssue | None]


class JqlError(ValueError):
    """A query Jira would refuse with 400; the messages are Jira's own wording."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__(" ".join(messages))
        self.messages = messages


@dataclass(frozen=True, slots=True)
class Clause:
    field: str
    op: str
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Query:
    clauses: tuple[Clause, ...]
    order: tuple[tuple[str, bool], ...]


def parse(text: str) -> Query:
    tokens = _tokenize(text)
    lowered = [token.lower() for token in tokens]
    cut = next(
        (n for n in range(len(tokens) - 1) if lowered[n : n + 2] == ["order", "by"]), len(tokens)
    )
    return Query(tuple(_clauses(tokens[:cut])), _order(tokens[cut + 2 :]))


def run(query: Query, site: Site, lookup: Lookup, everyone: bool = True) -> list[SimIssue]:
    """Matching issues the caller may see, in the query's order (ascending id by default)."""
    found = [i for i in site.issues.values() if everyone and i.id not in site.hidden]
    missing: list[str] = []
    for clause in query.clauses:
        test = _predicate(clause, site, lookup, missing)
        found = [issue for issue in found if test(issue)]
    if missing:
        raise JqlError(list(dict.fromkeys(missing)))
    found.sort(key=lambda issue: issue.id)
    for field, descending in reversed(query.order):
        found.sort(key=lambda issue: _sort_key(field, issue), reverse=descending)
    return found


def matches(query: Query, issue: SimIssue, site: Site) -> bool:
    """Whether one issue, deleted ones too, meets the clauses: a webhook's filter at delivery."""
    missing: list[str] = []
    tests = [_predicate(clause, site, site.find, missing) for clause in query.clauses]
    return not missing and all(test(issue) for test in tests)


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    position = 0
    while position < len(text.rstrip()):
        match = _TOKEN.match(text, position)
        if match is None:
            raise JqlError([f"Error in the JQL Query: unexpected {text[position:]!r}."])
        tokens.append(next(group for group in match.groups() if group is not None))
        position = match.end()
    return tokens


def _clauses(tokens: list[str]) -> list[Clause]:
    parts: list[list[str]] = [[]]
    for token in tokens:
        if token.lower() == "or":
            raise JqlError(["Error in the JQL Query: the simulator supports only AND."])
        if token.lower() == "and":
            parts.append([])
        else:
            parts[-1].append(token)
    return [_clause(part) for part in parts if part]


def _clause(part: list[str]) -> Clause:
    field = part[0].lower()
    if field not in _FIELDS:
        raise JqlError(
            [f"Field '{part[0]}' does not exist or you do not have permission to view it."]
        )
    if len(part) >= 4 and part[1].lower() == "in" and part[2] == "(" and part[-1] == ")":
        return Clause(field, "in", tuple(value for value in part[3:-1] if value != ","))
    if len(part) == 3 and part[1] in _COMPARE:
        return Clause(field, part[1], (part[2],))
    raise JqlError([f"Error in the JQL Query: cannot read the clause '{' '.join(part)}'."])


def _order(tokens: list[str]) -> tuple[tuple[str, bool], ...]:
    terms = " ".join(tokens).replace(" ,", ",").split(",")
    order = []
    for term in (term.split() for term in terms if term.strip()):
        order.append((term[0].lower(), len(term) > 1 and term[1].lower() == "desc"))
    return tuple(order)


def _predicate(
    clause: Clause, site: Site, lookup: Lookup, missing: list[str]
) -> Callable[[SimIssue], bool]:
    negate = clause.op == "!="
    if clause.field in ("key", "issuekey"):
        ids = _key_ids(clause, lookup, missing)
        return lambda issue: (issue.id in ids) != negate
    if clause.field == "id":
        return lambda issue: (str(issue.id) in clause.values) != negate
    if clause.field == "project":
        projects = _projects(clause, site)
        return lambda issue: (issue.project in projects) != negate
    limit, compare = _when(clause.values[0], clause.field, site), _COMPARE[clause.op]
    if clause.field == "updated":
        if site.options.minute_precision:
            return lambda issue: compare(issue.updated.replace(second=0, microsecond=0), limit)
        return lambda issue: compare(issue.updated, limit)
    return lambda issue: compare(issue.created, limit)


def _key_ids(clause: Clause, lookup: Lookup, missing: list[str]) -> set[int]:
    """Ids of the named issues; an unknown or hidden key fails the whole query, as in Jira."""
    ids = set()
    for value in clause.values:
        if not _KEY.match(value.upper()) and not value.isdigit():
            raise JqlError([f"The issue key '{value}' for field '{clause.field}' is invalid."])
        issue = lookup(value)
        if issue is None:
            missing.append(
                f"An issue with key '{value}' does not exist for field '{clause.field}'."
            )
        else:
            ids.add(issue.id)
    return ids


def _projects(clause: Clause, site: Site) -> set[str]:
    for value in clause.values:
        if value.upper() not in site.projects:
            raise JqlError([f"The value '{value}' does not exist for the field 'project'."])
    return {value.upper() for value in clause.values}


def _when(value: str, field: str, site: Site) -> datetime:
    period = _PERIOD.match(value.strip())
    if period:
        return site.clock() - timedelta(**{_UNITS[period[2]]: int(period[1])})
    for layout in _DATE_FORMATS:
        try:
            return datetime.strptime(value.strip(), layout).replace(tzinfo=site.zone)
        except ValueError:
            continue
    raise JqlError([f"Date value '{value}' for field '{field}' is invalid."])


def _sort_key(field: str, issue: SimIssue) -> tuple[str, float]:
    if field in ("key", "issuekey"):
        return (issue.project, int(issue.key.rsplit("-", 1)[1]))
    if field in ("updated", "created"):
        return ("", (issue.updated if field == "updated" else issue.created).timestamp())
    return ("", issue.id)
