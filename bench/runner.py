"""The one loop that runs a plan (bench/scenarios.py): per stage, grow the table when the
stage wants more users, warm up, then measure every step once per round, recording each
result under its series' name."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, assert_never

from bench import lua
from bench.database import EVENT_ADDRESSES
from bench.report import Results
from bench.scenarios import (
    AdminSearch,
    EventSearch,
    Login,
    Measurement,
    PasswordChange,
    Plain,
    Plan,
    Refresh,
    Register,
    Request,
    WithAccessTokens,
)
from bench.wrk import WrkResult

REFRESH_TOKENS_PER_CONNECTION = 4
# Password changes are argon2-bound (a verification and a hash, ~10 per second on a core):
# accounts enough for this many per second, plus one in flight per connection.
PASSWORD_CHANGES_PER_SECOND = 60


class Driver(Protocol):
    """The load generator (bench/wrk.py's ``Wrk``)."""

    def measure(self, url: str, script: Path, connections: int, seconds: float) -> WrkResult:
        """Run a load to its end; its figures."""

    def start(
        self, url: str, script: Path, connections: int, seconds: float
    ) -> Callable[[], WrkResult]:
        """Start a load in the background; the function returned waits for its figures."""


class Bench(Protocol):
    """The running benchmark as the loop sees it (bench/cli.py's ``LiveBench``)."""

    def url(self, target: str) -> str:
        """The base URL of the server a step names as its target."""

    def grow(self, users: int) -> None:
        """Seed users up to ``users`` and restart the service on the grown table."""

    def refresh_tokens(self, user_ids: Sequence[int]) -> list[str]:
        """One new session, and its refresh token, per user id."""

    def fresh_accounts(self, count: int) -> list[str]:
        """Access tokens of ``count`` accounts seeded now (at the benchmark's password), each
        to be used once; none of them is among the users the logins cycle through."""

    def before_measurement(self) -> None:
        """Called before each recorded measurement (e.g. to pin new database backends)."""


@dataclass
class Runner:
    driver: Driver
    bench: Bench
    workdir: Path
    access_tokens: Sequence[str]
    staff_token: str
    users: int  # the table's size now
    sleep: Callable[[float], None] = time.sleep
    login_start: int = 0
    _scripts: dict[tuple[Request, int], Path] = field(default_factory=dict)
    _written: int = 0

    def run(self, plan: Plan) -> Results:
        results = Results()
        for stage in plan.stages:
            if stage.users > self.users:
                self.bench.grow(stage.users)
                self.users = stage.users
            print(f"warm-up ({plan.knobs.warmup:.0f} s per endpoint)", flush=True)
            for warmup in stage.warmups:
                self._run(warmup)
            for number in range(1, plan.knobs.rounds + 1):
                title = f" ({stage.title})" if stage.title else ""
                print(f"round {number}/{plan.knobs.rounds}{title}", flush=True)
                for measurement in stage.measurements:
                    self._record(measurement, results)
        return results

    def _record(self, measurement: Measurement, results: Results) -> None:
        self.bench.before_measurement()
        background = measurement.alongside
        if background is None:
            recorded = [(measurement, self._run(measurement))]
        else:
            finish = self.driver.start(
                self.bench.url(background.target),
                self.script(background),
                background.connections,
                background.seconds,
            )
            self.sleep(background.lead)
            result = self._run(measurement)
            recorded = [(measurement, result), (background, self._ran(background, finish()))]
        for done, result in recorded:
            results.add(done.name, done.label, result)
            print(
                f"  {done.label}: {result.requests_per_s:,.0f} req/s, "
                f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
                f"non-2xx {result.non_2xx}, socket errors {result.socket_errors}",
                flush=True,
            )

    def _run(self, measurement: Measurement) -> WrkResult:
        result = self.driver.measure(
            self.bench.url(measurement.target),
            self.script(measurement),
            measurement.connections,
            measurement.seconds,
        )
        return self._ran(measurement, result)

    def _ran(self, measurement: Measurement, result: WrkResult) -> WrkResult:
        if isinstance(measurement.request, Login):
            # The next login run goes on after the accounts this one used (those of the
            # requests still in flight when wrk stopped included): every login is of
            # another account until all have been used once.
            used = result.requests + measurement.connections
            self.login_start = (self.login_start + used) % measurement.users
        return result

    def script(self, measurement: Measurement) -> Path:
        """The Lua script of a measurement's request: written once, or anew for each run
        for logins (from the next unused account), refreshes (a token is used once),
        registrations (new names) and password changes (new accounts)."""
        request, users = measurement.request, measurement.users
        key = (request, users)
        if key in self._scripts:
            return self._scripts[key]
        match request:
            case Plain(method, path):
                text = lua.plain(method, path)
            case WithAccessTokens(method, path):
                text = lua.bearer_tokens(method, path, self.access_tokens)
            case AdminSearch():
                text = lua.admin_search(self.staff_token, users)
            case EventSearch():
                addresses = min(users, EVENT_ADDRESSES)
                text = lua.event_search(self.staff_token, users, addresses)
            case Login():
                return self._write(lua.login(users, self.login_start))
            case Refresh():
                count = measurement.connections * REFRESH_TOKENS_PER_CONNECTION
                ids = [i % users + 1 for i in range(count)]
                return self._write(lua.refresh(self.bench.refresh_tokens(ids)))
            case Register():
                return self._write(lua.register(f"r{self._written + 1}"))
            case PasswordChange():
                count = round(measurement.seconds * PASSWORD_CHANGES_PER_SECOND)
                tokens = self.bench.fresh_accounts(count + 2 * measurement.connections)
                return self._write(lua.password_change(tokens))
            case _:
                assert_never(request)
        self._scripts[key] = self._write(text)
        return self._scripts[key]

    def _write(self, text: str) -> Path:
        self._written += 1
        path = self.workdir / f"script-{self._written}.lua"
        path.write_text(text)
        return path
