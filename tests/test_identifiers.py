"""One identifier, one account: a username may not be another account's email (and the
other way round), whatever the letter case or Unicode spelling, on every path that writes
them, under concurrency too; usernames refuse invisible characters; emails are stored in
one Unicode form (security review, findings 3 and 7)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, insert, select

from app.core.identifiers import claimed_identifiers
from app.core.security import PASSWORD_CONTEXT
from app.models import LoginIdentifier, User
from app.resources import resources_of
from tests.conftest import PASSWORD, access_token, add_user, bearer, register, user_payload

REGISTER = "/api/v1/auth/register"
TOKEN = "/api/v1/auth/token"
PROFILE = "/api/v1/users/profile"
OTHER_PASSWORD = "another-Good-pass-31"


async def token_status(client: httpx.AsyncClient, identifier: str, password: str) -> int:
    response = await client.post(TOKEN, json={"username": identifier, "password": password})
    return response.status_code


@pytest.mark.parametrize(
    "spelling", ["victim@example.com", "Victim@Example.COM", "victim@exampl\uff45.com"]
)
async def test_a_username_cannot_be_another_accounts_email(
    client: httpx.AsyncClient, app: FastAPI, spelling: str
) -> None:
    """The review's repro: the attacker's username took over the victim's email login."""
    await add_user(app, username="victim", email="victim@example.com")
    response = await client.post(
        REGISTER,
        json=user_payload(username=spelling, email="attacker@example.com", password=OTHER_PASSWORD),
    )
    assert response.status_code == 409
    assert response.json()["code"] == "username_taken"
    assert await token_status(client, "victim@example.com", PASSWORD) == 200
    assert await token_status(client, "victim@example.com", OTHER_PASSWORD) == 401


async def test_an_email_cannot_be_another_accounts_username(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await add_user(app, username="Bob@Example.com", email="bob-real@example.com")
    response = await client.post(
        REGISTER, json=user_payload(username="bob", email="bob@example.com")
    )
    assert response.status_code == 409
    assert response.json()["code"] == "email_taken"
    assert await token_status(client, "Bob@Example.com", PASSWORD) == 200


async def test_usernames_with_at_signs_differing_in_case_are_one_identifier(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """Login would read either as an email: they are one identifier. Plain usernames keep
    Django's case-sensitive uniqueness."""
    await add_user(app, username="Carol@Example.com", email="carol1@example.com")
    clash = await client.post(
        REGISTER, json=user_payload(username="carol@example.com", email="carol2@example.com")
    )
    assert clash.status_code == 409
    await register(client, username="dave", email="dave1@example.com")
    await register(client, username="Dave", email="dave2@example.com")


async def test_ones_own_email_as_username_is_fine(client: httpx.AsyncClient) -> None:
    await register(client, username="erin@example.com", email="Erin@Example.com")
    assert await token_status(client, "erin@example.com", PASSWORD) == 200


async def test_profile_changes_keep_identifiers_apart(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await add_user(app, username="alice", email="alice@example.com")
    await add_user(app, username="bob", email="bob@example.com")
    token = await access_token(app, "bob")

    async def change(**fields: str) -> httpx.Response:
        return await client.patch(
            PROFILE, json={**fields, "current_password": PASSWORD}, headers=bearer(token)
        )

    taken_username = await change(username="ALICE@example.com")
    assert (taken_username.status_code, taken_username.json()["code"]) == (409, "username_taken")
    # bob takes a username that looks like an email; nobody may then use it as an email
    assert (await change(username="bobby@example.org")).status_code == 200
    clash = await client.post(
        REGISTER, json=user_payload(username="eve", email="Bobby@Example.org")
    )
    assert (clash.status_code, clash.json()["code"]) == (409, "email_taken")
    # renaming releases the old identifier
    assert (await change(username="bob")).status_code == 200
    await register(client, username="eve", email="Bobby@Example.org")
    # an email change is checked against the usernames too
    assert (await change(email="alice@example.com")).json()["code"] == "email_taken"


async def test_admin_changes_keep_identifiers_apart(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await add_user(app, username="root", email="root@example.com", is_staff=True, is_superuser=True)
    root = await access_token(app, "root")
    alice = await add_user(app, username="alice", email="alice@example.com")
    await add_user(app, username="frank@example.com", email="frank@example.org")
    to_email = await client.patch(
        f"/api/v1/users/{alice['id']}", json={"username": "root@example.com"}, headers=bearer(root)
    )
    assert (to_email.status_code, to_email.json()["code"]) == (409, "username_taken")
    to_username = await client.patch(
        f"/api/v1/users/{alice['id']}", json={"email": "FRANK@example.com"}, headers=bearer(root)
    )
    assert (to_username.status_code, to_username.json()["code"]) == (409, "email_taken")


async def test_a_deleted_accounts_identifiers_are_free(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await add_user(app, username="gina@example.com", email="gina@example.org")
    token = await access_token(app, "gina@example.com")
    deleted = await client.request(
        "DELETE", PROFILE, json={"current_password": PASSWORD}, headers=bearer(token)
    )
    assert deleted.status_code == 204
    await register(client, username="gina", email="gina@example.com")
    async with resources_of(app).sessionmaker() as db:
        claims = await db.scalar(select(func.count()).select_from(LoginIdentifier))
    assert claims == 1


async def test_concurrent_username_and_email_claims(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """One request registers the identifier as a username, the other as an email, at once:
    exactly one wins (enforced by a unique key, not only by the check before it)."""
    for round_ in range(5):
        identifier = f"race{round_}@example.com"
        responses = await asyncio.gather(
            client.post(
                REGISTER,
                json=user_payload(username=identifier, email=f"u{round_}@example.org"),
            ),
            client.post(
                REGISTER, json=user_payload(username=f"e{round_}", email=identifier.upper())
            ),
        )
        assert sorted(r.status_code for r in responses) == [201, 409], [r.text for r in responses]


async def test_identifiers_race_past_the_check(app: FastAPI) -> None:
    """The unique key alone refuses a second claim (as when two requests both passed the
    check): the username's and the email's clashes are told apart."""
    from app.core.errors import EmailTaken, UsernameTaken
    from app.repositories import users as users_repo

    async with resources_of(app).sessionmaker() as db, db.begin():
        await users_repo.add(db, _user("holly@example.com", "holly@example.org"))
    for username, email, error in (
        ("holly@example.org", "h2@example.org", UsernameTaken),
        ("holly2", "HOLLY@example.com", EmailTaken),
    ):
        with pytest.raises(error):
            async with resources_of(app).sessionmaker() as db, db.begin():
                await users_repo.add(db, _user(username, email))


def _user(username: str, email: str) -> User:
    return User(username=username, email=email, password=PASSWORD_CONTEXT.hash("x" * 12))


# --- Unicode: invisible characters, one form of an email --------------------------------

FORMAT_CHARACTERS = {
    "ZWJ": "\u200d",
    "ZWNJ": "\u200c",
    "ZWSP": "\u200b",
    "word joiner": "\u2060",
    "BOM": "\ufeff",
    "LRM": "\u200e",
    "RLO": "\u202e",
    "LRI": "\u2066",
    "ALM": "\u061c",
}


@pytest.mark.parametrize("character", FORMAT_CHARACTERS.values(), ids=FORMAT_CHARACTERS.keys())
async def test_usernames_refuse_format_characters(
    client: httpx.AsyncClient, character: str
) -> None:
    response = await client.post(REGISTER, json=user_payload(username=f"ad{character}min"))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "username"]


async def test_emails_in_two_unicode_spellings_are_one_account(client: httpx.AsyncClient) -> None:
    composed, decomposed = "\u00e1na@example.com", "a\u0301na@example.com"
    created = await register(client, username="ana", email=decomposed)
    assert created["email"] == composed
    twin = await client.post(REGISTER, json=user_payload(username="ana2", email=composed.upper()))
    assert (twin.status_code, twin.json()["code"]) == (409, "email_taken")
    assert await token_status(client, decomposed, PASSWORD) == 200
    assert await token_status(client, "\u00c1NA@example.com", PASSWORD) == 200


async def test_an_identifier_two_old_accounts_answer_to_logs_in_neither(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """Rows from before the rule (written straight to the table here) may clash: login
    then refuses the ambiguous identifier instead of picking one account."""
    async with resources_of(app).sessionmaker() as db, db.begin():
        await db.execute(
            insert(User),
            [
                {
                    "username": "ivy@example.com",
                    "email": "ivy1@example.org",
                    "password": PASSWORD_CONTEXT.hash(PASSWORD),
                },
                {
                    "username": "ivy",
                    "email": "ivy@example.com",
                    "password": PASSWORD_CONTEXT.hash(OTHER_PASSWORD),
                },
            ],
        )
    assert await token_status(client, "ivy@example.com", PASSWORD) == 401
    assert await token_status(client, "ivy@example.com", OTHER_PASSWORD) == 401
    assert await token_status(client, "ivy", OTHER_PASSWORD) == 200
    assert await token_status(client, "ivy1@example.org", PASSWORD) == 200


def test_claims() -> None:
    assert set(claimed_identifiers("plain", "a@x.com").values()) == {"email"}
    assert set(claimed_identifiers("a@x.com", "b@x.com").values()) == {"username", "email"}
    assert list(claimed_identifiers("A@X.com", "a@x.com").values()) == ["username"]
    assert set(claimed_identifiers("a@x.com", "b@x.com", ["email"]).values()) == {"email"}


async def test_createsuperuser_keeps_identifiers_apart(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    from app.cli import CommandError, _create_superuser

    await add_user(app, username="jack", email="jack@example.com")
    with pytest.raises(CommandError, match="username already exists"):
        await _create_superuser(
            resources_of(app).settings, "JACK@example.com", "root@example.org", PASSWORD
        )


async def test_letters_lower_leaves_apart_are_one_identifier(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """U+03F2 (lunate sigma) in an email, U+03A3 (capital sigma) in a username: lower()
    keeps them apart while login would read U+03F9 as both; the identifier key case-folds."""
    await add_user(app, username="sigma1", email="a\u03f2b@example.com")
    clash = await client.post(
        REGISTER, json=user_payload(username="a\u03a3b@example.com", email="s2@example.com")
    )
    assert (clash.status_code, clash.json()["code"]) == (409, "username_taken")


async def test_an_email_that_lengthens_when_lower_cased_is_a_422(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """'İ' is two characters once lower-cased: the limit holds for the stored form."""
    email = "\u0130" * 32 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 28 + ".com"
    assert len(email) <= 200 < len(email.lower())
    response = await client.post(REGISTER, json=user_payload(email=email))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "email"]
