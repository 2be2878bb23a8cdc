"""Which part of a staff search term to look up in PostgreSQL's trigram index.

pg_trgm's GIN index answers ``document ILIKE '%term%'`` by intersecting the posting
lists of all the term's trigrams. A trigram that most users share (``use`` and ``ser`` in
``user123456``, ``com`` or ``mai`` in ``john@gmail.com``) has a posting list as long as
the table: at a million users, reading it costs ~10 ms of PostgreSQL CPU per search,
however rare the term is. So the index is probed with the longest piece of the term made
only of rare trigrams, and every candidate is still checked against the whole term, per
column: which users match never changes, only how they are found.

Which trigrams are common is sampled from the table (`TrigramStats`); a stale or empty
sample only costs speed.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable

# pg_trgm splits text into words of letters and digits; trigrams never span two words.
_WORD = re.compile(r"[^\W_]+")
TRIGRAM = 3
# Trigrams in at least this share of the users, and in at least COMMON_MIN_ROWS of them,
# are "common": a shorter posting list costs little to read. The sample costs ~0.3 s at a
# million users, once per REFRESH_SECONDS per worker.
COMMON_SHARE = 0.01
COMMON_MIN_ROWS = 1000
REFRESH_SECONDS = 600.0
RETRY_SECONDS = 60.0

logger = logging.getLogger(__name__)


def rare_fragment(term: str, common: frozenset[str]) -> str | None:
    """The longest piece of ``term`` (one word, at least a trigram long) with no common
    trigram, or None when the whole term should be used: it has no common trigram, or
    no piece of it is free of them."""
    lowered = term.lower()
    if not common or not term.isascii():
        # ASCII only: PostgreSQL lower-cases a pattern as a whole, and some letters by
        # their context (an ICU database lower-cases a final capital sigma differently),
        # so a piece cut out of a non-ASCII word may not match where the word does.
        return None
    best: tuple[int, int] = (0, 0)
    has_common = False
    for word in _WORD.finditer(lowered):
        start = word.start()
        for end in range(word.start() + TRIGRAM, word.end() + 1):
            if lowered[end - TRIGRAM : end] in common:
                has_common = True
                start = end - TRIGRAM + 1
            elif end - start > best[1] - best[0]:
                best = (start, end)
    if not has_common or best == (0, 0):
        return None
    return term[best[0] : best[1]]


class TrigramStats:
    """The common trigrams of the users' search documents, sampled at most every
    REFRESH_SECONDS by the first search that needs them (one at a time; the others use
    the previous sample meanwhile)."""

    def __init__(self, refresh_seconds: float = REFRESH_SECONDS) -> None:
        self._refresh_seconds = refresh_seconds
        self._common: frozenset[str] = frozenset()
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def common(self, sample: Callable[[], Awaitable[frozenset[str]]]) -> frozenset[str]:
        """The last sample's common trigrams. A failed sample is logged and retried after
        RETRY_SECONDS: the search goes on with the previous sample (only its speed
        depends on it)."""
        if time.monotonic() < self._expires or self._lock.locked():
            return self._common
        async with self._lock:
            try:
                self._common = await sample()
            except Exception as exc:  # any database error: searching must not depend on it
                logger.warning("search trigram sample failed: %s", type(exc).__name__)
                self._expires = time.monotonic() + RETRY_SECONDS
            else:
                self._expires = time.monotonic() + self._refresh_seconds
        return self._common
