"""Every parser of outside input, fuzzed with hypothesis: a valid event, a dead letter with a reason, or a
clear error; nothing else, whatever the bytes (benchmarks/fuzz.py has the targets; `eddyline bench fuzz`
runs them longer)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings

from benchmarks.fuzz import OUTCOMES, Tally, Target, inputs, mutate, targets

NAMES = ["avro", "gateway-json", "gateway-ws", "edge-command", "edge-csv", "wav", "toml"]


@pytest.fixture(scope="module")
def by_name() -> Iterator[dict[str, Target]]:
    with targets() as all_targets:
        yield {t.name: t for t in all_targets}


@pytest.mark.parametrize("name", NAMES)
def test_seeds_are_accepted_and_any_input_has_an_allowed_outcome(name: str, by_name: dict[str, Target]) -> None:
    target = by_name[name]
    assert any(target.run(s) == "valid" for s in target.seeds), "the seeds must include valid inputs"
    tally = Tally()

    @settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(inputs(target.seeds))
    def check(data: bytes) -> None:
        outcome = tally.add(target, data, hang_s=float("inf"))
        assert outcome in OUTCOMES, tally.examples[-1]

    check()
    assert tally.counts["inputs"] >= 150 and tally.counts["crashes"] == 0


def test_every_target_is_tested(by_name: dict[str, Target]) -> None:
    assert sorted(by_name) == sorted(NAMES)


def test_mutations_stay_bytes_and_change_the_seed() -> None:
    seed = b"timestamp,sensor,value\n"
    assert mutate(seed, [(3, 5, b"x")]) == seed[:5]
    assert mutate(seed, [(1, 0, b"ab")]) == b"ab" + seed
    assert mutate(b"", [(0, 3, b"\x01"), (2, 0, b"zz")]) == b""
