"""A real server: ``python -m app serve`` (migrations, uvicorn) driven over TCP."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.conftest import PASSWORD, run_server, server_env, user_payload

# Real servers, processes or fuzzing: `make test-fast` leaves these out.
pytestmark = pytest.mark.slow

MAX_BODY = 64 * 1024


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[str]:
    with run_server(database_url, tmp_path, MAX_BODY_BYTES=str(MAX_BODY)) as base_url:
        yield base_url


@pytest.fixture
async def http(server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server, timeout=30) as client:
        yield client


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


async def test_readme_walkthrough(http: httpx.AsyncClient) -> None:
    name = unique("walk")
    created = await http.post(
        "/api/v1/auth/register",
        json=user_payload(username=name, email=f"{name}@Example.com"),
    )
    assert created.status_code == 201
    token = await http.post(
        "/api/v1/auth/token", data={"username": f"{name}@example.com", "password": PASSWORD}
    )
    assert token.status_code == 200
    assert token.headers["cache-control"] == "no-store"
    profile = await http.post(
        "/api/v1/users/profile",
        headers={
            "Authorization": f"Bearer {token.json()['access_token']}",
            "Content-Type": "application/json",
        },
    )
    assert profile.status_code == 200
    assert profile.json()["username"] == name
    assert profile.json()["email"] == f"{name}@example.com"
    # an avatar larger than this server's MAX_BODY_BYTES: the upload route has its own limit
    buffer = io.BytesIO()
    Image.frombytes("RGB", (200, 200), os.urandom(200 * 200 * 3)).save(buffer, "PNG")
    assert len(buffer.getvalue()) > MAX_BODY
    avatar = await http.put(
        "/api/v1/users/profile/avatar",
        headers={"Authorization": f"Bearer {token.json()['access_token']}"},
        files={"file": ("me.png", buffer.getvalue(), "image/png")},
    )
    assert avatar.status_code == 200, avatar.text
    image = await http.get(avatar.json()["avatar"])
    assert image.headers["content-type"] == "image/png"
    assert image.headers["x-content-type-options"] == "nosniff"
    docs = await http.get("/docs")
    assert docs.status_code == 200


async def test_content_length_over_the_limit_is_413(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/api/v1/auth/register",
        content=b"{" + b" " * MAX_BODY + b"}",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["code"] == "request_too_large"


async def test_chunked_body_over_the_limit_is_413(http: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(MAX_BODY // 4096 + 8):
            yield b" " * 4096

    response = await http.post(
        "/api/v1/auth/token", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


async def test_oversized_authorization_header_is_401(http: httpx.AsyncClient) -> None:
    response = await http.get(
        "/api/v1/users/profile", headers={"Authorization": "Bearer " + "a" * 9000}
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_concurrent_registrations_over_tcp(http: httpx.AsyncClient) -> None:
    email = f"{unique('race')}@example.com"
    responses = await asyncio.gather(
        *(
            http.post(
                "/api/v1/auth/register",
                json=user_payload(username=unique("race"), email=email.upper() if i % 2 else email),
            )
            for i in range(10)
        )
    )
    assert sorted(r.status_code for r in responses) == [201] + [409] * 9


def run_cli(
    database_url: str, tmp_path: Path, *args: str, stdin: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=tmp_path,
        env=server_env(database_url, **env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_createsuperuser_from_stdin_then_log_in(
    http: httpx.AsyncClient, database_url: str, tmp_path: Path
) -> None:
    name = unique("root")
    result = run_cli(
        database_url,
        tmp_path,
        "createsuperuser",
        "--username",
        name,
        "--email",
        f"{name}@example.com",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    token = await http.post("/api/v1/auth/token", json={"username": name, "password": PASSWORD})
    assert token.status_code == 200
    profile = await http.get(
        "/api/v1/users/profile", headers={"Authorization": f"Bearer {token.json()['access_token']}"}
    )
    assert profile.json()["is_superuser"] is True
    assert profile.json()["is_staff"] is True


def test_createsuperuser_from_the_environment(database_url: str, tmp_path: Path) -> None:
    name = unique("admin")
    result = run_cli(
        database_url,
        tmp_path,
        "createsuperuser",
        "--username",
        name,
        "--email",
        f"{name}@example.com",
        USERSERVICE_SUPERUSER_PASSWORD=PASSWORD,
    )
    assert result.returncode == 0, result.stderr
    again = run_cli(
        database_url,
        tmp_path,
        "createsuperuser",
        "--username",
        name,
        "--email",
        f"other{name}@example.com",
        USERSERVICE_SUPERUSER_PASSWORD=PASSWORD,
    )
    assert again.returncode == 2
    assert "already exists" in again.stderr


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (
            ["--username", "x1", "--email", "x1@example.com", "--password-stdin"],
            "123\n",
            "too short",
        ),
        (
            ["--username", "bad name", "--email", "x2@example.com", "--password-stdin"],
            PASSWORD + "\n",
            "username",
        ),
        (
            ["--email", "x3@example.com", "--password-stdin"],
            PASSWORD + "\n",
            "--username is required",
        ),
        (["--username", "x4", "--email", "x4@example.com"], "", "no password given"),
    ],
)
def test_createsuperuser_refuses_bad_input(
    database_url: str, tmp_path: Path, args: list[str], stdin: str, message: str
) -> None:
    result = run_cli(database_url, tmp_path, "createsuperuser", *args, stdin=stdin)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
