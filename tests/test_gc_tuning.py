"""The garbage-collector settings of a server process, counted across apps in one process."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from app.core import gc_tuning


@pytest.fixture
def clean_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_settings_hold_until_the_last_app_stops(clean_gc: None) -> None:
    before = gc.get_threshold()
    gc_tuning.freeze_startup_objects()  # app A
    gc_tuning.freeze_startup_objects()  # app B
    assert gc.get_threshold() == gc_tuning.THRESHOLD
    assert gc.get_freeze_count() > 0
    gc_tuning.unfreeze()  # A stops, B still serves
    assert gc.get_threshold() == gc_tuning.THRESHOLD
    assert gc.get_freeze_count() > 0
    gc_tuning.unfreeze()  # B stops
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
