"""Error bodies, named so generated clients get real types for them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


# Any error body. Each error response documents a schema of this shape whose ``code`` is the
# enum of the codes it can have (app.routers.responses).
class ErrorResponse(BaseModel):
    detail: str = Field(examples=["User not found"])
    code: str = Field(
        description="Stable machine-readable error code.", examples=["user_not_found"]
    )


class ValidationErrorItem(BaseModel):
    type: str
    loc: list[str | int]
    msg: str
    ctx: dict[str, Any] | None = None


class ValidationErrorResponse(BaseModel):
    detail: list[ValidationErrorItem]
    # An enum of its one value, as in the other error bodies (app.routers.responses): client
    # generators read ``enum`` better than ``const``.
    code: str = Field(
        examples=["validation_error"], json_schema_extra={"enum": ["validation_error"]}
    )
