"""Properties of the pure parts: the Jira normalizer, the webhook signature, key checks."""

from __future__ import annotations

import contextlib
import hmac
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.jira import event
from service.model import (
    KEY_PATTERN,
    MAX_KEY_LENGTH,
    Assignee,
    CachedIssue,
    InvalidIssueError,
    InvalidKeyError,
    InvalidProjectIdError,
    Issue,
    Status,
    check_project_id,
    normalize_issue,
    normalize_key,
)
from service.shapes import Encoded, shape_issue
from service.sync.inbox import (
    SIGNATURE_METHODS,
    SignatureError,
    UnusablePayloadError,
    event_time,
    named_issue,
    parse,
    verify,
)

# Bounded and derandomized: the same examples on every run, in well under a second each.
bounded = settings(max_examples=200, derandomize=True, database=None, deadline=None)

# Jira's key format: a project key (a letter, then letters, digits or underscores), a dash,
# and an issue number without a leading zero. Callers may write it in lower case.
JIRA_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]*-[1-9][0-9]*", re.ASCII)
PROJECT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}", re.ASCII)
# Letters that upper-case to ASCII ones (long s, dotless i, the ff and ffi ligatures, Kelvin
# and Angstrom signs), digits and letters that are not ASCII, and space-like characters.
TRICKY = "\u017f\u0131\ufb00\ufb03\u212a\u212b\uff10\uff11\uff41\u0663\u00b2\n\t \x00\u200b"

# Jira's text may hold what PostgreSQL's cannot: NUL and (JSON-escaped) lone surrogates.
jira_text = st.text() | st.text(st.sampled_from("a \x00\ud800\udfffé"))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the plausible value, sometimes any JSON at all."""
    return st.one_of(strategy, strategy, strategy, json_values)


@st.composite
def near(draw: st.DrawFn, valid: st.SearchStrategy[str]) -> str:
    """A valid value, or one with a tricky character put in or swapped in somewhere."""
    value = draw(valid)
    if draw(st.booleans()):
        return value
    at = draw(st.integers(min_value=0, max_value=len(value)))
    cut = at + draw(st.integers(min_value=0, max_value=1))
    return value[:at] + draw(st.sampled_from(TRICKY)) + value[cut:]


@st.composite
def jira_times(draw: st.DrawFn) -> str:
    """Jira's `updated`: an offset without a colon, from the year 1 to 9999."""
    moment = draw(st.datetimes())
    minutes = draw(st.integers(min_value=-14 * 60, max_value=14 * 60))
    offset = timezone(timedelta(minutes=minutes))
    stamp = moment.replace(tzinfo=offset).isoformat(timespec="milliseconds")
    return stamp[:-3] + stamp[-2:]


def issues(core: Callable[[st.SearchStrategy[Any]], st.SearchStrategy[Any]]) -> Any:
    """Issue JSON near the shape Jira sends, with any JSON in any place; `core` wraps the
    id, key and time that an issue cannot do without."""
    status = st.fixed_dictionaries(
        {},
        optional={
            "id": maybe(jira_text),
            "name": maybe(jira_text),
            "statusCategory": maybe(st.fixed_dictionaries({"key": maybe(jira_text)})),
        },
    )
    person = st.fixed_dictionaries(
        {}, optional={"accountId": maybe(jira_text), "displayName": maybe(jira_text)}
    )
    fields = st.fixed_dictionaries(
        {"updated": core(jira_times())},
        optional={
            "summary": maybe(jira_text),
            "status": maybe(status),
            "assignee": maybe(person),
            "priority": maybe(st.fixed_dictionaries({"name": maybe(jira_text)})),
        },
    )
    ids = st.integers(min_value=0, max_value=10**18 - 1).map(str)
    keys = st.from_regex(JIRA_KEY, fullmatch=True)
    return st.fixed_dictionaries({"id": core(ids), "key": core(keys), "fields": core(fields)})


def as_is(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return strategy


def anything(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The plausible value, a near miss of it, or any JSON at all."""
    return st.one_of(strategy, json_values, strategy.map(repr), strategy.map(lambda v: [v]))


def texts_of(issue: Issue) -> list[str]:
    status, person = issue.status, issue.assignee
    found = [issue.key, issue.summary, issue.priority]
    found += [status.id, status.name] if status else []
    found += [person.account_id, person.display_name] if person else []
    return [value for value in found if value is not None]


@bounded
@given(issues(anything) | json_values)
def test_normalizer_raises_only_its_own_error(raw) -> None:
    """Any JSON is an Issue or an InvalidIssueError, never another exception."""
    with contextlib.suppress(InvalidIssueError):
        normalize_issue(raw)


@bounded
@given(issues(as_is))
def test_normalized_issue_can_be_stored_and_rendered(raw) -> None:
    """A normalized issue has a canonical key, text PostgreSQL stores, and a UTC time."""
    try:
        issue = normalize_issue(raw)
    except InvalidIssueError:
        return
    assert KEY_PATTERN.fullmatch(issue.key)
    for value in texts_of(issue):
        assert "\x00" not in value
        value.encode("utf-8")  # a lone surrogate would raise here, as it does in asyncpg
    issue.updated.astimezone(UTC)


@bounded
@given(json_values | st.integers(min_value=-(10**400), max_value=10**400))
def test_any_event_timestamp_gives_a_time(stamp) -> None:
    """A webhook's `timestamp`, however absurd, gives an aware time and never an exception."""
    assert event_time({"timestamp": stamp}).tzinfo is not None


# Secrets come from the environment and query strings from percent-decoding: neither holds
# a lone surrogate, which .encode() could not send anyway.
plain_text = st.text(st.characters(exclude_categories=("Cs",)))
secrets = plain_text.filter(bool)
methods = st.sampled_from(sorted(SIGNATURE_METHODS))


def sign(body: bytes, secret: str, method: str) -> str:
    return f"{method}={hmac.new(secret.encode(), body, method).hexdigest()}"


def rejected(body: bytes, signature: str | None, query: str | None, secret: str) -> str:
    with pytest.raises(SignatureError) as caught:
        verify(body, signature, query, secret)
    return caught.value.code


@bounded
@given(st.binary(), secrets, methods, st.booleans())
def test_right_signature_is_accepted(body, secret, method, shout) -> None:
    """The HMAC of the body with the secret is accepted, in either case, with any method."""
    signature = sign(body, secret, method)
    verify(body, signature.upper() if shout else signature, None, secret)


@bounded
@given(st.binary(), st.binary(), secrets, methods)
def test_signature_of_another_body_is_refused(body, other, secret, method) -> None:
    """A signature of any other body is refused with 401."""
    if other != body:
        assert rejected(body, sign(other, secret, method), None, secret) == "invalid_signature"


@bounded
@given(st.binary(), secrets, secrets, methods)
def test_signature_with_another_secret_is_refused(body, secret, other, method) -> None:
    """A signature made with any other secret is refused with 401."""
    signature = sign(body, other, method)
    # HMAC pads short keys with NULs, so "k" and "k\x00" sign alike: compare the signatures.
    if not hmac.compare_digest(signature, sign(body, secret, method)):
        assert rejected(body, signature, None, secret) == "invalid_signature"


hex_digests = st.text("0123456789abcdefABCDEF", min_size=64, max_size=128)
signatures = st.text() | st.builds(
    "{}={}".format, methods | st.text(), near(hex_digests) | st.text()
)


@bounded
@given(st.binary(), secrets, signatures.filter(lambda s: s.strip()))
def test_any_other_digest_is_refused(body, secret, signature) -> None:
    """Any header other than a right METHOD=HEX is refused with 401, not an exception."""
    method, _, digest = signature.strip().partition("=")
    if method.lower() in SIGNATURE_METHODS:
        right = hmac.new(secret.encode(), body, method.lower()).hexdigest()
        if digest.strip().lower() == right:
            return
    assert rejected(body, signature, None, secret) == "invalid_signature"


@bounded
@given(st.binary(), secrets, plain_text)
def test_secret_in_url_must_match(body, secret, query) -> None:
    """The secret in the URL is accepted when equal, refused with 401 otherwise."""
    if query == secret:
        verify(body, None, query, secret)
    else:
        assert rejected(body, None, query, secret) == "invalid_signature"


def test_nothing_to_verify_is_refused() -> None:
    """Neither a signature nor a secret in the URL is 401 missing_signature."""
    assert rejected(b"{}", None, None, "s") == "missing_signature"


keys_and_near_misses = near(st.from_regex(JIRA_KEY, fullmatch=True)) | st.text(
    TRICKY + "PRJprj-_0179", max_size=12
)


@bounded
@given(keys_and_near_misses, st.sampled_from(["", " ", "\t"]))
def test_key_check_agrees_with_jiras_format(key, padding) -> None:
    """A key is accepted, upper-cased, exactly when it has Jira's format, in any case."""
    asked = padding + key + padding
    if JIRA_KEY.fullmatch(asked.strip()) and len(asked.strip()) <= MAX_KEY_LENGTH:
        assert normalize_key(asked) == asked.strip().upper()
    else:
        with pytest.raises(InvalidKeyError):
            normalize_key(asked)


@bounded
@given(near(st.from_regex(PROJECT_ID, fullmatch=True)))
def test_project_id_check_agrees_with_its_pattern(project_id) -> None:
    """A project id is accepted, unchanged, exactly when it fits the documented pattern."""
    if PROJECT_ID.fullmatch(project_id):
        assert check_project_id(project_id) == project_id
    else:
        with pytest.raises(InvalidProjectIdError):
            check_project_id(project_id)


@pytest.mark.parametrize("length", [MAX_KEY_LENGTH, MAX_KEY_LENGTH + 1, 3000])
def test_key_length_is_bounded(length) -> None:
    """A key of Jira's format is accepted up to 255 characters, refused beyond, quoted short."""
    key = "P" * (length - 2) + "-1"
    if length <= MAX_KEY_LENGTH:
        assert normalize_key(key) == key
        return
    with pytest.raises(InvalidKeyError) as caught:
        normalize_key(key)
    assert len(str(caught.value)) < 200


@bounded
@given(json_values)
def test_any_named_issue_is_read_or_refused(issue) -> None:
    """Whatever a delivery's `issue` holds, it names an issue, nothing, or is unusable."""
    with contextlib.suppress(UnusablePayloadError):
        named = named_issue({"issue": issue})
        assert named is None or named.id is not None or named.key is not None


@pytest.mark.parametrize("ids", ["1" * 30, "-1", "10007.5", "", "\u0661"])
def test_malformed_issue_ids_are_unusable(ids) -> None:
    """An issue id that is not a bigint-sized whole number makes the payload unusable."""
    with pytest.raises(UnusablePayloadError):
        named_issue({"issue": {"id": ids, "key": "PRJ-7"}})


def test_deeply_nested_json_is_unusable() -> None:
    """JSON nested past Python's recursion limit is an unusable payload, not a crash."""
    body = b'{"webhookEvent": "jira:issue_updated", "x": ' + b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(UnusablePayloadError, match="nested"):
        parse(body + b"}", "d-1")


@bounded
@given(
    summary=st.none() | st.text(),
    assigned=st.booleans(),
    status=st.booleans(),
    fetched_ago=st.floats(0, 10_000),
    verified_ago=st.none() | st.floats(0, 10_000),
    ttl=st.floats(1, 5_000),
)
def test_encoded_answer_is_the_shape_encoded(
    summary: str | None,
    assigned: bool,
    status: bool,
    fetched_ago: float,
    verified_ago: float | None,
    ttl: float,
) -> None:
    """The cached encoding of an issue's answer is byte for byte msgspec's of its shape."""
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    issue = Issue(
        10007,
        "PRJ-7",
        Status("3", 'In "Progress"', "indeterminate") if status else None,
        summary,
        Assignee("5b10", ',"verified_at":"x"') if assigned else None,
        "High",
        now - timedelta(days=1),
    )
    cached = CachedIssue(issue, now - timedelta(seconds=fetched_ago), "webhook", "ok", None, 0)
    verified = None if verified_ago is None else now - timedelta(seconds=verified_ago)
    encoded = Encoded()
    for _ in range(2):  # once to split it, once from its parts
        answer = encoded.issue(cached, ttl, now, verified)
        assert answer == msgspec.json.encode(shape_issue(cached, ttl, now, verified))


FIELDS_READ = ("status", "summary", "assignee", "priority", "updated")
events = st.fixed_dictionaries(
    {},
    optional={
        "webhookEvent": st.sampled_from(["jira:issue_updated", "comment_created"]) | json_values,
        "timestamp": st.integers() | json_values,
        "changelog": json_values,
        "user": json_values,
        "issue": json_values
        | st.fixed_dictionaries(
            {},
            optional={
                "id": st.text() | json_values,
                "key": st.text() | json_values,
                "self": json_values,
                "fields": json_values
                | st.fixed_dictionaries(
                    {}, optional={name: json_values for name in (*FIELDS_READ, "description")}
                ),
            },
        ),
    },
)


def what_is_read(payload: Any) -> str:
    """The parts of an event the webhook reads, as comparable JSON (NaN equals NaN)."""
    if not isinstance(payload, dict):
        return json.dumps(payload)
    read = {k: payload[k] for k in ("webhookEvent", "timestamp", "changelog") if k in payload}
    issue = payload.get("issue", "absent")
    if isinstance(issue, dict):
        issue = {k: issue[k] for k in ("id", "key", "fields") if k in issue}
        if isinstance(issue.get("fields"), dict):
            issue["fields"] = {k: v for k, v in issue["fields"].items() if k in FIELDS_READ}
    return json.dumps(read | {"issue": issue}, sort_keys=True)


@bounded
@given(events)
def test_an_event_read_by_its_declared_fields_reads_as_the_whole_body_does(payload) -> None:
    """Decoding only the declared fields (jira/event.py) changes no part the webhook reads."""
    body = json.dumps(payload).encode()
    assert what_is_read(event.decode(body)) == what_is_read(json.loads(body))
