"""The benchmark package's own parts (bench/): wrk's output read, the scenarios resolved,
the loop run against a stand-in load, the report by series name, and the shared server
starter. No wrk needed; only the last tests start a real server."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from bench import cli, lua
from bench.report import Results, ratio_lines, report
from bench.runner import Runner
from bench.scenarios import (
    DEFAULT,
    FULL,
    HASHING_CONNECTIONS,
    PROFILE_POST,
    QUICK,
    SCALE,
    SCENARIOS,
    STORM,
    WRITES,
    Knobs,
    Phase,
    Plain,
    PlanError,
    Ratio,
    Scenario,
    Step,
    resolve,
)
from bench.server import Server, ServerError, drain, free_port, pinned, server_env
from bench.wrk import WrkResult, milliseconds, parse_wrk, wrk_command

WRK_OUTPUT = """\
Running 10s test @ http://127.0.0.1:8000
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    13.12ms    2.10ms  40.00ms   90.00%
    Req/Sec     2.34k   100.00     2.50k    80.00%
  Latency Distribution
     50%   12.56ms
     75%   13.00ms
     90%   14.00ms
     99%    1.33s
  23250 requests in 10.00s, 11.20MB read
  Socket errors: connect 0, read 1, write 2, timeout 3
  Non-2xx or 3xx responses: 5
Requests/sec:   2325.00
Transfer/sec:      1.12MB
"""
DEFAULT_SERIES = ["bare", "healthz", "profile", "profile_get", "login", "refresh"]
SMALL = Knobs(users=100, scale_users=300, duration=2.0, warmup=1.0, rounds=2, connections=8)


def result(rps: float = 100.0, p99: float = 10.0, non_2xx: int = 0) -> WrkResult:
    return WrkResult(rps, p99 / 2, p99, non_2xx, socket_errors=0, requests=int(rps))


# --------------------------------------------------------------------------- wrk


def test_parse_wrk_reads_every_figure() -> None:
    assert parse_wrk(WRK_OUTPUT) == WrkResult(
        requests_per_s=2325.0,
        p50_ms=12.56,
        p99_ms=1330.0,
        non_2xx=5,
        socket_errors=6,
        requests=23250,
    )


def test_parse_wrk_without_errors_counts_none() -> None:
    clean = "\n".join(
        line for line in WRK_OUTPUT.splitlines() if "Socket" not in line and "Non-2xx" not in line
    )
    parsed = parse_wrk(clean.replace("12.56ms", "812.00us"))
    assert (parsed.non_2xx, parsed.socket_errors) == (0, 0)
    assert parsed.p50_ms == pytest.approx(0.812)


def test_parse_wrk_refuses_output_without_figures() -> None:
    with pytest.raises(RuntimeError, match="could not parse"):
        parse_wrk("unable to connect to 127.0.0.1:8000 Connection refused\n")


@pytest.mark.parametrize(
    ("text", "ms"), [("812.00us", 0.812), ("13.12ms", 13.12), ("1.50s", 1500.0), ("1.00m", 60_000)]
)
def test_milliseconds(text: str, ms: float) -> None:
    assert milliseconds(text) == pytest.approx(ms)


def test_milliseconds_refuses_unknown_units() -> None:
    with pytest.raises(ValueError, match="unexpected wrk latency"):
        milliseconds("3h")


def test_wrk_command_runs_whole_seconds_and_the_script(tmp_path: Path) -> None:
    command = wrk_command("http://127.0.0.1:1", tmp_path / "x.lua", 16, 0.4)
    assert command[command.index("wrk") :] == [
        *("wrk", "-t1", "-c16", "-d1s", "--timeout", "10s", "--latency"),
        *("-s", str(tmp_path / "x.lua"), "http://127.0.0.1:1"),
    ]


def test_pinned_only_to_an_existing_cpu() -> None:
    assert pinned(None, ["true"]) == ["true"]
    assert pinned((os.cpu_count() or 1) + 1, ["true"]) == ["true"]


def test_lua_strings_are_escaped() -> None:
    assert lua.lua_string('a"b\\c') == '"a\\"b\\\\c"'
    script = lua.bearer_tokens("POST", "/p", ["t1", "t2"])
    assert '"t1",\n"t2"' in script
    assert 'wrk.format("POST", "/p"' in script


# --------------------------------------------------------------------------- scenarios


@pytest.mark.parametrize("knobs", [FULL, QUICK, SMALL], ids=["full", "quick", "small"])
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_scenario_resolves(name: str, knobs: Knobs) -> None:
    plan = resolve(SCENARIOS[name], knobs)
    names = [series for series, _ in plan.series]
    assert len(names) == len(set(names))
    for stage in plan.stages:
        assert stage.warmups
        assert all(w.seconds == knobs.warmup for w in stage.warmups)


def test_default_scenario() -> None:
    plan = resolve(DEFAULT, SMALL)
    assert [name for name, _ in plan.series] == DEFAULT_SERIES
    (stage,) = plan.stages
    assert {(m.connections, m.seconds, m.users) for m in stage.measurements} == {(8, 2.0, 100)}
    assert [w.name for w in stage.warmups] == [name for name, _ in plan.series]
    # the bare app is measured in the same rounds, on its own server
    assert [m.target for m in stage.measurements] == ["bare"] + ["service"] * 5
    assert [(r.numerator, r.denominator, r.per_round) for r in plan.ratios] == [
        ("profile", "bare", True),
        ("healthz", "bare", True),
        ("refresh", "bare", True),
        ("profile", "healthz", True),
    ]


def test_storm_runs_the_login_storm_around_the_measurement() -> None:
    plan = resolve(STORM, SMALL)
    assert [name for name, _ in plan.series] == ["idle", "storm", "login_storm"]
    (stage,) = plan.stages
    storm = stage.measurements[1]
    assert storm.alongside is not None
    assert (storm.alongside.connections, storm.alongside.seconds, storm.alongside.lead) == (
        16,
        SMALL.duration + 2,
        1.0,
    )
    # idle and storm request the same thing: one warm-up, without the storm.
    assert [(w.request, w.alongside) for w in stage.warmups] == [(PROFILE_POST, None)]


def test_scale_names_its_series_by_size() -> None:
    plan = resolve(SCALE, SMALL)
    assert [stage.users for stage in plan.stages] == [100, 100, 300, 300]
    assert [stage.title for stage in plan.stages] == [
        "100 users, profile",
        "100 users, search",
        "300 users, profile",
        "300 users, search",
    ]
    assert [name for name, _ in plan.series] == [
        "profile@100",
        "search@100",
        "search_alone@100",
        "events@100",
        "profile@300",
        "search@300",
        "search_alone@300",
        "events@300",
    ]
    assert dict(plan.series)["search_alone@300"] == "admin search, 1 connection, 300 users"
    assert [m.connections for m in plan.stages[1].measurements] == [8, 1, 1]
    # Both user searches request the same thing: one warm-up for them, one for the events.
    assert len(plan.stages[1].warmups) == 2
    assert [(r.name, r.numerator, r.denominator) for r in plan.ratios] == [
        ("profile p99, 300 ÷ 100 users", "profile@300", "profile@100"),
        ("admin search p99 (8 connections), 300 ÷ 100 users", "search@300", "search@100"),
        (
            "admin search p99 (1 connection), 300 ÷ 100 users",
            "search_alone@300",
            "search_alone@100",
        ),
        ("audit events p99 (1 connection), 300 ÷ 100 events", "events@300", "events@100"),
    ]


def test_scale_needs_more_users_at_the_second_size() -> None:
    with pytest.raises(PlanError, match="the table only grows"):
        resolve(SCALE, dataclasses.replace(SMALL, scale_users=50))
    with pytest.raises(PlanError, match="two steps"):
        resolve(SCALE, dataclasses.replace(SMALL, scale_users=SMALL.users))


def test_a_ratio_must_name_measured_series() -> None:
    scenario = dataclasses.replace(DEFAULT, ratios=(Ratio("x", "profile", "nothing"),))
    with pytest.raises(PlanError, match="'nothing', which no step measures"):
        resolve(scenario, SMALL)


def test_knobs_must_be_positive() -> None:
    with pytest.raises(PlanError):
        resolve(DEFAULT, dataclasses.replace(SMALL, rounds=0))


def test_another_server_and_its_ratios_are_data() -> None:
    """What a series on a second server takes: a step naming its target, ratios naming it."""
    other = Step("other", "another app: GET /", Plain("GET", "/"), target="other")
    phase = DEFAULT.phases[0]
    scenario = dataclasses.replace(
        DEFAULT,
        phases=(dataclasses.replace(phase, steps=(*phase.steps, other)),),
        ratios=(*DEFAULT.ratios, Ratio("profile ÷ other", "profile", "other")),
    )
    plan = resolve(scenario, SMALL)
    assert plan.stages[0].measurements[-1].target == "other"
    assert [w.target for w in plan.stages[0].warmups][-1] == "other"
    assert [r.name for r in plan.ratios][-1] == "profile ÷ other"


def test_command_line_knobs() -> None:
    assert cli.parse_args([]) == (DEFAULT, FULL)
    assert cli.parse_args(["--quick", "--scenario", "storm"]) == (STORM, QUICK)
    _, knobs = cli.parse_args(["--quick", "--users", "800", "--rounds", "2"])
    assert knobs == dataclasses.replace(QUICK, users=800, rounds=2)
    assert cli.parse_args(["--users", "1"])[1].users == 2  # user 1 is staff; logins need others


# --------------------------------------------------------------------------- the loop


class FakeWrk:
    """Records every load; each answer's requests/s is its position, so order shows
    (999 for a background load)."""

    def __init__(self) -> None:
        self.loads: list[tuple[str, str, int, float]] = []

    def measure(self, url: str, script: Path, connections: int, seconds: float) -> WrkResult:
        self.loads.append((url, script.read_text(), connections, seconds))
        return result(rps=len(self.loads))

    def start(
        self, url: str, script: Path, connections: int, seconds: float
    ) -> Callable[[], WrkResult]:
        self.loads.append((url, "background:" + script.read_text(), connections, seconds))
        return lambda: result(rps=999)


class FakeBench:
    def __init__(self) -> None:
        self.grown: list[int] = []
        self.refreshes: list[int] = []
        self.fresh: list[int] = []
        self.measurements = 0

    def url(self, target: str) -> str:
        return f"http://{target}"

    def grow(self, users: int) -> None:
        self.grown.append(users)

    def refresh_tokens(self, user_ids: Sequence[int]) -> list[str]:
        self.refreshes.append(len(user_ids))
        return [f"refresh-{i}" for i in user_ids]

    def fresh_accounts(self, count: int) -> list[str]:
        self.fresh.append(count)
        return [f"fresh-{len(self.fresh)}-{i}" for i in range(count)]

    def before_measurement(self) -> None:
        self.measurements += 1


def runner(tmp_path: Path, wrk: FakeWrk, bench: FakeBench, sleeps: list[float]) -> Runner:
    return Runner(
        wrk, bench, tmp_path, ["a1", "a2"], "staff", users=SMALL.users, sleep=sleeps.append
    )


def test_the_loop_warms_up_then_interleaves_rounds(tmp_path: Path) -> None:
    wrk, bench = FakeWrk(), FakeBench()
    results = runner(tmp_path, wrk, bench, []).run(resolve(DEFAULT, SMALL))
    assert len(wrk.loads) == 6 + 2 * 6
    assert [s.name for s in results] == DEFAULT_SERIES
    # round 1 is loads 7-12, round 2 loads 13-18
    assert results["bare"].values("requests_per_s") == [7, 13]
    assert results["refresh"].values("requests_per_s") == [12, 18]
    assert {url for url, *_ in wrk.loads} == {"http://bare", "http://service"}
    assert bench.measurements == 12
    assert bench.refreshes == [SMALL.connections * 4] * 3  # fresh tokens for every run
    logins = [(text, seconds) for _, text, _, seconds in wrk.loads if 'auth/token"' in text]
    # each run goes on after the accounts the last one used (its requests + connections)
    starts = [text.split("local k = ")[1].split("\n")[0] for text, _ in logins]
    assert starts == ["0", str(5 + 8), str(5 + 8 + 11 + 8)]


def test_the_writes_scenario_uses_new_names_and_accounts_each_run(tmp_path: Path) -> None:
    wrk, bench = FakeWrk(), FakeBench()
    results = runner(tmp_path, wrk, bench, []).run(resolve(WRITES, SMALL))
    assert [s.name for s in results] == ["register", "login", "refresh", "password_change"]
    assert [m.connections for m in resolve(WRITES, SMALL).stages[0].measurements] == [
        HASHING_CONNECTIONS,
        HASHING_CONNECTIONS,
        SMALL.connections,
        HASHING_CONNECTIONS,
    ]
    registers = [text for _, text, _, _ in wrk.loads if "auth/register" in text]
    prefixes = {text.split('local name = "')[1].split('"')[0] for text in registers}
    assert len(registers) == len(prefixes) == 3  # the warm-up and two rounds
    changes = [text for _, text, _, _ in wrk.loads if "profile/password" in text]
    assert len(changes) == 3
    # each run gets accounts of its own, enough for the run's length
    warmup = round(SMALL.warmup * 60) + 2 * HASHING_CONNECTIONS
    measured = round(SMALL.duration * 60) + 2 * HASHING_CONNECTIONS
    assert bench.fresh == [warmup, measured, measured]
    assert '"fresh-2-0"' in changes[1]
    assert '"fresh-1-0"' not in changes[1]
    assert 'current_password\\":\\"bench-password-31415' in changes[0]


def test_the_loop_runs_the_background_load_around_its_step(tmp_path: Path) -> None:
    wrk, bench = FakeWrk(), FakeBench()
    sleeps: list[float] = []
    results = runner(tmp_path, wrk, bench, sleeps).run(resolve(STORM, SMALL))
    assert sleeps == [1.0, 1.0]
    assert results["login_storm"].values("requests_per_s") == [999, 999]
    background = [load for load in wrk.loads if load[1].startswith("background:")]
    assert [(c, s) for _, _, c, s in background] == [(16, SMALL.duration + 2)] * 2


def test_the_loop_grows_the_table_between_sizes(tmp_path: Path) -> None:
    wrk, bench = FakeWrk(), FakeBench()
    results = runner(tmp_path, wrk, bench, []).run(resolve(SCALE, SMALL))
    assert bench.grown == [300]
    searches = {text for _, text, _, _ in wrk.loads if "search=" in text}
    assert len(searches) == 2  # one script per size, shared by both connection counts
    assert [s.name for s in results] == [name for name, _ in resolve(SCALE, SMALL).series]


# --------------------------------------------------------------------------- the report


def filled(plan_results: Sequence[tuple[str, WrkResult]]) -> Results:
    results = Results()
    for name, measured in plan_results:
        results.add(name, f"label of {name}", measured)
    return results


def test_the_report_finds_series_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    plan = resolve(DEFAULT, SMALL)
    # recorded in another order than declared: the table follows the declarations
    results = filled(
        [
            ("refresh", result()),
            ("login", result()),
            ("profile", result(rps=400, p99=20)),
            ("healthz", result(rps=1000)),
            ("profile_get", result()),
            ("profile", result(rps=600)),
            ("healthz", result(rps=1000)),
            ("bare", result(rps=2000)),
            ("bare", result(rps=1000)),
            *[(name, result()) for name in ["refresh", "login", "profile_get"]],
        ]
    )
    assert report(plan, results, rss_mib=100.0) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| label of")]
    assert [row.split(" | ")[0] for row in rows] == [
        f"| label of {name}" for name in DEFAULT_SERIES
    ]
    assert "| label of profile | 500 (400-600) |" in out
    assert (
        "profile ÷ ceiling (POST /users/profile ÷ /healthz), medians: 0.50 (500 ÷ 1,000 requests/s)"
        in out
    )
    assert "profile ÷ ceiling per round: median 0.50 (0.40-0.60; 0.40, 0.60)" in out
    assert "profile ÷ bare per round: median 0.40 (0.20-0.60; 0.20, 0.60)" in out
    assert "/healthz ÷ bare (what the middleware leaves), medians: 0.67" in out
    assert "valid run" in out


def test_a_latency_ratio_shows_both_medians() -> None:
    results = filled([("storm", result(p99=30)), ("idle", result(p99=12))])
    ratio = Ratio("profile p99, storm ÷ idle", "storm", "idle", "p99_ms", per_round=False)
    assert ratio_lines(ratio, results) == [
        "profile p99, storm ÷ idle, medians: 2.50 (30.00 ÷ 12.00 ms)"
    ]


def test_a_missing_series_is_named() -> None:
    with pytest.raises(KeyError, match="no series named 'bare'"):
        filled([("profile", result())])["bare"]


def test_a_run_with_errors_or_silence_is_invalid(capsys: pytest.CaptureFixture[str]) -> None:
    scenario = Scenario("one", "", (Phase((Step("a", "A", Plain("GET", "/")),)),))
    plan = resolve(scenario, dataclasses.replace(SMALL, rounds=1))
    assert report(plan, filled([("a", result(non_2xx=3))]), 1.0) == 1
    assert "INVALID RUN: 3 non-2xx" in capsys.readouterr().out
    silent = dataclasses.replace(result(), requests=0)
    assert report(plan, filled([("a", silent)]), 1.0) == 1
    assert "no answer at all within a measurement: label of a" in capsys.readouterr().out


# --------------------------------------------------------------------------- the server


def test_server_env_leaves_out_the_switches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USERSERVICE_REQUIRE_POSTGRES", "1")
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    env = server_env("sqlite+aiosqlite:///x.db", "k" * 40, MAX_BODY_BYTES="10")
    assert not [key for key in env if key.startswith("USERSERVICE_")]
    assert env["DATABASE_URL"] == "sqlite+aiosqlite:///x.db"
    assert (env["SECRET_KEY"], env["LOG_LEVEL"], env["MAX_BODY_BYTES"]) == (
        "k" * 40,
        "WARNING",
        "10",
    )
    assert env["PATH"] == os.environ["PATH"]


def test_free_ports_are_free() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))


@pytest.mark.slow
def test_server_starts_idles_and_stops(tmp_path: Path) -> None:
    env = server_env(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}", "k" * 40)
    with Server.start(env, tmp_path) as server:
        assert server.log == tmp_path / f"server-{server.url.rsplit(':', 1)[1]}.log"
        drain(server.url)
        assert 10 < server.rss_mib() < 2000
        assert server.cpu_seconds() > 0
    assert server.process.returncode is not None


@pytest.mark.slow
def test_a_server_that_exits_is_reported_with_its_log(tmp_path: Path) -> None:
    env = server_env(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}", "too-short")
    with pytest.raises(ServerError, match=r"(?s)exited with status 2.*at least 32 bytes"):
        Server.start(env, tmp_path)


@pytest.mark.slow
def test_a_server_that_does_not_answer_in_time_is_refused(tmp_path: Path) -> None:
    env = server_env(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}", "k" * 40)
    with pytest.raises(ServerError, match="did not answer /healthz within 0 s"):
        Server.start(env, tmp_path, timeout=0)
