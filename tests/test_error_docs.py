"""The errors in two layers, and each route's error codes documented from its error kinds.

- `app.core.errors` (the domain errors) imports no framework;
- every code the OpenAPI schema lists is an error kind's code, at that kind's status;
- every error kind the service raises is documented on some route (or named as coming
  before any route, `NOT_ROUTE_FACING`);
- every route declares the errors of the dependencies it uses (the shared tuples of
  `app.routers.responses`), so a new route cannot forget them.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

import app
from app import dependencies
from app.core import errors as domain_errors
from app.core.config import Settings
from app.core.errors import AppError, UnsupportedMediaType
from app.core.http_errors import NOT_ROUTE_FACING
from app.main import create_app
from app.routers import auth as auth_router
from app.routers.responses import (
    BODY_ERRORS,
    DATABASE_ERRORS,
    SIGNED_IN_ERRORS,
    STAFF_ERRORS,
    THROTTLE_ERRORS,
    error_responses,
)
from app.schemas.errors import ValidationErrorResponse
from tests.conftest import TEST_SECRET_KEY

FRAMEWORKS = ("fastapi", "starlette", "sqlalchemy", "asyncpg", "aiosqlite", "pydantic")
# Where every error kind is defined: one catalogue of the codes the API can answer.
ERROR_MODULES = ("app.core.errors", "app.core.http_errors")


@pytest.fixture(scope="module")
def application() -> FastAPI:
    return create_app(Settings(_env_file=None, secret_key=TEST_SECRET_KEY))


@pytest.fixture(scope="module")
def schema(application: FastAPI) -> dict[str, Any]:
    return application.openapi()


def all_kinds() -> list[type[AppError]]:
    """Every `AppError` kind, with every module of the app imported first."""
    for module in pkgutil.walk_packages(app.__path__, "app."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)

    def subclasses(kind: type[AppError]) -> Iterator[type[AppError]]:
        for subclass in kind.__subclasses__():
            if subclass.__module__.startswith("app."):
                yield subclass
                yield from subclasses(subclass)

    return [AppError, *subclasses(AppError)]


def documented_codes(schema: dict[str, Any]) -> Iterator[tuple[str, str, int, str]]:
    """(path, method, status, code) for every code an operation documents."""
    components = schema["components"]["schemas"]
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                body = response.get("content", {}).get("application/json", {}).get("schema")
                if not status.startswith(("4", "5")) or "$ref" not in body:
                    continue
                error = components[body["$ref"].rsplit("/", 1)[1]]
                # (FastAPI's own 422, HTTPValidationError, on /media: no code documented.)
                for code in error["properties"].get("code", {}).get("enum", ()):
                    yield path, method, int(status), code


def test_domain_errors_import_no_framework() -> None:
    """Only the standard library, directly; and nothing of a framework, even indirectly."""
    source = Path(domain_errors.__file__).read_text()
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            imported.add((node.module or "").split(".")[0])
    assert imported <= sys.stdlib_module_names, imported - sys.stdlib_module_names

    probe = (
        f"import sys, app.core.errors; print(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]"


def test_error_kinds_live_in_the_two_error_modules() -> None:
    for kind in all_kinds():
        assert kind.__module__ in ERROR_MODULES, kind


# Codes with more than one status, on purpose: `invalid_token` is a bad bearer token (401,
# `InvalidToken`) and a bad token from an emailed link, sent in a body (400,
# `InvalidResetToken`), as issue 12's contract names both. No route answers both.
CODES_OF_TWO_STATUSES = {"invalid_token": {400, 401}}


def test_a_code_means_one_status() -> None:
    statuses: dict[str, set[int]] = {}
    for kind in all_kinds():
        statuses.setdefault(kind.code, set()).add(kind.status_code)
    shared = {code: found for code, found in statuses.items() if len(found) > 1}
    assert shared == CODES_OF_TWO_STATUSES


def test_a_code_means_one_status_on_each_route(schema: dict[str, Any]) -> None:
    statuses: dict[tuple[str, str, str], set[int]] = {}
    for path, method, status, code in documented_codes(schema):
        statuses.setdefault((path, method, code), set()).add(status)
    assert {key: found for key, found in statuses.items() if len(found) > 1} == {}


def test_every_documented_code_is_an_error_kind_at_its_status(schema: dict[str, Any]) -> None:
    kinds = {(kind.code, kind.status_code) for kind in all_kinds()}
    documented = list(documented_codes(schema))
    assert len(documented) > 50
    for path, method, status, code in documented:
        assert (code, status) in kinds, (path, method, status, code)


def test_every_error_kind_is_documented_on_some_route(schema: dict[str, Any]) -> None:
    documented = {code for *_, code in documented_codes(schema)}
    for kind in all_kinds():
        if kind not in NOT_ROUTE_FACING:
            assert kind.code in documented, kind


def test_each_status_documents_exactly_the_declared_codes() -> None:
    responses = error_responses(SIGNED_IN_ERRORS, BODY_ERRORS, UnsupportedMediaType)
    codes = {
        status: set(response["model"].model_json_schema()["properties"]["code"]["enum"])
        for status, response in responses.items()
    }
    assert codes == {
        400: {"bad_request"},
        401: {
            "not_authenticated",
            "invalid_token",
            "token_expired",
            "session_revoked",
            "inactive_user",
        },
        404: {"user_not_found"},
        413: {"request_too_large"},
        415: {"unsupported_media_type"},
        422: {"validation_error"},
        500: {"internal_error"},
        503: {"service_unavailable"},
    }
    assert responses[422]["model"] is ValidationErrorResponse
    # One named model per set of codes, shared by the routes that have it.
    again = error_responses(SIGNED_IN_ERRORS)
    assert again[401]["model"] is responses[401]["model"]
    assert responses[401]["model"].__name__ == (
        "InactiveUserOrInvalidTokenOrNotAuthenticatedOrSessionRevokedOrTokenExpiredError"
    )


def test_descriptions_of_undeclared_statuses_are_refused() -> None:
    with pytest.raises(ValueError, match="409"):
        error_responses(SIGNED_IN_ERRORS, descriptions={409: "Taken."})


def _dependency(alias: Any) -> Callable[..., Any]:
    """The function behind an ``Annotated[..., Depends(f)]`` alias of app.dependencies."""
    call: Callable[..., Any] = get_args(alias)[1].dependency
    return call


# What each shared dependency can answer. Keyed by the routers' aliases, not by function
# names, so the table follows the dependencies when they are reorganised.
DEPENDENCY_ERRORS: dict[Callable[..., Any], tuple[type[AppError], ...]] = {
    _dependency(dependencies.SessionDep): DATABASE_ERRORS,
    _dependency(dependencies.ReadSessionDep): DATABASE_ERRORS,
    _dependency(dependencies.CurrentUser): SIGNED_IN_ERRORS,
    _dependency(dependencies.OwnTokenUser): SIGNED_IN_ERRORS,
    _dependency(dependencies.ReadCurrentUser): SIGNED_IN_ERRORS,
    _dependency(dependencies.StaffUser): STAFF_ERRORS,
    _dependency(dependencies.ReadStaffUser): STAFF_ERRORS,
    _dependency(dependencies.SuperUser): STAFF_ERRORS,
    _dependency(dependencies.ThrottleDep): THROTTLE_ERRORS,
    auth_router.read_login_credentials: BODY_ERRORS,
}


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


def test_routes_declare_the_errors_of_their_dependencies(
    application: FastAPI, schema: dict[str, Any]
) -> None:
    documented: dict[tuple[str, str], set[tuple[int, str]]] = {}
    for path, method, status, code in documented_codes(schema):
        documented.setdefault((path, method), set()).add((status, code))
    checked = 0
    for context in iter_route_contexts(application.routes):
        route = context.original_route
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        required: set[type[AppError]] = set()
        for call in _calls(route.dependant):
            required.update(DEPENDENCY_ERRORS.get(call, ()))
        if route.body_field is not None:
            required.update(BODY_ERRORS)
        for method in route.methods or ():
            have = documented.get((route.path, method.lower()), set())
            missing = {(kind.status_code, kind.code) for kind in required} - have
            assert not missing, (route.path, method, sorted(missing))
            checked += 1
    assert checked >= 19
