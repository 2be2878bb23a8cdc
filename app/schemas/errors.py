"""Error bodies, named so generated clients get real types for them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


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
    code: str = Field(examples=["validation_error"])
