"""Django's default password validators, as plain functions.

The same four rules as Django's ``AUTH_PASSWORD_VALIDATORS`` defaults, with the same
thresholds, so a password one service accepts the other accepts too:
minimum length (8), not too similar to username/email/names (0.7), not common
(Django's 20,000-entry list, shipped in ``app/data``), not entirely numeric.
We add an upper bound (128) so hashing cost stays bounded.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterable
from difflib import SequenceMatcher
from functools import cache
from importlib import resources

PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 128
MAX_SIMILARITY = 0.7

Problem = tuple[str, str]  # (code, message)


@cache
def common_passwords() -> frozenset[str]:
    data = resources.files("app.data").joinpath("common-passwords.txt.gz").read_bytes()
    return frozenset(line.strip() for line in gzip.decompress(data).decode().splitlines())


def _exceeds_maximum_length_ratio(password: str, value: str) -> bool:
    """Django's shortcut: a value far shorter than the password cannot be too similar."""
    pwd_len = len(password)
    return pwd_len >= 10 * len(value) and len(value) < MAX_SIMILARITY / 2 * pwd_len


def _too_similar(password: str, attribute: str) -> bool:
    value = attribute.lower()
    for part in [*re.split(r"\W+", value), value]:
        if not part or _exceeds_maximum_length_ratio(password, part):
            continue
        if SequenceMatcher(a=password, b=part).quick_ratio() >= MAX_SIMILARITY:
            return True
    return False


def user_attributes(
    username: str, email: str, first_name: str, last_name: str
) -> list[tuple[str, str]]:
    """The (name, value) pairs a password must not be too similar to (Django's defaults)."""
    return [
        ("username", username),
        ("email address", email),
        ("first name", first_name),
        ("last name", last_name),
    ]


def password_problems(password: str, attributes: Iterable[tuple[str, str]] = ()) -> list[Problem]:
    """Every rule the password breaks; ``attributes`` are (name, value) of the user's fields."""
    problems: list[Problem] = []
    if len(password) < PASSWORD_MIN_LENGTH:
        problems.append(
            (
                "password_too_short",
                f"This password is too short. It must contain at least "
                f"{PASSWORD_MIN_LENGTH} characters.",
            )
        )
    if len(password) > PASSWORD_MAX_LENGTH:
        problems.append(
            (
                "password_too_long",
                f"This password is too long. It must contain at most "
                f"{PASSWORD_MAX_LENGTH} characters.",
            )
        )
    lowered = password.lower()
    for name, value in attributes:
        if value and _too_similar(lowered, value):
            problems.append(("password_too_similar", f"The password is too similar to the {name}."))
            break
    if lowered.strip() in common_passwords():
        problems.append(("password_too_common", "This password is too common."))
    if password.isdigit():
        problems.append(("password_entirely_numeric", "This password is entirely numeric."))
    return problems
