"""A flow whose processor emits an invalid output for every third input, run by ``test_flow_topics``.

``python -m tests.integration.invalid_output_flow ENGINE STATE_DIR``, Kafka settings from the environment.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from schemas import ANOMALY_SCORE, SENSOR_BATCH
from streams.processor import Emit, Event, FlowSpec, Processor

OUTPUT = "scores.anomaly"


class EveryThirdInvalid(Processor):
    """One score event per input; every third carries a threshold that is not a number."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id

    def process(self, events: Sequence[Event]) -> list[Emit]:
        out = []
        for e in events:
            rec = e.record
            threshold: Any = "high" if rec["seq"] % 3 == 0 else 0.5
            out.append(Emit(OUTPUT, self.device_id, ANOMALY_SCORE, {
                "event_id": f"score-{rec['event_id']}", "event_time": rec["event_time"], "producer": "test",
                "source_event_id": rec["event_id"], "device_id": self.device_id, "model": "none",
                "threshold": threshold, "series": []}))
        return out

    def params(self) -> dict[str, Any]:
        return {"device_id": self.device_id}


def spec() -> FlowSpec:
    return FlowSpec(name="invalid-output", inputs={"sensor.readings": SENSOR_BATCH}, outputs={OUTPUT: ANOMALY_SCORE},
                    make_processor=EveryThirdInvalid, key=lambda e: e.record["device_id"])


def main(engine: str, state_dir: Path) -> None:
    from connectors.kafka import KafkaSettings

    if engine == "faust":
        from streams.engines.faust import run as run_faust

        run_faust(spec(), KafkaSettings(), state_dir=state_dir)
    else:
        from datetime import timedelta

        from streams.engines.bytewax import run

        run(spec(), KafkaSettings(), state_dir=state_dir, epoch_interval=timedelta(seconds=0.5))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
