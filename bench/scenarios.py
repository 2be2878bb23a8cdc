"""The HTTP benchmark's scenarios, declared as data, and how they resolve into a plan.

A ``Scenario`` is phases of named ``Step``s plus the ``Ratio``s the report prints. Each
phase runs a warm-up of each distinct request it makes, then ``rounds`` rounds in which
every step is measured once, in order (interleaved: a drift of the machine's speed hits
every series of a round alike, so ratios within a round are steadier than either figure).
A step's ``name`` is the key the report finds its series by; its ``label`` is printed.

Adding a series is adding a ``Step``; adding a ratio is adding a ``Ratio`` naming two
series. A step on another server names it as its ``target`` (the runner maps target names
to URLs; "service" is the benchmarked service).

``resolve`` turns a scenario and the ``Knobs`` (``FULL``, or ``QUICK`` for ``--quick``,
with the command line's overrides) into a ``Plan``: every placeholder filled in, every
measurement with its connections and seconds, every warm-up listed, and checked (series
names unique, ratios naming measured series, the table never shrinking).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, TypeAlias

Attribute = Literal["requests_per_s", "p50_ms", "p99_ms"]
Size = Literal["users", "scale_users"]
SERVICE = "service"
BARE = "bare"  # bench/bare.py: the framework's ceiling

# --------------------------------------------------------------------------- requests
# What a step requests; the runner (bench/runner.py) writes the wrk Lua script for each.


@dataclass(frozen=True)
class Plain:
    """Anonymous requests to one path."""

    method: str
    path: str


@dataclass(frozen=True)
class WithAccessTokens:
    """Bearer requests to one path, cycling through distinct users' access tokens."""

    method: str
    path: str


@dataclass(frozen=True)
class AdminSearch:
    """A staff user's searches: half by a username fragment, half by a last-name fragment
    (over the phase's number of users)."""


@dataclass(frozen=True)
class EventSearch:
    """A staff user's audit-trail searches: half by account, half by address (one event
    per user is seeded: at 1,000,000 users, 1,000,000 events)."""


@dataclass(frozen=True)
class Login:
    """Logins as distinct seeded users; each run goes on where the last one stopped."""


@dataclass(frozen=True)
class Refresh:
    """Refresh-token rotations, chained per connection, from fresh tokens each run."""


@dataclass(frozen=True)
class Register:
    """Registrations of new accounts, a new username and address each."""


@dataclass(frozen=True)
class PasswordChange:
    """Password changes, each by another account seeded for the run (a change ends every
    session of its user, so each access token and account serves once)."""


Request: TypeAlias = (
    Plain
    | WithAccessTokens
    | AdminSearch
    | EventSearch
    | Login
    | Refresh
    | Register
    | PasswordChange
)

# --------------------------------------------------------------------------- declarations


@dataclass(frozen=True)
class Step:
    """One measured series. ``{users}`` in ``name`` or ``label`` stands for the phase's
    number of users (``{users:,}``: with thousands separators); ``connections`` and
    ``duration`` default to the knobs'."""

    name: str
    label: str
    request: Request
    target: str = SERVICE
    connections: int | None = None
    duration: float | None = None
    alongside: Background | None = None


@dataclass(frozen=True)
class Background:
    """A load running while a step is measured: it starts ``lead`` seconds before the
    measurement and runs ``lead`` seconds past it; its figures are a series of their own."""

    step: Step
    lead: float = 1.0


@dataclass(frozen=True)
class Phase:
    """Steps measured in rounds with the table at ``users`` (the knob of that name). A
    phase with more users than the table has grows it and starts a fresh service worker."""

    steps: tuple[Step, ...]
    users: Size = "users"
    title: str = ""  # printed with each round's number; placeholders as in Step


@dataclass(frozen=True)
class Ratio:
    """``numerator`` ÷ ``denominator`` (series names) of ``attribute``'s medians, and with
    ``per_round`` the ratio within each round. ``name``, ``detail`` and the series names may
    hold ``{users}``, ``{scale_users}`` and ``{connections}``."""

    name: str
    numerator: str
    denominator: str
    attribute: Attribute = "requests_per_s"
    detail: str = ""
    per_round: bool = True


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    phases: tuple[Phase, ...]
    ratios: tuple[Ratio, ...] = ()


@dataclass(frozen=True)
class Knobs:
    users: int
    scale_users: int
    duration: float  # seconds per measurement
    warmup: float  # seconds per warm-up
    rounds: int
    connections: int = 32


FULL = Knobs(users=10_000, scale_users=1_000_000, duration=10.0, warmup=3.0, rounds=3)
QUICK = Knobs(users=500, scale_users=5_000, duration=1.0, warmup=1.0, rounds=1)  # CI's smoke

# --------------------------------------------------------------------------- the scenarios

PROFILE = "/api/v1/users/profile"
PROFILE_POST = WithAccessTokens("POST", PROFILE)

DEFAULT = Scenario(
    name="default",
    summary="bare FastAPI, /healthz, POST and GET /users/profile, login, refresh",
    phases=(
        Phase(
            steps=(
                Step(
                    "bare",
                    "bare FastAPI app: GET /healthz (profile-sized constant, no middleware)",
                    Plain("GET", "/healthz"),
                    target=BARE,
                ),
                Step("healthz", "in-app ceiling: GET /healthz", Plain("GET", "/healthz")),
                Step("profile", f"POST {PROFILE}", PROFILE_POST),
                Step("profile_get", f"GET {PROFILE}", WithAccessTokens("GET", PROFILE)),
                Step("login", "login: POST /api/v1/auth/token", Login()),
                Step("refresh", "refresh: POST /api/v1/auth/token/refresh", Refresh()),
            )
        ),
    ),
    ratios=(
        Ratio("profile ÷ bare", "profile", "bare", detail="POST /users/profile ÷ bare FastAPI"),
        Ratio("/healthz ÷ bare", "healthz", "bare", detail="what the middleware leaves"),
        Ratio("refresh ÷ bare", "refresh", "bare"),
        Ratio("profile ÷ ceiling", "profile", "healthz", detail="POST /users/profile ÷ /healthz"),
    ),
)

STORM = Scenario(
    name="storm",
    summary="profile latency idle, then while 16 clients log in continuously (a second wrk)",
    phases=(
        Phase(
            steps=(
                Step("idle", f"POST {PROFILE}, idle", PROFILE_POST),
                Step(
                    "storm",
                    f"POST {PROFILE}, during login storm",
                    PROFILE_POST,
                    alongside=Background(
                        Step(
                            "login_storm",
                            "login storm: POST /api/v1/auth/token (16 connections)",
                            Login(),
                            connections=16,
                        )
                    ),
                ),
            )
        ),
    ),
    ratios=(
        Ratio(
            "profile p99, during the login storm ÷ idle", "storm", "idle", "p99_ms", per_round=False
        ),
    ),
)


# The argon2-bound writes (a hash or a verification each, two for a password change) at 8
# connections: more only lengthen the queue in front of the hashing threads.
HASHING_CONNECTIONS = 8

WRITES = Scenario(
    name="writes",
    summary="the write paths: register, login, refresh, password change (a guard for the "
    "writes the outbox, audit events and second factor add)",
    phases=(
        Phase(
            steps=(
                Step(
                    "register",
                    f"register: POST /api/v1/auth/register ({HASHING_CONNECTIONS} connections)",
                    Register(),
                    connections=HASHING_CONNECTIONS,
                ),
                Step(
                    "login",
                    f"login: POST /api/v1/auth/token ({HASHING_CONNECTIONS} connections)",
                    Login(),
                    connections=HASHING_CONNECTIONS,
                ),
                Step("refresh", "refresh: POST /api/v1/auth/token/refresh", Refresh()),
                Step(
                    "password_change",
                    "password change: POST /api/v1/users/profile/password "
                    f"({HASHING_CONNECTIONS} connections)",
                    PasswordChange(),
                    connections=HASHING_CONNECTIONS,
                ),
            )
        ),
    ),
)


def _at(users: Size) -> tuple[Phase, Phase]:
    """Profile rounds, then search rounds, at one table size. A staff search is rare beside
    profile reads: its latency alone (what the index and queries cost) is measured beside
    the same search from all connections at once."""
    search = AdminSearch()
    return (
        Phase(
            steps=(Step("profile@{users}", f"POST {PROFILE}, {{users:,}} users", PROFILE_POST),),
            users=users,
            title="{users:,} users, profile",
        ),
        Phase(
            steps=(
                Step(
                    "search@{users}",
                    "admin search GET /api/v1/users?search=, {users:,} users",
                    search,
                ),
                Step(
                    "search_alone@{users}",
                    "admin search, 1 connection, {users:,} users",
                    search,
                    connections=1,
                ),
                Step(
                    "events@{users}",
                    "audit events GET /api/v1/events by user_id or ip, 1 connection, "
                    "{users:,} events",
                    EventSearch(),
                    connections=1,
                ),
            ),
            users=users,
            title="{users:,} users, search",
        ),
    )


SCALE = Scenario(
    name="scale",
    summary="profile, admin search and audit-event search at --users, then at --scale-users "
    "(a fresh worker each; one audit event per user)",
    phases=(*_at("users"), *_at("scale_users")),
    ratios=(
        Ratio(
            "profile p99, {scale_users:,} ÷ {users:,} users",
            "profile@{scale_users}",
            "profile@{users}",
            "p99_ms",
            per_round=False,
        ),
        Ratio(
            "admin search p99 ({connections} connections), {scale_users:,} ÷ {users:,} users",
            "search@{scale_users}",
            "search@{users}",
            "p99_ms",
            per_round=False,
        ),
        Ratio(
            "admin search p99 (1 connection), {scale_users:,} ÷ {users:,} users",
            "search_alone@{scale_users}",
            "search_alone@{users}",
            "p99_ms",
            per_round=False,
        ),
        Ratio(
            "audit events p99 (1 connection), {scale_users:,} ÷ {users:,} events",
            "events@{scale_users}",
            "events@{users}",
            "p99_ms",
            per_round=False,
        ),
    ),
)

SCENARIOS = {scenario.name: scenario for scenario in (DEFAULT, STORM, SCALE, WRITES)}

# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Measurement:
    """A resolved step: everything the runner needs, nothing left to look up."""

    name: str
    label: str
    request: Request
    target: str
    connections: int
    seconds: float
    users: int
    alongside: Measurement | None = None
    lead: float = 0.0


@dataclass(frozen=True)
class Stage:
    """A resolved phase: its warm-ups (not recorded), then ``measurements`` each round."""

    users: int
    title: str
    warmups: tuple[Measurement, ...]
    measurements: tuple[Measurement, ...]


@dataclass(frozen=True)
class Plan:
    """A scenario resolved with the knobs: what the runner runs and the report reads."""

    scenario: str
    knobs: Knobs
    stages: tuple[Stage, ...]
    ratios: tuple[Ratio, ...]

    @property
    def series(self) -> list[tuple[str, str]]:
        """Every series as (name, label), in the order of the declarations."""
        found: list[tuple[str, str]] = []
        for stage in self.stages:
            for measurement in stage.measurements:
                found.append((measurement.name, measurement.label))
                if measurement.alongside is not None:
                    found.append((measurement.alongside.name, measurement.alongside.label))
        return found


class PlanError(ValueError):
    """A scenario that cannot run with these knobs (names twice, a ratio of nothing...)."""


def _measurement(step: Step, users: int, knobs: Knobs) -> Measurement:
    seconds = step.duration or knobs.duration
    alongside = None
    if step.alongside is not None:
        lead = step.alongside.lead
        alongside = dataclasses.replace(
            _measurement(step.alongside.step, users, knobs), seconds=seconds + 2 * lead, lead=lead
        )
    return Measurement(
        name=step.name.format(users=users),
        label=step.label.format(users=users),
        request=step.request,
        target=step.target,
        connections=step.connections or knobs.connections,
        seconds=seconds,
        users=users,
        alongside=alongside,
    )


def _warmups(measurements: tuple[Measurement, ...], knobs: Knobs) -> tuple[Measurement, ...]:
    """One warm-up per distinct request and target of the phase, at the knobs' connections
    (the loads running alongside are not warmed up)."""
    seen: dict[tuple[str, Request], Measurement] = {}
    for m in measurements:
        key = (m.target, m.request)
        if key not in seen:
            seen[key] = dataclasses.replace(
                m, connections=knobs.connections, seconds=knobs.warmup, alongside=None
            )
    return tuple(seen.values())


def resolve(scenario: Scenario, knobs: Knobs) -> Plan:
    if min(knobs.users, knobs.scale_users, knobs.rounds, knobs.connections) < 1:
        raise PlanError(f"knobs must be positive: {knobs}")
    if knobs.duration <= 0 or knobs.warmup <= 0:
        raise PlanError(f"durations must be positive: {knobs}")
    stages: list[Stage] = []
    size = knobs.users
    for phase in scenario.phases:
        users = knobs.users if phase.users == "users" else knobs.scale_users
        if users < size:
            raise PlanError(f"phase at {users:,} users after one at {size:,}: the table only grows")
        size = users
        measurements = tuple(_measurement(step, users, knobs) for step in phase.steps)
        stages.append(
            Stage(
                users, phase.title.format(users=users), _warmups(measurements, knobs), measurements
            )
        )
    values = {
        "users": knobs.users,
        "scale_users": knobs.scale_users,
        "connections": knobs.connections,
    }
    ratios = tuple(
        dataclasses.replace(
            ratio,
            name=ratio.name.format(**values),
            detail=ratio.detail.format(**values),
            numerator=ratio.numerator.format(**values),
            denominator=ratio.denominator.format(**values),
        )
        for ratio in scenario.ratios
    )
    plan = Plan(scenario.name, knobs, tuple(stages), ratios)
    names = [name for name, _ in plan.series]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise PlanError(f"series measured by two steps: {', '.join(twice)}")
    for ratio in ratios:
        for name in (ratio.numerator, ratio.denominator):
            if name not in names:
                raise PlanError(f"ratio {ratio.name!r} names {name!r}, which no step measures")
    return plan
