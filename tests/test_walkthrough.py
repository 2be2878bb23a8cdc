"""scripts/walkthrough, the README's walk-through, against a real server (``python -m app
serve``): every step answers as the README says, and no token is left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import app
from tests.conftest import run_server

# Real servers, processes or fuzzing: `make test-fast` leaves these out.
pytestmark = pytest.mark.slow

SCRIPT = Path(app.__file__).resolve().parent.parent / "scripts" / "walkthrough"
EXPECTED = [
    "201 POST /auth/register",
    "200 POST /auth/token",
    "200 POST /users/profile",
    "200 GET /users/profile",
    "401 GET /users/profile without a token (not_authenticated)",
    "200 PUT /users/profile/avatar",
    "200 GET /media/avatars/",
    "200 PATCH /users/profile",
    "415 PATCH /users/profile as a form (unsupported_media_type)",
    "200 POST /auth/token/refresh",
    "204 POST /auth/logout-all",
    "401 GET /users/profile after logout-all (session_revoked)",
    "202 POST /auth/password-reset",
]


def test_the_walkthrough_runs_as_documented(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}"
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    with run_server(database_url, tmp_path) as base_url:
        result = _walk(base_url, temporary)
        again = _walk(base_url, temporary)  # a second run registers another user
    assert result.returncode == 0, result.stdout + result.stderr
    assert again.returncode == 0, again.stdout + again.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("user: alice-")
    assert len(lines) == len(EXPECTED) + 1
    for line, expected in zip(lines[1:], EXPECTED, strict=True):
        assert line.startswith(expected), (line, expected)
    assert list(temporary.iterdir()) == []  # the tokens went with the temporary directory


def _walk(base_url: str, temporary: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), base_url],
        env={**os.environ, "PYTHON": sys.executable, "TMPDIR": str(temporary)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
