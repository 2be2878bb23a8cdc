"""Uploaded media (avatars), served from the storage backend."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.core.errors import MediaNotFound
from app.core.images import CONTENT_TYPES
from app.dependencies import MediaStorageDep
from app.routers import operation_id
from app.routers.responses import error_responses
from app.schemas.user import MEDIA_URL

router = APIRouter(
    prefix=MEDIA_URL.rstrip("/"), tags=["media"], generate_unique_id_function=operation_id
)

# Names are random and never reused, so a file's content never changes; an hour keeps a
# deleted avatar from lingering long in caches.
CACHE_CONTROL = "public, max-age=3600"
MEDIA_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cache-Control": CACHE_CONTROL,
}


@router.get(
    "/{name:path}",
    response_class=Response,
    responses={
        200: {
            "content": {
                content_type: {"schema": {"type": "string", "format": "binary"}}
                for content_type in CONTENT_TYPES.values()
            },
            "description": "The image, with its type and `X-Content-Type-Options: nosniff`.",
        },
        **error_responses(MediaNotFound, descriptions={404: "No such file."}),
    },
    summary="Get an uploaded image",
)
async def get_media(name: str, storage: MediaStorageDep) -> Response:
    # Only image files are served, with a type chosen from the name the server gave them.
    content_type = CONTENT_TYPES.get(name.rpartition(".")[2].lower())
    data = await storage.read(name) if content_type else None
    if data is None:
        raise MediaNotFound()
    return Response(content=data, media_type=content_type, headers=MEDIA_HEADERS)
