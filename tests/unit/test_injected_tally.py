"""The demo's count of injected anomalies judges only those whose readings were all scored.

A run ends in the middle of anomalies (a level shift is 20 readings long, a batch 50) and its last readings may not
be scored yet: counted as missed, they made a run whose flow missed nothing report 32 of 33.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import islice

from streams.cli.demo import injected_line
from streams.producers.simulator import InjectedTally, SensorSimulator, tally_injected


def _run(records: int) -> tuple[SensorSimulator, list[dict]]:
    sim = SensorSimulator(devices=4, readings_per_message=50, anomaly_rate=0.02, warmup_readings=50, seed=3)
    return sim, list(islice(sim, records))


def _perfect_flow(scored: list[dict], sim: SensorSimulator) -> tuple[dict, dict]:
    """What a flow that flags every injected reading it scored reports: flagged times and the last time scored."""
    flagged: dict[tuple[str, str], list[int]] = defaultdict(list)
    until: dict[tuple[str, str], int] = {}
    for rec in scored:
        for s in rec["series"]:
            series = (rec["device_id"], s["sensor"])
            until[series] = max(until.get(series, -1), s["timestamps"][-1])
            flagged[series].extend(t for t in s["timestamps"] for a in sim.injected
                                   if (a.device_id, a.sensor) == series and a.start_ms <= t <= a.end_ms)
    return {k: sorted(v) for k, v in flagged.items()}, until


def test_a_flow_that_catches_what_it_scored_gets_a_full_count_and_the_rest_is_left_out() -> None:
    sim, records = _run(40)  # ten batches per device
    scored = records[:-6]  # the run ended before the flow scored the last readings of every device
    flagged, until = _perfect_flow(scored, sim)
    tally = tally_injected(sim.injected, flagged, until)
    cut_short = [a for a in sim.injected if a.end_ms > until[(a.device_id, a.sensor)]]
    assert cut_short and tally.scored > 10  # some are left out, most are judged
    assert tally == InjectedTally(injected=len(sim.injected), scored=len(sim.injected) - len(cut_short),
                                  detected=len(sim.injected) - len(cut_short))
    assert tally.unscored == len(cut_short)
    everything = sum(a.caught(flagged) for a in sim.injected)  # the count before: every injected one judged
    assert everything < len(sim.injected)


def test_an_anomaly_scored_in_full_and_not_flagged_is_a_miss() -> None:
    sim, records = _run(40)
    flagged, until = _perfect_flow(records, sim)
    missed = sim.injected[0]
    flagged[(missed.device_id, missed.sensor)] = [t for t in flagged[(missed.device_id, missed.sensor)]
                                                  if not missed.start_ms <= t <= missed.end_ms]
    tally = tally_injected(sim.injected, flagged, until)
    assert tally.scored == tally.detected + 1 and tally.detected > 0


def test_the_summary_line_says_what_it_counted_and_what_it_left_out() -> None:
    assert injected_line(InjectedTally(injected=33, scored=33, detected=33)) == (
        "detected 33/33 injected anomalies scored in full (100.0%)")
    assert injected_line(InjectedTally(injected=34, scored=33, detected=32)) == (
        "detected 32/33 injected anomalies scored in full (97.0%; 1 more left out, not scored in full by the end)")
