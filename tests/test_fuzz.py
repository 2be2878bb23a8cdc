"""Schemathesis against our own OpenAPI schema, over a real server, on both databases.

No 5xx on any operation, and every response (status code, content type, headers, body)
matches what the schema documents; authenticated operations get a valid token as well.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from schemathesis import checks
from schemathesis.core.result import Ok
from schemathesis.openapi import from_url

from tests.conftest import PASSWORD, run_server

# Real servers, processes or fuzzing: `make test-fast` leaves these out.
pytestmark = pytest.mark.slow

MAX_EXAMPLES = 25
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


@pytest.fixture
def fuzz_server(database_url: str, tmp_path: Path) -> Iterator[str]:
    with run_server(database_url, tmp_path, REGISTER_LIMIT_PER_ADDRESS="10000/hour") as url:
        yield url


@pytest.fixture
def access_token(fuzz_server: str) -> str:
    name = f"fuzz{uuid.uuid4().hex[:8]}"
    httpx.post(
        f"{fuzz_server}/api/v1/auth/register",
        json={"username": name, "email": f"{name}@example.com", "password": PASSWORD},
    ).raise_for_status()
    response = httpx.post(
        f"{fuzz_server}/api/v1/auth/token", json={"username": name, "password": PASSWORD}
    )
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


def test_api_conforms_to_its_schema(fuzz_server: str, access_token: str) -> None:
    api = from_url(f"{fuzz_server}/openapi.json")
    results = list(api.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results)  # the schema itself is valid
    assert len(operations) >= 8
    signed_in = {"Authorization": f"Bearer {access_token}"}
    calls: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,  # the same examples every run: CI must not flake
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: Any) -> None:
            calls.append(case.operation.label)
            case.call_and_validate(checks=CHECKS)  # as an anonymous client
            case.call_and_validate(checks=CHECKS, headers=signed_in)  # and signed in

        fuzz()
    assert len(set(calls)) == len(operations)  # every operation was exercised
    assert len(calls) >= 5 * len(operations)
