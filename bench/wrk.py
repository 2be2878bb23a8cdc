"""wrk: the command line, one measurement, its output read into a ``WrkResult``."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.server import drain, pinned

WRK_CPU = 1  # the service runs on CPU 0 (bench/cli.py)


@dataclass(frozen=True)
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    requests: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def milliseconds(value: str) -> float:
    """A wrk latency (``812.00us``, ``13.12ms``, ``1.33s``, ``1.00m``) in milliseconds."""
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", value)
    if match is None:
        raise ValueError(f"unexpected wrk latency {value!r}")
    return float(match[1]) * _UNITS[match[2]]


def parse_wrk(output: str) -> WrkResult:
    """The figures of ``wrk --latency`` output; ``RuntimeError`` when one is missing."""

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
        p50_ms=milliseconds(p50[1]),
        p99_ms=milliseconds(p99[1]),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
        requests=int(total[1]),
    )


def wrk_command(url: str, script: Path, connections: int, seconds: float) -> list[str]:
    """One wrk thread on ``WRK_CPU``, whole seconds (at least one), a 10 s timeout."""
    return pinned(
        WRK_CPU,
        [
            *("wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s"),
            *("--timeout", "10s", "--latency", "-s", str(script), url),
        ],
    )


class Wrk:
    """The load generator the runner drives (``bench/runner.py``'s ``Driver``): after each
    load, waits for the service to drain what is still queued."""

    def measure(self, url: str, script: Path, connections: int, seconds: float) -> WrkResult:
        completed = subprocess.run(
            wrk_command(url, script, connections, seconds),
            capture_output=True,
            text=True,
            check=True,
        )
        drain(url)
        return parse_wrk(completed.stdout)

    def start(
        self, url: str, script: Path, connections: int, seconds: float
    ) -> Callable[[], WrkResult]:
        """A load in the background; the function returned waits for its result."""
        process = subprocess.Popen(
            wrk_command(url, script, connections, seconds), stdout=subprocess.PIPE, text=True
        )

        def result() -> WrkResult:
            out, _ = process.communicate()
            if process.returncode != 0:
                raise subprocess.CalledProcessError(process.returncode, process.args, out)
            drain(url)
            return parse_wrk(out)

        return result
