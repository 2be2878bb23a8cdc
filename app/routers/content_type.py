"""Content-Type rules of the API's request bodies: one route class for every API router.

A body FastAPI cannot read as the operation's media type was answered with whatever that
made of it: JSON sent as ``application/x-www-form-urlencoded`` (``curl -d``'s default) or
``text/plain`` (a browser's ``fetch`` without headers) got 422 "Input should be a valid
dictionary". `MediaTypeRoute` refuses such a body first, with 415 `unsupported_media_type`
and a detail naming the media types the operation accepts, which it takes from what the
operation documents: its request body's media type (``application/json``, also any
``application/*+json``, as FastAPI reads; ``multipart/form-data`` for a file upload), or
the content types of an ``openapi_extra`` request body (login: JSON and the OAuth2 form).

Only a request that has a body is checked (a ``Content-Length`` above 0, or a chunked
one): an empty body is left to the operation (optional bodies stay optional). Routes
without a body are never checked. `BODY_ERRORS` (`app.routers.responses`) documents the
415 on every route that reads a body.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from app.core.errors import UnsupportedMediaType

JSON = "application/json"


def media_type_of(request: Request) -> str:
    """The request's media type, lower-case, without parameters ("" when none)."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def is_json(media_type: str) -> bool:
    """``application/json`` or a structured ``application/*+json`` (as FastAPI reads)."""
    return media_type == JSON or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return "transfer-encoding" in request.headers


def accepted_media_types(route: APIRoute) -> tuple[str, ...]:
    """The media types ``route``'s operation documents for its body (none: no body)."""
    extra = (route.openapi_extra or {}).get("requestBody", {}).get("content")
    if extra:
        return tuple(extra)
    if route.body_field is None:
        return ()
    return (getattr(route.body_field.field_info, "media_type", JSON),)


def unsupported(media_type: str, accepted: tuple[str, ...]) -> UnsupportedMediaType:
    """The 415 for a body of ``media_type``, naming ``accepted``."""
    names = " or ".join(accepted)
    if not media_type:
        return UnsupportedMediaType(f"The body has no Content-Type: send it as {names}")
    hint = ""
    if JSON in accepted and media_type == "application/x-www-form-urlencoded":
        hint = " (curl -d sends that: add -H 'Content-Type: application/json')"
    return UnsupportedMediaType(
        f"Content-Type {media_type[:100]!r} is not accepted here{hint}: send the body as {names}"
    )


class MediaTypeRoute(APIRoute):
    """An API route that answers a body of a media type its operation does not accept
    with 415, before the body is read."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        accepted = accepted_media_types(self)
        if not accepted:
            return handler

        async def checked(request: Request) -> Response:
            if _has_body(request):
                media_type = media_type_of(request)
                if not (media_type in accepted or (JSON in accepted and is_json(media_type))):
                    raise unsupported(media_type, accepted)
            return await handler(request)

        return checked
