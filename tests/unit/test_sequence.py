"""Order and repeats by sequence number: the sensor flow learns in event order whatever the arrival order."""

import itertools
import random

from prometheus_client import REGISTRY

from streams.flows.sensor_anomaly import REORDER, SensorAnomalyProcessor
from streams.processor import Event
from streams.producers.simulator import SensorSimulator
from streams.sequence import MASK_BITS, PRODUCERS, SKIPPED_RUNS, Sequencer
from streams.state import decode_processor, encode_processor
from tests.fixtures.emits import plain, plain_value


def batches(n: int, seed: int = 5) -> list[Event]:
    sim = SensorSimulator(devices=1, readings_per_message=30, anomaly_rate=0.01, seed=seed)
    return [Event("sensor.readings", r["device_id"], r) for r in itertools.islice(sim, n)]


def scores(emits) -> dict[str, list]:
    return {e.record["source_event_id"]: plain_value(e.record["series"]) for e in emits if e.topic == "scores.anomaly"}


def shuffled_with_repeats(evs: list[Event], seed: int) -> list[Event]:
    """Each batch moved at most REORDER places, a third of them repeated (some much later)."""
    rng = random.Random(seed)
    keyed = sorted(range(len(evs)), key=lambda i: i + rng.uniform(0, REORDER))
    out = [evs[i] for i in keyed]
    for i in rng.sample(range(len(evs)), len(evs) // 3):
        out.insert(min(len(out), i + rng.randint(0, 3 * MASK_BITS)), evs[i])
    return out


def test_out_of_order_and_repeated_batches_score_as_in_order_delivery():
    evs = batches(150)
    device = evs[0].record["device_id"]
    expected = SensorAnomalyProcessor(device).process(evs)
    for seed in range(3):
        proc = SensorAnomalyProcessor(device)
        got = []
        arrivals = shuffled_with_repeats(evs, seed)
        for i in range(0, len(arrivals), 7):
            got.extend(proc.process(arrivals[i:i + 7]))
        assert scores(got) == scores(expected)
        assert [e.record.get("event_id") for e in got] == [e.record.get("event_id") for e in expected]
        assert proc.sequence.counts.duplicates + proc.sequence.counts.stale == len(evs) // 3
        assert proc.sequence.counts.gaps == 0 and not proc.sequence.pending


def test_repeats_are_dropped_however_old_and_order_survives_a_checkpoint():
    evs = batches(200)
    device = evs[0].record["device_id"]
    proc = SensorAnomalyProcessor(device)
    first = proc.process(evs[:120])
    proc = decode_processor(encode_processor(proc, device), SensorAnomalyProcessor(device))
    assert proc.process([evs[3], evs[119], evs[60]]) == []
    assert plain(proc.process(evs[120:])) == plain(SensorAnomalyProcessor(device).process(evs)[len(first):])


def test_a_gap_is_waited_for_then_skipped_and_counted_and_a_late_batch_still_scores():
    evs = batches(30)
    device = evs[0].record["device_id"]
    gaps_before = REGISTRY.get_sample_value("eddyline_sequence_gaps_total", {"flow": "sensor-anomaly"}) or 0.0
    proc = SensorAnomalyProcessor(device)
    out = proc.process(evs[:5])
    held = proc.process(evs[6:6 + REORDER])
    assert scores(held) == {}, "batches after the gap wait for it"
    out += proc.process([evs[6 + REORDER]])
    assert proc.sequence.counts.gaps == 1 and proc.sequence.hwm == evs[6 + REORDER].record["seq"]
    assert REGISTRY.get_sample_value("eddyline_sequence_gaps_total", {"flow": "sensor-anomaly"}) == gaps_before + 1
    late = proc.process([evs[5]])
    assert list(scores(late)) == [evs[5].record["event_id"]] and proc.sequence.counts.late == 1
    assert proc.process([evs[5]]) == []


def test_held_batches_come_out_when_the_key_is_flushed():
    evs = batches(6)
    proc = SensorAnomalyProcessor(evs[0].record["device_id"])
    proc.process([evs[0], evs[2], evs[3]])
    assert list(scores(proc.flush())) == [evs[2].record["event_id"], evs[3].record["event_id"]]
    assert proc.sequence.counts.gaps == 1


def test_producers_without_sequence_numbers_keep_working():
    evs = batches(12)
    device = evs[0].record["device_id"]
    for seq_of in (lambda i: -1, lambda i: 0):
        unnumbered = [Event(e.topic, e.key, {**e.record, "seq": seq_of(i)}) for i, e in enumerate(evs)]
        proc = SensorAnomalyProcessor(device)
        got = proc.process(unnumbered + unnumbered[:4])
        assert scores(got) == scores(SensorAnomalyProcessor(device).process(evs))
        assert proc.sequence.latest.unsequenced and proc.sequence.counts.duplicates == 4


def test_stale_repeats_beyond_the_mask_are_dropped():
    seqr = Sequencer(reorder=2)
    applied = []
    for s in range(MASK_BITS + 10):
        seqr.offer({"seq": s, "event_id": f"e{s}"}, applied.append)
    seqr.offer({"seq": 1, "event_id": "e1"}, applied.append)
    assert len(applied) == MASK_BITS + 10 and seqr.counts.stale == 1


def drained(evs: list[Event], share: int = 4) -> list[Event]:
    """An edge agent's backlog drain: oldest first, but every ``share``-th send slot takes the newest left."""
    lo, hi, out = 0, len(evs) - 1, []
    while lo <= hi:
        if len(out) % share == share - 1:
            out.append(evs[hi])
            hi -= 1
        else:
            out.append(evs[lo])
            lo += 1
    return out


def test_a_backlog_drained_behind_the_newest_batches_is_scored_late_not_dropped():
    evs = batches(300)
    device = evs[0].record["device_id"]
    proc = SensorAnomalyProcessor(device)
    arrivals = drained(evs)
    got = proc.process(arrivals[:100])
    assert proc.sequence.latest.skipped, "the backlog behind the newest batches is awaited"
    proc = decode_processor(encode_processor(proc, device), SensorAnomalyProcessor(device))
    got += proc.process(arrivals[100:]) + proc.flush()
    assert sorted(scores(got)) == sorted(e.record["event_id"] for e in evs)
    c = proc.sequence.counts
    assert c.stale == 0 and c.late == c.gaps > 0 and not proc.sequence.latest.skipped
    assert proc.process(drained(evs)) == [] and proc.sequence.counts.stale == len(evs) - MASK_BITS


def test_separate_gaps_beyond_the_bound_forget_the_smallest_and_count_it():
    seqr = Sequencer(reorder=0)
    applied = []

    def offer(s: int) -> None:
        seqr.offer({"seq": s, "event_id": f"e{s}"}, applied.append)

    for s in [0, 10] + list(range(13, 13 + 3 * SKIPPED_RUNS, 3)):  # a run of 9 skipped, then runs of 2
        offer(s)
    assert len(seqr.skipped) == SKIPPED_RUNS and seqr.counts.forgotten == 2 and seqr.skipped[0] == [1, 9]
    offer(5)
    offer(12)  # in the run forgotten: a repeat as far as the sequencer can tell
    offer(5)
    assert applied[-1]["seq"] == 5 and seqr.counts.late == 1 and seqr.counts.stale == 2
    assert seqr.skipped[:2] == [[1, 4], [6, 9]]


def test_a_device_that_numbers_from_zero_again_is_scored_and_counted_as_a_reset():
    evs = batches(300)
    device = evs[0].record["device_id"]
    resets = REGISTRY.get_sample_value("eddyline_sequence_resets_total", {"flow": "sensor-anomaly"}) or 0.0
    proc = SensorAnomalyProcessor(device)
    proc.process(evs[:200])
    again = [Event(e.topic, e.key, {**e.record, "seq": i, "event_id": f"boot2-{i}"}) for i, e in enumerate(evs[200:])]
    assert sorted(scores(proc.process(again))) == sorted(e.record["event_id"] for e in again)
    assert proc.process(evs[50:60] + again[:5]) == []  # repeats, from before and after the reset
    c = proc.sequence.counts
    assert c.resets == 1 and c.gaps == 0 and c.stale + c.duplicates == 15
    assert REGISTRY.get_sample_value("eddyline_sequence_resets_total", {"flow": "sensor-anomaly"}) == resets + 1


def test_one_wild_number_neither_blinds_the_device_nor_counts_gaps():
    evs = batches(40)
    device = evs[0].record["device_id"]
    proc = SensorAnomalyProcessor(device)
    proc.process(evs[:10])
    assert list(scores(proc.process([Event(evs[10].topic, device, {**evs[10].record, "seq": 10**15})])))
    proc.flush()
    assert sorted(scores(proc.process(evs[10:]))) == sorted(e.record["event_id"] for e in evs[10:])
    c = proc.sequence.counts
    assert c.gaps == 0 and c.resets == 2 and proc.sequence.hwm == evs[-1].record["seq"]
    assert proc.process(evs[5:]) == []


def test_a_time_based_start_is_applied_at_once_and_a_restart_above_it_is_a_reset():
    evs = batches(20)
    device = evs[0].record["device_id"]
    start = 1_700_000_000_000 << 20
    numbered = [Event(e.topic, e.key, {**e.record, "seq": start + i}) for i, e in enumerate(evs)]
    proc = SensorAnomalyProcessor(device)
    assert [len(scores(proc.process([e]))) for e in numbered[:10]] == [1] * 10
    restarted = [Event(e.topic, e.key, {**e.record, "seq": start + (1 << 20) * 60_000 + i}) for i, e in
                 enumerate(evs[10:])]
    assert [len(scores(proc.process([e]))) for e in restarted] == [1] * 10
    assert proc.sequence.counts.gaps == 0 and proc.sequence.counts.resets == 1


def test_a_snapshot_from_before_runs_and_resets_still_restores():
    evs = batches(200)
    device = evs[0].record["device_id"]
    proc = SensorAnomalyProcessor(device)
    first = proc.process(evs[:100])
    state = proc.snapshot()
    old = {k: v for k, v in proc.sequence.latest.snapshot().items() if k not in ("skipped", "newest")}
    state["sequence"] = {**old, "counts": old["counts"][:4]}  # one sequence for the device, whoever sent
    restored = SensorAnomalyProcessor(device)
    restored.restore(state)
    assert restored.process([evs[3], evs[99]]) == []
    assert plain(restored.process(evs[100:])) == plain(SensorAnomalyProcessor(device).process(evs)[len(first):])
    assert restored.sequence.latest.skipped == [] and restored.sequence.counts.resets == 0
    assert list(restored.sequence.by_producer) == [evs[0].record["producer"]], "its producer took it over"


def numbered(evs: list[Event], producer: str, start: int) -> list[Event]:
    return [Event(e.topic, e.key, {**e.record, "producer": producer, "seq": start + i, "event_id": f"{producer}/{i}"})
            for i, e in enumerate(evs)]


def test_two_producers_numbering_one_device_each_their_own_way_are_sequenced_apart():
    """An edge agent and a gateway client send for one device, each numbering from 0, the gateway five batches
    behind: in one sequence, every gateway batch was a number already applied with older readings, and was
    dropped as a repeat."""
    evs = batches(200)
    device = evs[0].record["device_id"]
    agent = numbered(evs[0::2], "eddyline-edge/0.1.0@press-7", 0)
    gateway = numbered(evs[1::2], "gateway/plant-7", 0)
    arrivals = agent[:5] + [e for pair in zip(agent[5:], gateway) for e in pair] + gateway[-5:]
    proc = SensorAnomalyProcessor(device)
    got = proc.process(arrivals) + proc.flush()
    assert sorted(scores(got)) == sorted(e.record["event_id"] for e in arrivals)
    assert proc.process([agent[3], gateway[3], agent[90], gateway[90]]) == [], "repeats of either are repeats"
    c = proc.sequence.counts
    assert c.dropped == 4 and c.gaps == c.late == c.resets == 0
    assert not any(s.unsequenced for s in proc.sequence.by_producer.values())


def test_two_time_based_producers_of_one_device_are_not_resets():
    evs = batches(40)
    device = evs[0].record["device_id"]
    start = 1_700_000_000_000 << 20
    a, b = numbered(evs[0::2], "press-line-a", start), numbered(evs[1::2], "press-line-b", start + (5 << 20))
    proc = SensorAnomalyProcessor(device)
    got = proc.process([e for pair in zip(a, b) for e in pair])
    assert len(scores(got)) == 40 and proc.sequence.counts.resets == 0 and proc.sequence.counts.gaps == 0


def test_a_device_with_a_new_producer_at_every_start_keeps_a_bounded_state_and_loses_no_batch():
    evs = batches(5 * 3 * PRODUCERS)
    device = evs[0].record["device_id"]
    proc = SensorAnomalyProcessor(device)
    got = []
    for start in range(len(evs) // 5):  # each numbers on from where the last stopped: held as joined mid-sequence
        got += proc.process(numbered(evs[5 * start:5 * start + 5], f"agent-boot-{start}", 1000 + 5 * start))
    assert list(proc.sequence.by_producer) == [f"agent-boot-{i}" for i in range(2 * PRODUCERS, 3 * PRODUCERS)]
    got += proc.flush()
    assert sorted(scores(got)) == sorted(f"agent-boot-{i // 5}/{i % 5}" for i in range(len(evs)))
    restored = decode_processor(encode_processor(proc, device), SensorAnomalyProcessor(device))
    assert restored.snapshot()["sequence"] == proc.snapshot()["sequence"]
