"""Field types shared by request schemas; limits mirror the columns in app/models/user.py."""

from __future__ import annotations

import unicodedata
from typing import Annotated

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BeforeValidator, Field, StringConstraints

from app.core import identifiers
from app.models.user import EMAIL_MAX, NAME_MAX, PHONE_MAX, USERNAME_MAX

USERNAME_PATTERN = r"^[\w.@+-]+$"


# Control characters (NUL included: PostgreSQL refuses it), surrogates, invisible format
# characters (bidi overrides such as U+202E, zero-width spaces, BOM) and line/paragraph
# separators: none belongs in a name, and some would let one name pass for another.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Cf", "Zl", "Zp"})


def reject_control_characters(value: str) -> str:
    if any(unicodedata.category(char) in _REFUSED_CATEGORIES for char in value):
        raise ValueError("must not contain control or invisible formatting characters")
    return value


def normalize_username(value: object) -> object:
    # Django normalises usernames with NFKC, so look-alike compatibility forms collide.
    return identifiers.normalize_username(value) if isinstance(value, str) else value


def normalize_email(value: str) -> str:
    """Validate, then trim, lower-case and NFC: stored and compared this way, so
    uniqueness ignores case and Unicode spelling."""
    value = value.strip()
    try:
        validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"value is not a valid email address: {exc}") from None
    normal = identifiers.normalize_email(value)
    if len(normal) > EMAIL_MAX:  # lower-casing can lengthen it ("İ" is two characters after)
        raise ValueError(f"must have at most {EMAIL_MAX} characters once lower-cased")
    return normal


Username = Annotated[
    str,
    BeforeValidator(normalize_username),
    StringConstraints(min_length=1, max_length=USERNAME_MAX, pattern=USERNAME_PATTERN),
    # The pattern's \w (Unicode word characters) admits the joiners ZWJ and ZWNJ.
    AfterValidator(reject_control_characters),
    Field(
        description="Letters, digits and @ . + - _ only (Django's rule).",
        examples=["alice"],
    ),
]
Email = Annotated[
    str,
    AfterValidator(reject_control_characters),
    StringConstraints(strip_whitespace=True, min_length=3, max_length=EMAIL_MAX),
    AfterValidator(normalize_email),
    Field(
        json_schema_extra={"format": "email"},
        description="Stored trimmed and lower-cased; unique regardless of case.",
        examples=["alice@example.com"],
    ),
]
PersonName = Annotated[
    str,
    AfterValidator(reject_control_characters),
    StringConstraints(strip_whitespace=True, max_length=NAME_MAX),
]
PhoneNumber = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=PHONE_MAX, pattern=r"^[0-9]*$"),
    Field(description="Digits only, at most 10; empty when unknown.", examples=["5551234567"]),
]
