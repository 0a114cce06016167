"""``eddyline demo`` where stderr is no terminal (a pipe, a CI log): its live table does not draw there, so it says
its counts in a line every ten seconds instead of nothing until the summary."""

from __future__ import annotations

import io

from rich.console import Console

from streams.cli.demo import PROGRESS_EVERY_S, ProgressLines


def _run(console: Console, seconds: int) -> list[float]:
    now = [0.0]
    progress = ProgressLines(console, clock=lambda: now[0])
    asked: list[float] = []

    def line() -> str:
        asked.append(now[0])
        return f"eddyline demo: producing ({now[0]:.0f} s): scored readings [1,000]; " + "; ".join(["dead letters 0"] * 8)

    for tenth in range(10 * seconds + 1):  # the demo's loops tick about four times a second
        now[0] = tenth / 10
        progress.tick(line)
    return asked


def test_with_no_terminal_a_line_of_counts_every_ten_seconds_each_on_one_line_as_written() -> None:
    out = io.StringIO()
    asked = _run(Console(file=out, force_terminal=False, width=80), seconds=35)
    assert PROGRESS_EVERY_S == 10.0 and asked == [10.0, 20.0, 30.0]
    lines = out.getvalue().splitlines()
    assert [line.split(":")[1] for line in lines] == [" producing (10 s)", " producing (20 s)", " producing (30 s)"]
    assert all("scored readings [1,000]; " in line and line.endswith("; dead letters 0") for line in lines)


def test_on_a_terminal_the_live_table_says_it_and_no_line_is_made() -> None:
    out = io.StringIO()
    assert _run(Console(file=out, force_terminal=True), seconds=35) == []
    assert out.getvalue() == ""
