"""A Faust worker of the anomaly flow whose first side-sink write holds until told to go on.

``python -m tests.integration.faust_window_worker FOLDER STATE_DIR BATCH``: the first batch that emits
anything stays in flight (outputs sent, nothing acknowledged) until ``FOLDER/release`` exists, so a test
can make a rebalance happen around it and kill the worker inside the window. ``FOLDER/held`` says it holds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

from connectors.kafka import KafkaSettings
from streams.engines.faust import ensure_topics, run_worker
from streams.flows import flow_spec
from streams.processor import Emit


class HoldFirstWrite:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def write(self, emits: Sequence[Emit]) -> None:
        held = self.folder / "held"
        if not held.exists():
            held.touch()
            while not (self.folder / "release").exists():
                time.sleep(0.05)

    def close(self) -> None:
        pass


def main() -> None:
    folder, state, batch = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    spec = flow_spec("anomaly")
    spec.sinks = [lambda: HoldFirstWrite(folder)]
    settings = KafkaSettings()
    ensure_topics(spec, settings)
    raise SystemExit(run_worker(spec, settings, state_dir=state, batch_size=batch, loglevel="INFO"))


if __name__ == "__main__":
    main()
