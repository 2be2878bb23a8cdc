"""Results filed by series name, and the report printed from them.

The report finds every series by its name (the plan's declarations, bench/scenarios.py):
the table lists the plan's series in declaration order, each ratio looks up its numerator
and denominator by name.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field

from bench.scenarios import Attribute, Plan, Ratio
from bench.wrk import WrkResult

TABLE_HEAD = (
    "| endpoint | requests/s median (min-max) | p50 ms | p99 ms | non-2xx | socket errors |\n"
    "|---|---|---|---|---|---|"
)
_SHOWN: dict[Attribute, tuple[str, str]] = {  # format and unit
    "requests_per_s": (",.0f", "requests/s"),
    "p50_ms": (".2f", "ms"),
    "p99_ms": (".2f", "ms"),
}


@dataclass
class Series:
    name: str
    label: str
    results: list[WrkResult] = field(default_factory=list)

    @property
    def non_2xx(self) -> int:
        return sum(r.non_2xx for r in self.results)

    @property
    def errors(self) -> int:
        return sum(r.socket_errors for r in self.results)

    def values(self, attribute: Attribute) -> list[float]:
        return [float(getattr(r, attribute)) for r in self.results]

    def median(self, attribute: Attribute) -> float:
        return float(statistics.median(self.values(attribute)))

    def span(self, attribute: Attribute) -> tuple[float, float]:
        values = self.values(attribute)
        return min(values), max(values)

    def row(self) -> str:
        rps_lo, rps_hi = self.span("requests_per_s")
        p50_lo, p50_hi = self.span("p50_ms")
        p99_lo, p99_hi = self.span("p99_ms")
        return (
            f"| {self.label} | {self.median('requests_per_s'):,.0f} "
            f"({rps_lo:,.0f}-{rps_hi:,.0f}) | {self.median('p50_ms'):.2f} "
            f"({p50_lo:.2f}-{p50_hi:.2f}) | {self.median('p99_ms'):.2f} "
            f"({p99_lo:.2f}-{p99_hi:.2f}) | {self.non_2xx} | {self.errors} |"
        )


class Results:
    """Every measurement's figures, by series name, in the order first recorded."""

    def __init__(self) -> None:
        self._series: dict[str, Series] = {}

    def add(self, name: str, label: str, result: WrkResult) -> None:
        self._series.setdefault(name, Series(name, label)).results.append(result)

    def __getitem__(self, name: str) -> Series:
        try:
            return self._series[name]
        except KeyError:
            raise KeyError(f"no series named {name!r} (have: {', '.join(self._series)})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._series

    def __iter__(self) -> Iterator[Series]:
        return iter(self._series.values())


def ratio_lines(ratio: Ratio, results: Results) -> list[str]:
    """The ratio of the medians (with both medians), and with ``per_round`` the ratio
    within each round: two series measured back to back in a round share the machine's
    speed of that moment, so their ratio is steadier than either figure."""
    numerator, denominator = results[ratio.numerator], results[ratio.denominator]
    top, bottom = numerator.median(ratio.attribute), denominator.median(ratio.attribute)
    shown, unit = _SHOWN[ratio.attribute]
    detail = f" ({ratio.detail})" if ratio.detail else ""
    lines = [
        f"{ratio.name}{detail}, medians: {top / bottom:.2f} "
        f"({top:{shown}} ÷ {bottom:{shown}} {unit})"
    ]
    if ratio.per_round:
        rounds = [
            top / bottom
            for top, bottom in zip(
                numerator.values(ratio.attribute), denominator.values(ratio.attribute), strict=True
            )
        ]
        lines.append(
            f"{ratio.name} per round: median {statistics.median(rounds):.2f} "
            f"({min(rounds):.2f}-{max(rounds):.2f}; {', '.join(f'{r:.2f}' for r in rounds)})"
        )
    return lines


def report(plan: Plan, results: Results, rss_mib: float) -> int:
    """Print the table, the ratios, the memory and the verdict; the exit status (1 when an
    answer was not 2xx, wrk saw socket errors or a measurement got no answer at all)."""
    knobs = plan.knobs
    print()
    print(f"scenario {plan.scenario}, {knobs.users:,} users, {knobs.connections} connections")
    print(TABLE_HEAD)
    series = [results[name] for name, _ in plan.series]
    for s in series:
        print(s.row())
    if plan.ratios:
        print()
    for ratio in plan.ratios:
        for line in ratio_lines(ratio, results):
            print(line)
    print(f"worker resident memory after the run (VmRSS): {rss_mib:.1f} MiB")
    bad = sum(s.non_2xx + s.errors for s in series)
    empty = [s.label for s in series if any(r.requests == 0 for r in s.results)]
    if bad or empty:
        print(f"\nINVALID RUN: {bad} non-2xx answers or socket errors")
        for label in empty:
            print(f"  no answer at all within a measurement: {label}")
        return 1
    print("\nvalid run: no non-2xx answers, no socket errors")
    return 0
