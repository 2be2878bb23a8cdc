"""HTTP benchmark of the service: one uvicorn worker on PostgreSQL, wrk as the load.

Run through ``bench/run`` (which makes the venv and installs wrk when missing):

    bench/run [--users 10000] [--scenario default|storm|scale] [--quick]

Creates a scratch PostgreSQL database on the server at BENCH_POSTGRES_URL (default
postgresql://postgres@127.0.0.1:5432/postgres), migrates it, seeds users with one
precomputed argon2 hash, starts ``python -m app serve`` pinned to CPU 0 (taskset) and runs
wrk pinned to CPU 1. Every figure is printed; nothing about speed is asserted. The exit
status is non-zero when any answer was not 2xx or wrk saw socket errors (``--quick`` is
the CI smoke).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.core.config import Settings  # noqa: E402
from app.core.security import PASSWORD_CONTEXT, TokenCodec, new_jti  # noqa: E402

PG_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PASSWORD = "bench-password-31415"
STAFF_USER_ID = 1
ACCESS_TOKENS = 1000  # distinct users whose access tokens the profile requests cycle through
FIRST_NAMES = ["Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi"]
VERSIONS = [
    "fastapi",
    "starlette",
    "pydantic",
    "pydantic-core",
    "sqlalchemy",
    "asyncpg",
    "uvicorn",
    "uvloop",
    "httptools",
    "python-jose",
    "libpass",
    "argon2-cffi",
]


# --------------------------------------------------------------------------- wrk


@dataclass
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    requests: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(value: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", value)
    if match is None:
        raise ValueError(f"unexpected wrk latency {value!r}")
    return float(match[1]) * _UNITS[match[2]]


def parse_wrk(output: str) -> WrkResult:
    def find(pattern: str) -> re.Match[str] | None:
        return re.search(pattern, output, re.MULTILINE)

    rps = find(r"^Requests/sec:\s+([0-9.]+)")
    p50 = find(r"^\s+50%\s+(\S+)")
    p99 = find(r"^\s+99%\s+(\S+)")
    total = find(r"^\s+([0-9]+) requests in")
    if not (rps and p50 and p99 and total):
        raise RuntimeError(f"could not parse wrk output:\n{output}")
    non_2xx = find(r"Non-2xx or 3xx responses:\s+([0-9]+)")
    errors = find(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
    return WrkResult(
        requests_per_s=float(rps[1]),
        p50_ms=_ms(p50[1]),
        p99_ms=_ms(p99[1]),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
        requests=int(total[1]),
    )


def _pinned(cpu: int, command: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > cpu:
        return ["taskset", "-c", str(cpu), *command]
    return command


def wrk_command(url: str, script: Path, connections: int, seconds: float) -> list[str]:
    return _pinned(
        1,
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
    )


def run_wrk(url: str, script: Path, connections: int, seconds: float) -> WrkResult:
    completed = subprocess.run(
        wrk_command(url, script, connections, seconds),
        capture_output=True,
        text=True,
        check=True,
    )
    drain(url)
    return parse_wrk(completed.stdout)


# --------------------------------------------------------------------------- Lua scripts


def _lua_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def lua_tokens(method: str, path: str, tokens: Sequence[str]) -> str:
    """Bearer requests cycling through distinct users' access tokens."""
    table = ",\n".join(_lua_string(token) for token in tokens)
    return f"""
local tokens = {{
{table}
}}
local i = 0
request = function()
  i = i % #tokens + 1
  return wrk.format({_lua_string(method)}, {_lua_string(path)},
    {{["Authorization"] = "Bearer " .. tokens[i], ["Content-Type"] = "application/json"}})
end
"""


def lua_plain(method: str, path: str) -> str:
    return f"""
request = function()
  return wrk.format({_lua_string(method)}, {_lua_string(path)})
end
"""


def lua_admin_search(staff_token: str, users: int) -> str:
    """Staff search: half by a username fragment, half by a last-name fragment."""
    return f"""
local n = 0
math.randomseed(12345)
request = function()
  n = n + 1
  local term
  if n % 2 == 0 then
    term = "user" .. math.random(1, {users})
  else
    term = "ln" .. string.format("%06x", math.random(0, 16777215)):sub(1, 5)
  end
  return wrk.format("GET", "/api/v1/users?search=" .. term .. "&limit=20",
    {{["Authorization"] = "Bearer " .. {_lua_string(staff_token)}}})
end
"""


def lua_login(users: int, start: int) -> str:
    """Log in as user<k> for k cycling through every seeded user (distinct accounts)."""
    return f"""
local k = {start}
request = function()
  k = k % {users} + 1
  local body = '{{"username":"user' .. k .. '","password":"{PASSWORD}"}}'
  return wrk.format("POST", "/api/v1/auth/token",
    {{["Content-Type"] = "application/json"}}, body)
end
"""


def lua_refresh(tokens: Sequence[str]) -> str:
    """Per-connection chains: each answer's new refresh token is queued for the next
    request (wrk calls response() before it builds that connection's next request); every
    token is sent once. A failed answer breaks its chain, a spare token restarts it."""
    table = ",\n".join(_lua_string(token) for token in tokens)
    return f"""
local queue = {{
{table}
}}
local head = 1
local tail = #queue
request = function()
  local token = queue[head]
  queue[head] = nil
  head = head + 1
  if token == nil then token = "exhausted" end
  return wrk.format("POST", "/api/v1/auth/token/refresh",
    {{["Content-Type"] = "application/json"}}, '{{"refresh_token":"' .. token .. '"}}')
end
response = function(status, headers, body)
  local token = body:match('"refresh_token":"([^"]+)"')
  if token ~= nil then
    tail = tail + 1
    queue[tail] = token
  end
end
"""


# --------------------------------------------------------------------------- database


async def create_database(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_database(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def database_dsn(name: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


async def seed_users(dsn: str, first: int, last: int, password_hash: str) -> None:
    """Users ``first..last`` in one INSERT ... SELECT generate_series; user 1 is staff."""
    names = "ARRAY[" + ",".join(f"'{name}'" for name in FIRST_NAMES) + "]"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            f"""
            INSERT INTO users (id, username, password, email, first_name, last_name,
                               number_phone, avatar, date_joined, last_login,
                               is_active, is_staff, is_superuser)
            SELECT i, 'user' || i, $1, 'user' || i || '@example.com',
                   ({names})[1 + i % {len(FIRST_NAMES)}],
                   'ln' || substr(md5(i::text), 1, 10),
                   lpad((i % 10000000000)::text, 10, '0'), NULL,
                   now() - make_interval(secs => i), NULL,
                   true, i = {STAFF_USER_ID}, false
            FROM generate_series($2::bigint, $3::bigint) AS i
            """,  # noqa: S608 (constants, no input)
            password_hash,
            first,
            last,
        )
        await conn.execute(
            "SELECT setval(pg_get_serial_sequence('users', 'id'), (SELECT max(id) FROM users))"
        )
        # VACUUM as autovacuum would: it also empties the GIN pending list, which every
        # trigram search otherwise reads through.
        await conn.execute("VACUUM ANALYZE users")
        # Write the seeding's dirty pages out now: left to the checkpointer, a million rows
        # and their indexes are flushed over the next minutes, during the measurements.
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def issue_sessions(
    dsn: str, codec: TokenCodec, user_ids: Sequence[int], kind: str
) -> list[str]:
    """One session row per user id, and its access or refresh token."""
    rows = [(uuid.uuid4(), user_id, new_jti()) for user_id in user_ids]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.executemany(
            "INSERT INTO auth_sessions (id, user_id, refresh_jti, created_at) "
            "VALUES ($1, $2, $3, now())",
            rows,
        )
    finally:
        await conn.close()
    if kind == "access":
        return [codec.issue("access", uid, sid).token for sid, uid, _ in rows]
    return [codec.issue("refresh", uid, sid, jti=jti).token for sid, uid, jti in rows]


async def database_backends(dsn: str) -> list[int]:
    """The PostgreSQL server processes serving the scratch database (the service's pools)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return [int(row["pid"]) for row in rows]


def pin_database_backends(dsn: str, cpu: int) -> str:
    """Put the scratch database's backends on the load generator's CPU, so that the worker
    has its CPU to itself: left to the scheduler they land on the worker's CPU in some
    measurements and not in others (seen as rounds at two speeds). Only this run's
    backends are moved, and they end with it. Returns what was done, for the report."""
    if (os.cpu_count() or 1) <= cpu or not hasattr(os, "sched_setaffinity"):
        return "not pinned (one CPU)"
    pids = asyncio.run(database_backends(dsn))
    moved = 0
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.sched_setaffinity(pid, {cpu})
            moved += 1
    if pids and not moved:
        return "not pinned (no permission to move PostgreSQL's processes)"
    return f"PostgreSQL backends of the run pinned to CPU {cpu}"


async def server_version(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


# --------------------------------------------------------------------------- the service


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    url: str

    def wait_idle(self, timeout: float = 120) -> None:
        """Until the worker uses under 5 % of a CPU (queued password hashes finished: they
        run at a lower priority, so /healthz answers fast before they are done)."""
        ticks = os.sysconf("SC_CLK_TCK")

        def cpu_seconds() -> float:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / ticks

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            before = cpu_seconds()
            time.sleep(0.5)
            if cpu_seconds() - before < 0.025:
                return

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def rss_mib(self) -> float:
        self.wait_idle()
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        return int(match[1]) / 1024 if match else float("nan")


@contextlib.contextmanager
def running_service(env: dict[str, str], port: int, log: Path) -> Iterator[Service]:
    command = [
        sys.executable,
        "-m",
        "app",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            _pinned(0, command), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    service = Service(process, f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the service exited:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"{service.url}/healthz", timeout=1):  # noqa: S310
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the service did not start:\n{log.read_text()}") from None
                time.sleep(0.2)
        yield service
    finally:
        service.stop()


def drain(url: str, timeout: float = 60) -> None:
    """Wait until the service is idle again: requests still queued after wrk stopped (a
    login's password hashing) would otherwise be charged to the next measurement."""
    deadline = time.monotonic() + timeout
    fast = 0
    while fast < 3 and time.monotonic() < deadline:
        started = time.monotonic()
        with urllib.request.urlopen(f"{url}/healthz", timeout=10):  # noqa: S310
            pass
        fast = fast + 1 if time.monotonic() - started < 0.01 else 0
        time.sleep(0.05)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- measuring


@dataclass
class Series:
    name: str
    results: list[WrkResult] = field(default_factory=list)

    @property
    def non_2xx(self) -> int:
        return sum(r.non_2xx for r in self.results)

    @property
    def errors(self) -> int:
        return sum(r.socket_errors for r in self.results)

    def median(self, attribute: str) -> float:
        return float(statistics.median(getattr(r, attribute) for r in self.results))

    def span(self, attribute: str) -> tuple[float, float]:
        values = [getattr(r, attribute) for r in self.results]
        return min(values), max(values)

    def row(self) -> str:
        rps_lo, rps_hi = self.span("requests_per_s")
        p50_lo, p50_hi = self.span("p50_ms")
        p99_lo, p99_hi = self.span("p99_ms")
        return (
            f"| {self.name} | {self.median('requests_per_s'):,.0f} "
            f"({rps_lo:,.0f}-{rps_hi:,.0f}) | {self.median('p50_ms'):.2f} "
            f"({p50_lo:.2f}-{p50_hi:.2f}) | {self.median('p99_ms'):.2f} "
            f"({p99_lo:.2f}-{p99_hi:.2f}) | {self.non_2xx} | {self.errors} |"
        )


TABLE_HEAD = (
    "| endpoint | requests/s median (min-max) | p50 ms | p99 ms | non-2xx | socket errors |\n"
    "|---|---|---|---|---|---|"
)


@dataclass
class Bench:
    args: argparse.Namespace
    workdir: Path
    dsn: str
    codec: TokenCodec
    service: Service
    access_tokens: list[str]
    staff_token: str
    login_start: int = 0
    placement: str = "PostgreSQL not pinned"
    start_service: Callable[[], Service] | None = None

    def script(self, name: str, text: str) -> Path:
        path = self.workdir / f"{name}.lua"
        path.write_text(text)
        return path

    def profile_script(self, method: str) -> Path:
        return self.script(
            f"profile_{method}", lua_tokens(method, "/api/v1/users/profile", self.access_tokens)
        )

    def login_script(self, users: int) -> Path:
        # Each run starts where the last one stopped: every login is a different account
        # until all have been used once.
        self.login_start = (self.login_start + 5000) % users
        return self.script("login", lua_login(users, self.login_start))

    def refresh_script(self, connections: int) -> Path:
        ids = [(i % max(1, self.args.users)) + 1 for i in range(connections * 4)]
        tokens = asyncio.run(issue_sessions(self.dsn, self.codec, ids, "refresh"))
        return self.script("refresh", lua_refresh(tokens))

    def measure(self, series: Series, script: Path, seconds: float, connections: int) -> None:
        self.placement = pin_database_backends(self.dsn, 1)  # pools may have opened more
        result = run_wrk(self.service.url, script, connections, seconds)
        series.results.append(result)
        print(
            f"  {series.name}: {result.requests_per_s:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
            f"p99 {result.p99_ms:.2f} ms, non-2xx {result.non_2xx}, "
            f"socket errors {result.socket_errors}",
            flush=True,
        )


def run_default(bench: Bench) -> list[Series]:
    args = bench.args
    c = args.connections
    plans: list[tuple[Series, float]] = [
        (Series("ceiling: GET /healthz"), args.duration),
        (Series("POST /api/v1/users/profile"), args.duration),
        (Series("GET /api/v1/users/profile"), args.duration),
        (Series("login: POST /api/v1/auth/token"), args.duration),
        (Series("refresh: POST /api/v1/auth/token/refresh"), args.duration),
    ]
    health = bench.script("healthz", lua_plain("GET", "/healthz"))
    post = bench.profile_script("POST")
    get = bench.profile_script("GET")

    def scripts(index: int) -> Path:
        if index == 0:
            return health
        if index == 1:
            return post
        if index == 2:
            return get
        if index == 3:
            return bench.login_script(args.users)
        return bench.refresh_script(c)

    print(f"warm-up ({args.warmup:.0f} s per endpoint)", flush=True)
    for index in range(len(plans)):
        run_wrk(bench.service.url, scripts(index), c, args.warmup)
    for round_number in range(1, args.rounds + 1):
        print(f"round {round_number}/{args.rounds}", flush=True)
        for index, (series, seconds) in enumerate(plans):
            bench.measure(series, scripts(index), seconds, c)
    return [series for series, _ in plans]


def run_storm(bench: Bench) -> list[Series]:
    """Profile latency alone, then while 16 clients log in continuously (a second wrk)."""
    args = bench.args
    idle = Series("POST /api/v1/users/profile, idle")
    storm = Series("POST /api/v1/users/profile, during login storm")
    logins = Series("login storm: POST /api/v1/auth/token (16 connections)")
    post = bench.profile_script("POST")
    run_wrk(bench.service.url, post, args.connections, args.warmup)
    for round_number in range(1, args.rounds + 1):
        print(f"round {round_number}/{args.rounds}", flush=True)
        bench.measure(idle, post, args.duration, args.connections)
        # The login storm starts first and runs one second past the profile measurement.
        login_script = bench.login_script(args.users)
        storm_process = subprocess.Popen(
            wrk_command(bench.service.url, login_script, 16, args.duration + 2),
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(1)
        bench.measure(storm, post, args.duration, args.connections)
        out, _ = storm_process.communicate()
        drain(bench.service.url)
        logins.results.append(parse_wrk(out))
    return [idle, storm, logins]


def run_scale(bench: Bench, password_hash: str) -> list[Series]:
    """Profile and admin search with the seeded users, then with --scale-users.

    Each size gets a fresh worker, and its profile rounds run before its searches: the
    comparison is of the table's size, not of what the searches left in the worker."""
    args = bench.args
    result: list[Series] = []
    post = bench.profile_script("POST")
    for users in (args.users, args.scale_users):
        if users != args.users:
            print(f"growing to {users:,} users", flush=True)
            started = time.monotonic()
            asyncio.run(seed_users(bench.dsn, args.users + 1, users, password_hash))
            print(f"  seeded in {time.monotonic() - started:.0f} s", flush=True)
            if bench.start_service is not None:
                bench.service.stop()
                bench.service = bench.start_service()
                print(f"  a fresh worker: pid {bench.service.process.pid}", flush=True)
        profile = Series(f"POST /api/v1/users/profile, {users:,} users")
        search = Series(f"admin search GET /api/v1/users?search=, {users:,} users")
        # A staff search is rare beside profile reads: its latency alone (what the index
        # and queries cost), beside the same search from all connections at once.
        search_alone = Series(f"admin search, 1 connection, {users:,} users")
        search_script = bench.script("search", lua_admin_search(bench.staff_token, users))
        run_wrk(bench.service.url, post, args.connections, args.warmup)
        for round_number in range(1, args.rounds + 1):
            print(f"round {round_number}/{args.rounds} ({users:,} users, profile)", flush=True)
            bench.measure(profile, post, args.duration, args.connections)
        run_wrk(bench.service.url, search_script, args.connections, args.warmup)
        for round_number in range(1, args.rounds + 1):
            print(f"round {round_number}/{args.rounds} ({users:,} users, search)", flush=True)
            bench.measure(search, search_script, args.duration, args.connections)
            bench.measure(search_alone, search_script, args.duration, 1)
        result += [profile, search, search_alone]
    return result


# --------------------------------------------------------------------------- main


def versions() -> str:
    parts = [f"Python {platform.python_version()}"]
    for name in VERSIONS:
        try:
            parts.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{name} (not installed)")
    return ", ".join(parts)


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
    wrk_first = (wrk_version.splitlines() or ["wrk ?"])[0]
    return f"{os.cpu_count()} CPUs ({model}), {platform.platform()}, {wrk_first}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scenario", choices=["default", "storm", "scale"], default="default")
    parser.add_argument("--users", type=int, default=None, help="seeded users (10,000)")
    parser.add_argument("--scale-users", type=int, default=1_000_000)
    parser.add_argument("--duration", type=float, default=None, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=None, help="seconds of warm-up each")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="a few seconds' smoke (CI)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.users = args.users or (500 if quick else 10_000)
    args.duration = args.duration or (1.0 if quick else 10.0)
    args.warmup = args.warmup or (1.0 if quick else 3.0)
    args.rounds = args.rounds or (1 if quick else 3)
    if quick and args.scenario == "scale":
        args.scale_users = min(args.scale_users, 5_000)
    args.users = max(args.users, 2)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (bench/run installs it: apt-get install -y wrk)")
        return 2
    name = f"userservice_bench_{os.getpid()}_{secrets.token_hex(3)}"
    dsn = database_dsn(name)
    url = "postgresql+asyncpg://" + dsn.split("://", 1)[1]
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "ENVIRONMENT": "production",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "EMAIL_BACKEND": "off",  # production requires a choice; the benchmarks send no email
        "LOG_LEVEL": "WARNING",
        "LOGIN_LIMIT_PER_ACCOUNT": "1000000/minute",
        "LOGIN_LIMIT_PER_ACCOUNT_GLOBAL": "1000000/minute",
        "LOGIN_LIMIT_PER_ADDRESS": "1000000/minute",
        "REGISTER_LIMIT_PER_ADDRESS": "1000000/minute",
        "REDIS_URL": "",
        # One database connection per client connection: with the default pool (10 plus 10
        # overflow) 32 clients keep closing and reopening overflow connections (a TLS
        # handshake and the statements prepared again each time).
        "DB_POOL_SIZE": str(args.connections),
        "DB_MAX_OVERFLOW": "0",
    }
    env.pop("REDIS_URL")
    print(f"machine: {machine()}")
    print(f"versions: {versions()}")
    asyncio.run(create_database(name))
    print(f"PostgreSQL {asyncio.run(server_version(dsn))}, scratch database {name}")
    with tempfile.TemporaryDirectory(prefix="userservice-bench-") as tmp:
        workdir = Path(tmp)
        try:
            subprocess.run([sys.executable, "-m", "app", "migrate"], cwd=ROOT, env=env, check=True)
            password_hash = str(PASSWORD_CONTEXT.hash(PASSWORD))
            started = time.monotonic()
            asyncio.run(seed_users(dsn, 1, args.users, password_hash))
            print(f"seeded {args.users:,} users in {time.monotonic() - started:.1f} s")
            settings = Settings(
                _env_file=None,
                database_url=url,
                environment="production",
                secret_key=env["SECRET_KEY"],
                email_backend="off",
            )
            codec = TokenCodec(settings)
            token_users = [1 + i % args.users for i in range(min(ACCESS_TOKENS, args.users))]
            access_tokens = asyncio.run(issue_sessions(dsn, codec, token_users, "access"))
            staff_token = access_tokens[0]  # user 1 is staff
            with contextlib.ExitStack() as services:

                def start_service() -> Service:
                    log = workdir / f"service-{time.monotonic_ns()}.log"
                    return services.enter_context(running_service(env, free_port(), log))

                service = start_service()
                bench = Bench(args, workdir, dsn, codec, service, access_tokens, staff_token)
                bench.start_service = start_service
                print(
                    f"service pid {service.process.pid} on {service.url}; "
                    f"{args.connections} connections, {args.duration:.0f} s per measurement, "
                    f"{args.rounds} round(s)",
                    flush=True,
                )
                if args.scenario == "default":
                    series = run_default(bench)
                elif args.scenario == "storm":
                    series = run_storm(bench)
                else:
                    series = run_scale(bench, password_hash)
                rss = bench.service.rss_mib()
            print(f"placement: worker on CPU 0, wrk on CPU 1, {bench.placement}")
            return report(args, series, rss)
        finally:
            asyncio.run(drop_database(name))


def report(args: argparse.Namespace, series: list[Series], rss: float) -> int:
    print()
    print(f"scenario {args.scenario}, {args.users:,} users, {args.connections} connections")
    print(TABLE_HEAD)
    for s in series:
        print(s.row())
    by_name = {s.name: s for s in series}
    ceiling = by_name.get("ceiling: GET /healthz")
    post = by_name.get("POST /api/v1/users/profile")
    if ceiling and post:
        ratio = post.median("requests_per_s") / ceiling.median("requests_per_s")
        print(f"\nprofile ÷ ceiling (POST /users/profile ÷ /healthz, medians): {ratio:.2f}")
        # The two are measured back to back in each round: their ratio in a round is
        # steadier than either figure on a machine whose speed drifts between rounds.
        rounds = [
            p.requests_per_s / c.requests_per_s
            for p, c in zip(post.results, ceiling.results, strict=True)
        ]
        print(
            f"profile ÷ ceiling per round: median {statistics.median(rounds):.2f} "
            f"({min(rounds):.2f}-{max(rounds):.2f}; {', '.join(f'{r:.2f}' for r in rounds)})"
        )
    if args.scenario == "storm":
        idle, storm = series[0], series[1]
        print(
            f"\nprofile p99 idle {idle.median('p99_ms'):.2f} ms, during the login storm "
            f"{storm.median('p99_ms'):.2f} ms: "
            f"{storm.median('p99_ms') / idle.median('p99_ms'):.2f} x idle"
        )
    if args.scenario == "scale":
        small, large = series[0], series[3]
        print(
            f"\nprofile p99 {small.median('p99_ms'):.2f} ms → {large.median('p99_ms'):.2f} ms "
            f"({(large.median('p99_ms') / small.median('p99_ms') - 1) * 100:+.0f} %); "
            f"admin search p99 {series[1].median('p99_ms'):.2f} ms → "
            f"{series[4].median('p99_ms'):.2f} ms ({args.connections} connections), "
            f"{series[2].median('p99_ms'):.2f} ms → {series[5].median('p99_ms'):.2f} ms "
            "(1 connection)"
        )
    print(f"worker resident memory after the run (VmRSS): {rss:.1f} MiB")
    bad = sum(s.non_2xx + s.errors for s in series)
    empty = [s.name for s in series if any(r.requests == 0 for r in s.results)]
    if bad or empty:
        print(f"\nINVALID RUN: {bad} non-2xx answers or socket errors")
        for name in empty:
            print(f"  no answer at all within a measurement: {name}")
        return 1
    print("\nvalid run: no non-2xx answers, no socket errors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
