"""HTTP benchmark of the service: one uvicorn worker on PostgreSQL, wrk as the load.

Run through ``bench/run`` (which makes the venv and installs wrk when missing), or as
``python -m bench`` from the repository's root:

    bench/run [--users 10000] [--scenario default|storm|scale] [--quick]

Creates a scratch PostgreSQL database on the server at BENCH_POSTGRES_URL (default
postgresql://postgres@127.0.0.1:5432/postgres), migrates it, seeds users with one
precomputed argon2 hash, starts ``python -m app serve`` pinned to CPU 0 (taskset) and runs
wrk pinned to CPU 1, through the scenario's declarations (bench/scenarios.py). Every figure
is printed; nothing about speed is asserted. The exit status is non-zero when any answer
was not 2xx or wrk saw socket errors (``--quick`` is the CI smoke).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.metadata
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from app.core.config import Settings
from app.core.security import PASSWORD_CONTEXT, TokenCodec
from bench import bare, database
from bench.lua import PASSWORD
from bench.report import report
from bench.runner import Runner
from bench.scenarios import BARE, FULL, QUICK, SCENARIOS, SERVICE, Knobs, Scenario, resolve
from bench.server import Server, server_env
from bench.wrk import WRK_CPU, Wrk

ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SERVICE_CPU = 0
ACCESS_TOKENS = 1000  # distinct users whose access tokens the profile requests cycle through
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


def parse_args(argv: Sequence[str] | None) -> tuple[Scenario, Knobs]:
    """The scenario, and the knobs: ``QUICK``'s with ``--quick``, else ``FULL``'s, each
    overridden by the options given."""
    parser = argparse.ArgumentParser(prog="bench/run", description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--scenario",
        choices=sorted(SCENARIOS),
        default="default",
        help="; ".join(f"{name}: {s.summary}" for name, s in sorted(SCENARIOS.items())),
    )

    def knob(name: str, kind: type[int | float], text: str) -> None:
        full, quick = getattr(FULL, name), getattr(QUICK, name)
        with_quick = f"; {quick:,} with --quick" if quick != full else ""
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=kind,
            default=None,
            help=f"{text} ({full:,}{with_quick})",
        )

    knob("users", int, "seeded users")
    knob("scale_users", int, "the scale scenario's second size")
    knob("duration", float, "seconds per measurement")
    knob("warmup", float, "seconds of warm-up per request")
    knob("rounds", int, "rounds of measurements")
    knob("connections", int, "wrk's connections")
    parser.add_argument("--quick", action="store_true", help="a few seconds' smoke (CI)")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    given = {
        name: value
        for name in (knob.name for knob in dataclasses.fields(Knobs))
        if (value := getattr(args, name))
    }
    knobs = dataclasses.replace(preset, **given)
    # User 1 is staff and the login runs cycle through the others.
    knobs = dataclasses.replace(knobs, users=max(knobs.users, 2))
    return SCENARIOS[args.scenario], knobs


def start_service(env: dict[str, str], workdir: Path) -> Server:
    return Server.start(env, workdir, cpu=SERVICE_CPU)


@dataclass
class LiveBench:
    """The benchmark's running parts, as the runner's loop sees them (``runner.Bench``)."""

    dsn: str
    codec: TokenCodec
    env: dict[str, str]
    workdir: Path
    password_hash: str
    users: int
    service: Server
    bare: Server | None = None
    placement: str = "PostgreSQL not pinned"

    def url(self, target: str) -> str:
        if target == SERVICE:
            return self.service.url
        if target == BARE and self.bare is not None:
            return self.bare.url
        raise ValueError(f"no server named {target!r} in this benchmark")

    def grow(self, users: int) -> None:
        print(f"growing to {users:,} users", flush=True)
        started = time.monotonic()
        asyncio.run(database.seed_users(self.dsn, self.users + 1, users, self.password_hash))
        asyncio.run(database.seed_events(self.dsn, self.users + 1, users, users))
        self.users = users
        print(f"  seeded in {time.monotonic() - started:.0f} s", flush=True)
        # A fresh worker: the comparison is of the table's size, not of what the earlier
        # measurements left in the worker.
        self.service.stop()
        self.service = start_service(self.env, self.workdir)
        print(f"  a fresh worker: pid {self.service.process.pid}", flush=True)

    def refresh_tokens(self, user_ids: Sequence[int]) -> list[str]:
        return asyncio.run(database.issue_auth_sessions(self.dsn, self.codec, user_ids, "refresh"))

    def fresh_accounts(self, count: int) -> list[str]:
        first, last = asyncio.run(database.seed_fresh_users(self.dsn, count, self.password_hash))
        ids = range(first, last + 1)
        return asyncio.run(database.issue_auth_sessions(self.dsn, self.codec, ids, "access"))

    def before_measurement(self) -> None:
        # Work left by the last load (password hashes run at a lower priority than requests,
        # so /healthz answers fast before they are done) is not charged to this one.
        self.service.wait_idle()
        # The pools may have opened more connections since the last measurement.
        self.placement = database.pin_backends(self.dsn, WRK_CPU)


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


def service_env(url: str, connections: int) -> dict[str, str]:
    env = server_env(
        url,
        secrets.token_urlsafe(48),
        ENVIRONMENT="production",
        # As deployed: the default level, one JSON line per request (written to a file,
        # bench/server.py's server-PORT.log, as a container's standard output is).
        LOG_LEVEL="INFO",
        EMAIL_BACKEND="off",  # production requires a choice; the benchmarks send no email
        LOGIN_LIMIT_PER_ACCOUNT="1000000/minute",
        LOGIN_LIMIT_PER_ACCOUNT_GLOBAL="1000000/minute",
        LOGIN_LIMIT_PER_ADDRESS="1000000/minute",
        REGISTER_LIMIT_PER_ADDRESS="1000000/minute",
        # One database connection per client connection: with the default pool (10 plus 10
        # overflow) 32 clients keep closing and reopening overflow connections (a TLS
        # handshake and the statements prepared again each time).
        DB_POOL_SIZE=str(connections),
        DB_MAX_OVERFLOW="0",
    )
    env.pop("REDIS_URL", None)  # the throttle's store in memory: one worker
    return env


def main(argv: Sequence[str] | None = None) -> int:
    scenario, knobs = parse_args(argv)
    plan = resolve(scenario, knobs)
    if shutil.which("wrk") is None:
        print("wrk is not installed (bench/run installs it: apt-get install -y wrk)")
        return 2
    print(f"machine: {machine()}")
    print(f"versions: {versions()}")
    with (
        database.scratch_database(ADMIN_URL) as name,
        tempfile.TemporaryDirectory(prefix="userservice-bench-") as tmp,
    ):
        workdir = Path(tmp)
        dsn = database.database_url(ADMIN_URL, name)
        url = database.database_url(ADMIN_URL, name, "postgresql+asyncpg")
        print(f"PostgreSQL {asyncio.run(database.server_version(dsn))}, scratch database {name}")
        env = service_env(url, knobs.connections)
        subprocess.run([sys.executable, "-m", "app", "migrate"], cwd=workdir, env=env, check=True)
        password_hash = str(PASSWORD_CONTEXT.hash(PASSWORD))
        started = time.monotonic()
        asyncio.run(database.seed_users(dsn, 1, knobs.users, password_hash))
        asyncio.run(database.seed_events(dsn, 1, knobs.users, knobs.users))
        print(f"seeded {knobs.users:,} users in {time.monotonic() - started:.1f} s")
        settings = Settings(
            _env_file=None,
            database_url=url,
            environment="production",
            secret_key=env["SECRET_KEY"],
            email_backend="off",
        )
        codec = TokenCodec(settings)
        token_users = [1 + i % knobs.users for i in range(min(ACCESS_TOKENS, knobs.users))]
        access_tokens = asyncio.run(database.issue_auth_sessions(dsn, codec, token_users, "access"))
        service = start_service(env, workdir)
        bench = LiveBench(dsn, codec, env, workdir, password_hash, knobs.users, service)
        try:
            print(
                f"service pid {service.process.pid} on {service.url}; "
                f"{knobs.connections} connections, {knobs.duration:.0f} s per measurement, "
                f"{knobs.rounds} round(s)",
                flush=True,
            )
            print(
                f"service logging as deployed: LOG_LEVEL={env['LOG_LEVEL']}, one JSON line per "
                f"request, standard output written to the file {service.log}",
                flush=True,
            )
            if any(m.target == BARE for stage in plan.stages for m in stage.measurements):
                bench.bare = Server.start(
                    server_env("", ""), workdir, cpu=SERVICE_CPU, command=bare.command
                )
                print(
                    f"bare FastAPI app (bench/bare.py) pid {bench.bare.process.pid} on "
                    f"{bench.bare.url}, pinned to CPU {SERVICE_CPU} too",
                    flush=True,
                )
            runner = Runner(
                Wrk(),
                bench,
                workdir,
                access_tokens,
                staff_token=access_tokens[0],  # user 1 is staff
                users=knobs.users,
            )
            results = runner.run(plan)
            rss = bench.service.rss_mib()
            lines = sum(1 for _ in bench.service.log.open("rb"))
            print(f"service log: {lines:,} lines in {bench.service.log}", flush=True)
        finally:
            bench.service.stop()
            if bench.bare is not None:
                bench.bare.stop()
        print(f"placement: worker on CPU {SERVICE_CPU}, wrk on CPU {WRK_CPU}, {bench.placement}")
        return report(plan, results, rss)
