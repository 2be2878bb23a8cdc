"""Staff search probes the trigram index with a term's rare piece; the matches never change."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI

from app.models.user import User
from app.repositories import user_search
from app.resources import resources_of
from app.services.search_probe import COMMON_SHARE, TrigramStats, rare_fragment
from tests.conftest import access_token, add_user, bearer

USERS = "/api/v1/users"
MEMBERS = 60


@pytest.mark.parametrize(
    ("term", "common", "expected"),
    [
        ("user123456", {"use", "ser", "er1"}, "r123456"),
        ("user123456", {"use", "ser", "er1", "234"}, "r123"),
        ("user123456", set(), None),  # no sample yet: the whole term
        ("bob", {"use"}, None),  # no common trigram in the term: the whole term
        ("user", {"use", "ser"}, None),  # nothing rare in it: the whole term
        ("john@gmail.com", {"gma", "mai", "ail", "com"}, "john"),
        ("John@Gmail", {"gma", "mai", "ail"}, "John"),  # cut from the term as given
        ("ab", {"abc"}, None),
        ("İstanbul", {"tan"}, None),  # not ASCII: the whole term
        ("\u039a\u0391\u03a3\u0391", {"\u03b1\u03c3\u03b1"}, None),  # Greek: a final sigma (ICU)
    ],
)
def test_rare_fragment(term: str, common: set[str], expected: str | None) -> None:
    assert rare_fragment(term, frozenset(common)) == expected


async def test_trigram_stats_sample_once_per_period() -> None:
    calls = 0

    async def sample() -> frozenset[str]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return frozenset({"use"})

    stats = TrigramStats(refresh_seconds=3600)
    results = await asyncio.gather(*(stats.common(sample) for _ in range(5)))
    # One sampled, the others answered at once with the (empty) previous sample.
    assert calls == 1
    assert frozenset({"use"}) in results
    assert await stats.common(sample) == frozenset({"use"})
    assert calls == 1
    expired = TrigramStats(refresh_seconds=0)
    await expired.common(sample)
    await expired.common(sample)
    assert calls == 3


async def test_a_failed_sample_keeps_the_previous_one_and_is_retried_later() -> None:
    outcomes: list[frozenset[str] | Exception] = [frozenset({"use"}), TimeoutError()]

    async def sample() -> frozenset[str]:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    stats = TrigramStats(refresh_seconds=0)
    assert await stats.common(sample) == frozenset({"use"})
    assert await stats.common(sample) == frozenset({"use"})  # failed: the previous sample
    assert not outcomes
    assert await stats.common(sample) == frozenset({"use"})  # not retried at once


@pytest.fixture
async def members(app: FastAPI) -> str:
    """root (staff) plus member0..member59 (member<i>@example.com): every member shares
    the trigrams of 'member' and of 'example'."""
    await add_user(app, username="root", email="root@corp.example.org", is_staff=True)
    async with resources_of(app).sessionmaker() as db, db.begin():
        db.add_all(
            User(username=f"member{i}", email=f"member{i}@example.com", password="!")
            for i in range(MEMBERS)
        )
    return await access_token(app, "root")


TERMS = ["member17", "MEMBER4", "ber3", "member59@example", "r1", "member", "17@ex", "nobody"]


def expected_usernames(term: str) -> list[str]:
    names = [f"member{i}" for i in range(MEMBERS)]
    documents = {name: (name, f"{name}@example.com") for name in names}
    return [name for name in names if any(term.lower() in d for d in documents[name])]


async def test_search_results_do_not_depend_on_the_probe(
    client: httpx.AsyncClient, app: FastAPI, members: str
) -> None:
    async with resources_of(app).read_sessionmaker() as db:
        # A small table: min_rows lowered so that what every member has counts as common.
        common = await user_search.common_search_trigrams(db, COMMON_SHARE, min_rows=10)
        assert await user_search.common_search_trigrams(db, COMMON_SHARE, 1000) == (frozenset())
        if resources_of(app).engine.dialect.name == "postgresql":
            # Sampled from the table: what every member has is common, their numbers not.
            assert {"mem", "emb", "mbe", "ber", "exa", "amp"} <= common
            assert "r17" not in common
            assert rare_fragment("member17", common) == "r17"
        else:
            assert common == frozenset()  # no trigram index: the term as given
        for term in TERMS:
            pages = []
            for fragment in (None, rare_fragment(term, common), term[-3:]):
                users, total = await user_search.search(
                    db,
                    text=term,
                    is_active=None,
                    is_staff=None,
                    ordering="id",
                    limit=100,
                    offset=0,
                    index_fragment=fragment,
                )
                pages.append(([user.username for user in users], total))
            expected = expected_usernames(term)
            assert pages == [(expected, len(expected))] * 3, term
    for term in TERMS:
        response = await client.get(
            USERS, params={"search": term, "limit": 100}, headers=bearer(members)
        )
        assert response.status_code == 200
        assert [user["username"] for user in response.json()["items"]] == expected_usernames(term)
