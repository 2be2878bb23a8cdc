"""``python -m app`` with a Python that lacks the service's packages says how to run it,
without a traceback (issue 17 item 7). ``-S`` leaves site-packages out: the standard library
only, as with the system's Python; from the repository, where ``alembic`` is the migrations
folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import app

REPOSITORY = Path(app.__file__).resolve().parent.parent


@pytest.mark.parametrize("args", [["--help"], ["serve"], ["migrate"]])
def test_without_the_packages_it_says_how_to_run_it(args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-S", "-m", "app", *args],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "lacks the service's packages (missing: alembic, fastapi" in result.stderr
    assert "repository's alembic/ folder" in result.stderr
    assert "make run" in result.stderr
    assert ".venv/bin/python -m app --help" in result.stderr
    assert result.stdout == ""


def test_with_the_packages_it_runs_the_command_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app", "--help"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "serve" in result.stdout
