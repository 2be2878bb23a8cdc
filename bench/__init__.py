"""Benchmarks that print figures (never tests that assert timings), run from the
repository's root:

- ``python -m bench`` (through ``bench/run``): the HTTP benchmark, wrk against one worker
  on PostgreSQL. ``cli`` (options, set-up), ``scenarios`` (the scenarios as data),
  ``runner`` (the loop), ``wrk`` (the load and its output), ``lua`` (wrk's scripts),
  ``database`` (scratch database, seeding, tokens), ``report`` (the figures by series name).
- ``python -m bench.import_django``: how long ``import-django`` takes for 100,000 users.

``server`` starts a real ``python -m app serve``; the tests use it too (tests/conftest.py).
"""
