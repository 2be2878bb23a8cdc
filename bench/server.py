"""A real ``python -m app serve`` process on a free port: started, waited for, stopped.

Shared by the benchmark and the tests (``tests/conftest.py``'s ``run_server``), so both
start the service the same way. Standard library only: the tests import it without the
benchmark's dependencies, and the readiness probe ignores proxy settings (``http_proxy`` in
the environment must not route 127.0.0.1 elsewhere).
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_HTTP_ERRORS = (OSError, http.client.HTTPException)


class ServerError(RuntimeError):
    """The server exited, or did not answer ``/healthz`` in time; the message has its log."""


def free_port() -> int:
    """A TCP port nothing listens on at the moment (the kernel's choice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(database_url: str, secret_key: str, **extra: str) -> dict[str, str]:
    """This process's environment for a server: without the ``USERSERVICE_*`` switches
    (the tests' and the CLI's own), with the database, the key, ``LOG_LEVEL=WARNING`` and
    ``extra`` on top."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("USERSERVICE_")}
    env.update(DATABASE_URL=database_url, SECRET_KEY=secret_key, LOG_LEVEL="WARNING")
    env.update(extra)
    return env


def pinned(cpu: int | None, command: Sequence[str]) -> list[str]:
    """``command`` run on CPU ``cpu`` only (``taskset``), when there is such a CPU and
    taskset is installed; else ``command`` as it is."""
    if cpu is not None and shutil.which("taskset") and (os.cpu_count() or 1) > cpu:
        return ["taskset", "-c", str(cpu), *command]
    return list(command)


def get(url: str, timeout: float) -> int:
    """The status of ``GET url`` (2xx; an error status raises), bypassing any proxy."""
    with _DIRECT.open(url, timeout=timeout) as response:
        status: int = response.status
        return status


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    @classmethod
    def start(
        cls,
        env: Mapping[str, str],
        workdir: Path,
        *,
        workers: int | str = 1,
        cpu: int | None = None,
        timeout: float = 60,
        command: Callable[[int], list[str]] | None = None,
    ) -> Server:
        """``python -m app serve --workers N`` (migrations, then uvicorn) in ``workdir``, on a
        free port, its output (the JSON log lines included) in ``workdir/server-PORT.log``;
        returns once ``/healthz`` answers 200. ``command`` (the port to a command line)
        starts another server instead. ``cpu`` pins the process (and its workers) to one
        CPU. Raises ``ServerError`` when the process exits first or ``timeout`` seconds
        pass."""
        port = free_port()
        log = workdir / f"server-{port}.log"
        argv = (
            command(port)
            if command is not None
            else [
                *(sys.executable, "-m", "app", "serve", "--host", "127.0.0.1"),
                *("--port", str(port), "--workers", str(workers)),
            ]
        )
        with log.open("wb") as out:
            process = subprocess.Popen(
                pinned(cpu, argv),
                cwd=workdir,
                env=dict(env),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        server = cls(process, f"http://127.0.0.1:{port}", log)
        try:
            server._wait_ready(timeout)
        except BaseException:
            server.stop()
            raise
        return server

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if get(f"{self.url}/healthz", timeout=1) == 200:
                    return
            except _HTTP_ERRORS:
                pass
            if self.process.poll() is not None:
                raise ServerError(
                    f"the server exited with status {self.process.returncode}:\n"
                    f"{self.log.read_text(errors='replace')}"
                )
            if time.monotonic() > deadline:
                raise ServerError(
                    f"the server did not answer /healthz within {timeout:.0f} s:\n"
                    f"{self.log.read_text(errors='replace')}"
                )
            time.sleep(0.1)

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM (uvicorn's graceful shutdown), then SIGKILL after ``timeout`` seconds."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def cpu_seconds(self) -> float:
        """CPU time used so far by the server's main process (user + system)."""
        stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def wait_idle(self, timeout: float = 120) -> None:
        """Until the process uses under 5 % of a CPU (queued password hashes finished: they
        run at a lower priority, so /healthz answers fast before they are done)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            before = self.cpu_seconds()
            time.sleep(0.5)
            if self.cpu_seconds() - before < 0.025:
                return

    def rss_mib(self) -> float:
        """The main process's resident memory (VmRSS) once it is idle, in MiB."""
        self.wait_idle()
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        return int(match[1]) / 1024 if match else float("nan")


def drain(url: str, timeout: float = 60) -> None:
    """Wait until the server at ``url`` answers ``/healthz`` fast three times in a row:
    requests still queued after a load stopped (a login's password hashing) would otherwise
    be charged to the next measurement."""
    deadline = time.monotonic() + timeout
    fast = 0
    while fast < 3 and time.monotonic() < deadline:
        started = time.monotonic()
        get(f"{url}/healthz", timeout=10)
        fast = fast + 1 if time.monotonic() - started < 0.01 else 0
        time.sleep(0.05)
