"""The password rules as plain functions (no database involved)."""

from __future__ import annotations

import pytest

from app.core.password_policy import common_passwords, password_problems


def codes(password: str, **attributes: str) -> set[str]:
    return {code for code, _ in password_problems(password, attributes.items())}


def test_common_list_is_djangos() -> None:
    passwords = common_passwords()
    assert len(passwords) == 19640
    assert {"123456", "password", "qwerty", "liverpool"} <= passwords


@pytest.mark.parametrize(
    "password", ["correct horse battery", "Tr0ub4dor&3-x", "ñandú-pájaro-42", "x" * 128]
)
def test_good_passwords_pass(password: str) -> None:
    assert codes(password, username="alice", email="alice@example.com") == set()


@pytest.mark.parametrize(
    ("password", "expected"),
    [
        ("", {"password_too_short"}),
        ("zq7-wv1", {"password_too_short"}),
        ("x" * 129, {"password_too_long"}),
        ("12345678", {"password_too_common", "password_entirely_numeric"}),
        ("98173645209", {"password_entirely_numeric"}),
        ("PASSWORD", {"password_too_common"}),
        (" iloveyou ", {"password_too_common"}),
    ],
)
def test_rules(password: str, expected: set[str]) -> None:
    assert codes(password) == expected


@pytest.mark.parametrize(
    ("password", "attributes"),
    [
        ("alexander1", {"username": "alexander"}),
        ("Alexander-Smith", {"username": "alexander_smith"}),
        ("jsmith-mail", {"email": "jsmith.mail@example.com"}),
        ("margaretha", {"first_name": "Margarethe"}),
    ],
)
def test_too_similar_to_user_attributes(password: str, attributes: dict[str, str]) -> None:
    assert "password_too_similar" in codes(password, **attributes)


def test_similarity_ignores_short_attribute_parts_against_long_passwords() -> None:
    assert codes("a-really-long-unrelated-passphrase", username="al") == set()
