"""How usernames, emails and login identifiers are normalised and compared.

One identifier belongs to one account: login takes a username or an email, so a username
may not be another account's email, nor an email another account's username. Every rule
that compares them uses the functions here (registration, profile and admin changes,
``createsuperuser``, the Django import, login).
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Collection


def normalize_username(value: str) -> str:
    """NFKC, as Django's ``AbstractBaseUser.normalize_username``: look-alike compatibility
    forms (fullwidth letters, ligatures) are one username. Case is kept (Django's rule)."""
    return unicodedata.normalize("NFKC", value)


def normalize_email(value: str) -> str:
    """Trimmed, lower-cased, NFC: ``\\u00e1na@x`` and ``a\\u0301na@x`` are one address."""
    return unicodedata.normalize("NFC", value.strip().lower())


def identifier_key(value: str) -> str:
    """The form in which a username and an email are compared with each other: NFKC and
    case-folded, so no spelling of an identifier can reach two accounts at login (which
    matches the username after NFKC and the email after `normalize_email`). Case folding,
    not lower(): lower() leaves a few letters (U+03F9, capital lunate sigma) that a username
    and an email would then spell apart; folding is stricter (ß and ss are one)."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", value.strip()).casefold())


def throttle_form(identifier: str) -> str:
    """An identifier as login tells accounts apart: one holding an ``@`` (an email, or a
    username that claims one) as `identifier_key`, a plain username exactly (NFKC; Django's
    usernames are case-sensitive, so ``Alice`` and ``alice`` are two accounts)."""
    username = normalize_username(identifier.strip())
    return identifier_key(username) if "@" in username else username


def identifier_digest(value: str) -> str:
    """SHA-256 of `identifier_key`: a fixed-size key for the unique index (NFKC can make a
    string many times longer than its column)."""
    return hashlib.sha256(identifier_key(value).encode()).hexdigest()


def claimed_identifiers(
    username: str, email: str, fields: Collection[str] = ("username", "email")
) -> dict[str, str]:
    """The login identifiers an account holds through ``fields``, digest -> field: its email
    and, when the username could be mistaken for an email (it holds an ``@``), its username.
    Usernames without ``@`` can never equal an email, and keep Django's case-sensitive
    uniqueness. A username equal to the account's own email is one claim (the username's)."""
    claims: dict[str, str] = {}
    if "username" in fields and "@" in username:
        claims[identifier_digest(username)] = "username"
    if "email" in fields:
        claims.setdefault(identifier_digest(email), "email")
    return claims
