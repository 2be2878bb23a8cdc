"""The OpenAPI schema is what frontends generate clients from: it must be complete."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.core.config import Settings
from app.main import create_app
from tests.conftest import TEST_SECRET_KEY, asgi_client, running_app
from tests.test_register import PUBLIC_FIELDS


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    settings = Settings(_env_file=None, secret_key=TEST_SECRET_KEY)
    return create_app(settings).openapi()


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    ]


def test_operation_ids_are_unique_and_readable(schema: dict[str, Any]) -> None:
    ids = [operation["operationId"] for _, _, operation in operations(schema)]
    assert len(ids) == len(set(ids))
    assert {
        "register",
        "login",
        "refresh_token",
        "logout",
        "logout_all",
        "request_password_reset",
        "confirm_password_reset",
        "get_profile",
        "post_profile",
        "healthz",
        "jwks",
        "update_profile",
        "delete_account",
        "upload_avatar",
        "delete_avatar",
        "change_password",
        "list_users",
        "get_user",
        "update_user",
        "delete_user",
        "get_media",
    } <= set(ids)


def test_api_operations_document_their_errors(schema: dict[str, Any]) -> None:
    body = {"400", "413", "415", "422"}  # routes that read a body
    throttled = {"429"}  # routes that count password attempts
    expected = {
        ("/api/v1/auth/register", "post"): {"201", "409", *body, *throttled},
        ("/api/v1/auth/token", "post"): {"200", "401", "403", "415", *body, *throttled},
        ("/api/v1/auth/token/refresh", "post"): {"200", "401", *body},
        ("/api/v1/auth/logout", "post"): {"204", "401", *body},
        ("/api/v1/auth/logout-all", "post"): {"204", "401", "404"},
        ("/api/v1/auth/password-reset", "post"): {"202", *body, *throttled},
        ("/api/v1/auth/password-reset/confirm", "post"): {"204", *body, *throttled},
        ("/api/v1/auth/verify-email", "post"): {"204", *body, *throttled},
        ("/api/v1/auth/verify-email/resend", "post"): {"202", *body, *throttled},
        ("/api/v1/users/profile", "post"): {"200", "401", "404"},
        ("/api/v1/users/profile", "get"): {"200", "401", "404"},
        ("/api/v1/users/profile", "patch"): {"200", "401", "403", "404", "409", *body, *throttled},
        ("/api/v1/users/profile", "delete"): {"204", "401", "403", "404", "409", *body, *throttled},
        ("/api/v1/users/profile/email", "get"): {"200", "401", "404"},
        ("/api/v1/users/profile/avatar", "put"): {"200", "401", "404", *body},
        ("/api/v1/users/profile/avatar", "delete"): {"200", "401", "404"},
        ("/api/v1/users/profile/password", "post"): {"204", "401", "403", "404", *body, *throttled},
        ("/api/v1/users", "get"): {"200", "401", "403", "404", "422"},
        ("/api/v1/users/{user_id}", "get"): {"200", "401", "403", "404", "422"},
        ("/api/v1/users/{user_id}", "patch"): {"200", "401", "403", "404", "409", *body},
        ("/api/v1/users/{user_id}", "delete"): {"204", "401", "403", "404", "409", "422"},
        ("/api/v1/users/profile/sessions", "get"): {"200", "401", "404"},
        ("/api/v1/users/profile/sessions/{session_id}", "delete"): {"204", "401", "404", "422"},
        ("/api/v1/users/profile/events", "get"): {"200", "401", "404", "422"},
        ("/api/v1/events", "get"): {"200", "401", "403", "404", "422"},
        ("/api/v1/users/{user_id}/sessions", "get"): {"200", "401", "403", "404", "422"},
        ("/api/v1/users/{user_id}/sessions", "delete"): {"204", "401", "403", "404", "422"},
        ("/api/v1/auth/token/mfa", "post"): {"200", "401", *body, *throttled},
        ("/api/v1/users/profile/mfa", "get"): {"200", "401", "404"},
        ("/api/v1/users/profile/mfa/totp", "post"): {
            "200",
            "401",
            "403",
            "404",
            "409",
            *body,
            *throttled,
        },
        ("/api/v1/users/profile/mfa/totp/confirm", "post"): {
            "200",
            "401",
            "404",
            "409",
            *body,
            *throttled,
        },
        ("/api/v1/users/profile/mfa/recovery-codes", "post"): {
            "200",
            "401",
            "403",
            "404",
            "409",
            *body,
            *throttled,
        },
        ("/api/v1/users/profile/mfa/totp", "delete"): {
            "204",
            "401",
            "403",
            "404",
            "409",
            *body,
            *throttled,
        },
        ("/api/v1/users/{user_id}/mfa", "delete"): {"204", "401", "403", "404", "422"},
    }
    for statuses in expected.values():
        statuses.update({"500", "503"})  # every API route can meet a bug or a database outage
    for path, method, operation in operations(schema):
        if not path.startswith("/api/"):
            continue
        assert set(operation["responses"]) == expected[(path, method)], (path, method)
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")):
                # A named schema (generated clients get a type), of the error body's shape,
                # whose code is an enum (tests/test_error_docs.py checks which codes).
                ref = response["content"]["application/json"]["schema"]["$ref"]
                error = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
                # The one addition: the mfa_token of a login's 403 mfa_required.
                extra = {"mfa_token"} if (path, status) == ("/api/v1/auth/token", "403") else set()
                assert set(error["properties"]) == {"detail", "code", *extra}, (
                    path,
                    method,
                    status,
                )
                assert error["properties"]["code"]["enum"], (path, method, status)
                if status == "422":
                    assert ref.endswith("/ValidationErrorResponse")


def test_login_documents_json_and_form_bodies(schema: dict[str, Any]) -> None:
    content = schema["paths"]["/api/v1/auth/token"]["post"]["requestBody"]["content"]
    assert content["application/json"]["schema"]["$ref"] == "#/components/schemas/LoginRequest"
    form_ref = content["application/x-www-form-urlencoded"]["schema"]["$ref"]
    assert form_ref == "#/components/schemas/LoginForm"
    components = schema["components"]["schemas"]
    assert {"LoginRequest", "LoginForm", "RegisterRequest", "UserRead", "Token"} <= set(components)
    assert set(components["LoginForm"]["properties"]) >= {"username", "password", "grant_type"}


def test_profile_uses_the_bearer_scheme_with_the_token_url(schema: dict[str, Any]) -> None:
    schemes = schema["components"]["securitySchemes"]
    (scheme,) = schemes.values()
    assert scheme["flows"]["password"]["tokenUrl"] == "/api/v1/auth/token"
    # The profile's and the staff's read routes resolve the user without the scheme as a
    # sub-dependency: the document gives them the scheme all the same (app/main.py).
    for path, method in [
        ("/api/v1/users/profile", "get"),
        ("/api/v1/users/profile", "post"),
        ("/api/v1/users", "get"),
        ("/api/v1/users/profile", "patch"),  # through the scheme as a sub-dependency
    ]:
        assert schema["paths"][path][method]["security"] == [{"OAuth2PasswordBearer": []}]


def test_user_read_has_exactly_the_twelve_fields(schema: dict[str, Any]) -> None:
    fields = set(schema["components"]["schemas"]["UserRead"]["properties"])
    assert fields == PUBLIC_FIELDS


def test_register_field_limits_mirror_the_columns(schema: dict[str, Any]) -> None:
    properties = schema["components"]["schemas"]["RegisterRequest"]["properties"]
    assert properties["username"]["maxLength"] == 150
    assert properties["email"]["maxLength"] == 200
    assert properties["first_name"]["maxLength"] == 200
    assert properties["last_name"]["maxLength"] == 200
    assert properties["number_phone"]["maxLength"] == 10
    assert properties["password"]["maxLength"] == 128
    assert schema["components"]["schemas"]["RegisterRequest"]["additionalProperties"] is False


async def test_docs_and_schema_are_served(client: httpx.AsyncClient) -> None:
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
    spec = await client.get("/openapi.json")
    assert spec.status_code == 200
    assert spec.json()["info"]["title"] == "userservice"


# Everything EXPOSE_DOCS switches: the pages, Swagger UI's OAuth2 redirect, the schema and
# the pages' JavaScript and CSS.
DOCS_PATHS = (
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/openapi.json",
    "/docs-assets/swagger-ui-bundle.js",
    "/docs-assets/redoc.standalone.js",
)


@pytest.mark.parametrize("expose_docs", [True, False])
async def test_expose_docs_serves_or_hides_the_docs(settings: Settings, expose_docs: bool) -> None:
    configured = settings.model_copy(update={"expose_docs": expose_docs})
    async with running_app(configured) as app, asgi_client(app) as client:
        for path in DOCS_PATHS:
            response = await client.get(path)
            if expose_docs:
                assert response.status_code == 200, path
            else:
                assert response.status_code == 404, path
                assert response.json() == {"detail": "Not Found", "code": "not_found"}
        # The routes outside the schema are still there.
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200
        assert (await client.get("/api/v1/users/profile")).status_code == 401


def test_expose_docs_off_leaves_the_api_unchanged(schema: dict[str, Any]) -> None:
    off = Settings(_env_file=None, secret_key=TEST_SECRET_KEY, expose_docs=False)
    assert create_app(off).openapi() == schema


def test_account_and_admin_schemas_are_named_and_forbid_extra_fields(
    schema: dict[str, Any],
) -> None:
    components = schema["components"]["schemas"]
    for name in ("ProfileUpdate", "PasswordChange", "AccountDelete", "AdminUserUpdate"):
        assert components[name]["additionalProperties"] is False, name
    assert set(components["UserPage"]["properties"]) == {"items", "total", "limit", "offset"}
    assert set(components["AdminUserUpdate"]["properties"]) == {
        "username",
        "email",
        "first_name",
        "last_name",
        "number_phone",
        "is_active",
        "is_staff",
        "is_superuser",
        "email_verified",
    }
    update = components["ProfileUpdate"]["properties"]
    assert update["email"]["anyOf"][0]["maxLength"] == 200
    assert update["number_phone"]["anyOf"][0]["maxLength"] == 10
    avatar = schema["paths"]["/api/v1/users/profile/avatar"]["put"]["requestBody"]
    assert "multipart/form-data" in avatar["content"]


def test_admin_parameters_are_bounded(schema: dict[str, Any]) -> None:
    (user_id,) = schema["paths"]["/api/v1/users/{user_id}"]["get"]["parameters"]
    assert user_id["schema"]["type"] == "integer"
    assert (user_id["schema"]["minimum"], user_id["schema"]["maximum"]) == (1, 2**63 - 1)
    params = {p["name"]: p for p in schema["paths"]["/api/v1/users"]["get"]["parameters"]}
    assert set(params) == {"search", "is_active", "is_staff", "ordering", "limit", "offset"}
    assert (params["limit"]["schema"]["minimum"], params["limit"]["schema"]["maximum"]) == (1, 100)
    assert "-last_login" in params["ordering"]["schema"]["enum"]


def test_every_declared_body_has_a_schema(schema: dict[str, Any]) -> None:
    """Client generators skip, with a warning, a request or response body without one."""
    for path, method, operation in operations(schema):
        bodies = [("request", operation.get("requestBody", {}))]
        bodies += list(operation["responses"].items())
        for status, body in bodies:
            for content_type, media in body.get("content", {}).items():
                assert media.get("schema"), (path, method, status, content_type)


def test_media_images_are_binary_strings(schema: dict[str, Any]) -> None:
    content = schema["paths"]["/media/{name}"]["get"]["responses"]["200"]["content"]
    binary = {"schema": {"type": "string", "format": "binary"}}
    assert content == {"image/png": binary, "image/jpeg": binary, "image/webp": binary}


@pytest.mark.parametrize("expose_docs", [True, False])
async def test_root_links_to_docs_and_health(settings: Settings, expose_docs: bool) -> None:
    configured = settings.model_copy(update={"expose_docs": expose_docs})
    async with running_app(configured) as app, asgi_client(app) as client:
        response = await client.get("/")
        schema = app.openapi() if expose_docs else None
    assert response.status_code == 200
    expected = {"docs": "/docs", "openapi": "/openapi.json"} if expose_docs else {}
    assert response.json() == {**expected, "health": "/healthz"}
    assert schema is None or "/" not in schema["paths"]
