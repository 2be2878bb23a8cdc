from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from app.core.errors import UnsupportedMediaType
from app.dependencies import PasswordHasherDep, SessionDep, TokenCodecDep
from app.routers.responses import error_responses
from app.schemas.auth import LoginForm, LoginRequest, RegisterRequest, Token
from app.schemas.user import UserRead
from app.services import auth as auth_service

router = APIRouter(prefix="/auth", tags=["auth"])

_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=UserRead,
    responses=error_responses(409, 413, 422),
    summary="Register a new user",
)
async def register(
    data: RegisterRequest, session: SessionDep, hasher: PasswordHasherDep
) -> UserRead:
    user = await auth_service.register(session, hasher, data)
    return UserRead.model_validate(user)


async def read_login_credentials(request: Request) -> LoginRequest:
    """JSON for API clients, the OAuth2 password form for /docs' Authorize dialog."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if media_type == "application/json" or media_type.endswith("+json"):
            return LoginRequest.model_validate_json(await request.body())
        if media_type in _FORM_TYPES:
            form = await request.form()
            fields = {key: value for key, value in form.items() if isinstance(value, str)}
            return LoginForm.model_validate(fields)
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        raise RequestValidationError(errors) from None
    raise UnsupportedMediaType()


LOGIN_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/LoginRequest"}},
            "application/x-www-form-urlencoded": {
                "schema": {"$ref": "#/components/schemas/LoginForm"}
            },
        },
    }
}


@router.post(
    "/token",
    response_model=Token,
    responses=error_responses(401, 413, 415, 422),
    summary="Log in and get an access token",
    description="`username` may be the username or the email address. Accepts JSON or the "
    "OAuth2 password form. Unknown user, wrong password and inactive user get the same 401.",
    openapi_extra=LOGIN_REQUEST_BODY,
)
async def login(
    credentials: Annotated[LoginRequest, Depends(read_login_credentials)],
    session: SessionDep,
    hasher: PasswordHasherDep,
    codec: TokenCodecDep,
    response: Response,
) -> Token:
    user = await auth_service.authenticate(
        session, hasher, credentials.username, credentials.password
    )
    issued = codec.issue_access_token(user.id)
    response.headers["Cache-Control"] = "no-store"
    return Token(access_token=issued.token, expires_in=issued.expires_in)
