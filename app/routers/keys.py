from __future__ import annotations

from fastapi import APIRouter

from app.core.errors import NoPublicKeys
from app.dependencies import TokenCodecDep
from app.routers import operation_id
from app.routers.responses import error_responses
from app.schemas.auth import JWKS

router = APIRouter(tags=["keys"], generate_unique_id_function=operation_id)


@router.get(
    "/.well-known/jwks.json",
    response_model=JWKS,
    responses=error_responses(NoPublicKeys),
    summary="Public keys that verify our tokens (RS256/ES256 only)",
)
async def jwks(codec: TokenCodecDep) -> JWKS:
    if not codec.public_jwks:
        raise NoPublicKeys()
    return JWKS(keys=codec.public_jwks)
