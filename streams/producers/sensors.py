"""Publishing simulated devices to ``sensor.readings`` at a steady rate, with malformed messages mixed in."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from connectors.kafka import EventProducer, KafkaSettings, create_topics
from schemas import SENSOR_BATCH
from schemas.topics import dlq_topic
from streams.producers import stop_on_signal
from streams.producers.simulator import SENSORS, InjectedAnomaly, SensorSimulator, malformed_messages

TOPIC = "sensor.readings"


@dataclass
class ProduceStats:
    """What a sensor producer sent.

    Parameters
    ----------
    messages
        ``sensor_batch`` messages produced.
    readings
        Readings in them.
    bad
        Malformed messages produced (each must end in ``dlq.sensor.readings``).
    injected
        Anomalies the simulator injected so far.
    """

    messages: int = 0
    readings: int = 0
    bad: int = 0
    injected: int = 0

    @property
    def events(self) -> int:
        """Readings plus malformed messages: what the flow must account for."""
        return self.readings + self.bad


class SensorProducer:
    """Publishes simulated devices to ``sensor.readings`` at a steady rate, with malformed messages spread among them.

    Parameters
    ----------
    settings
        Kafka settings; the topic and its dead-letter topic are created if missing.
    devices
        Simulated devices.
    rate
        Readings per second across all devices; 0 for as fast as possible.
    anomaly_rate, readings_per_message, seed, on_injected
        As for ``SensorSimulator``: without ``on_injected`` the anomalies are kept in ``sim.injected``.
    bad_events
        Malformed messages to mix in (all are sent, even when the run stops early).
    """

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        devices: int = 10,
        rate: float = 2000.0,
        anomaly_rate: float = 0.002,
        bad_events: int = 0,
        readings_per_message: int = 50,
        seed: int = 7,
        on_injected: Callable[[InjectedAnomaly], None] | None = None,
    ) -> None:
        self.settings = settings
        self.rate = rate
        per_reading_ms = 1000.0 * devices * len(SENSORS) / rate if rate > 0 else 1000.0
        self.sim = SensorSimulator(
            devices=devices, readings_per_message=readings_per_message, interval_ms=per_reading_ms,
            anomaly_rate=anomaly_rate, start_ms=int(time.time() * 1000), seed=seed, stagger=True,
            on_injected=on_injected,
        )
        self.bad = malformed_messages(bad_events, seed=seed)
        self.stats = ProduceStats()
        self.producer = EventProducer(settings)
        self.closed = False

    def run(
        self,
        *,
        count: int | None = None,
        duration: float | None = None,
        stop: threading.Event | None = None,
        on_progress: Callable[[ProduceStats], None] | None = None,
    ) -> ProduceStats:
        """Produce until ``count`` messages, ``duration`` seconds or ``stop``; all malformed ones get sent.

        Parameters
        ----------
        count
            Messages to produce.
        duration
            Seconds to produce for.
        stop
            Set it to stop from another thread or a signal handler; a wait for the next batch's time ends at once.
        on_progress
            Called about four times a second with the stats so far.
        """
        create_topics(self.settings, [TOPIC, dlq_topic(TOPIC)])
        stop = stop or threading.Event()
        per_msg = self.sim.readings_per_batch
        planned = count or (int(duration * self.rate / per_msg) if duration and self.rate > 0 else None)
        spacing = max(1, (planned or 20 * (len(self.bad) + 1)) // (len(self.bad) + 1))
        start = time.monotonic()
        last_progress = 0.0
        records = iter(self.sim)
        while True:
            now = time.monotonic()
            if (count is not None and self.stats.messages >= count) or (duration is not None and now - start >= duration):
                break
            if stop.is_set():
                break
            record = next(records)  # drawn only to be sent: its injected anomalies are then in the readings produced
            if self.rate > 0:  # live: a batch leaves when its last reading's time has come, at the asked rate
                wait = self.sim.due_s(record) - time.time()
                if wait > 0:
                    stop.wait(wait)  # stopped meanwhile: it is still sent, since the truth has its anomalies
            self.producer.produce(TOPIC, SENSOR_BATCH, record, key=record["device_id"])
            self.stats.messages += 1
            self.stats.readings += per_msg
            if self.stats.bad < len(self.bad) and self.stats.messages % spacing == 0:
                self._send_bad()
            if on_progress is not None and now - last_progress >= 0.25:
                last_progress = now
                self.stats.injected = self.sim.injected_count
                on_progress(self.stats)
        while self.stats.bad < len(self.bad):
            self._send_bad()
        self.producer.flush(60.0)
        self.stats.injected = self.sim.injected_count
        return self.stats

    def close(self, timeout: float = 60.0) -> None:
        """Flush what is still queued and close the Kafka client (``DeliveryError`` if some was not delivered).

        Parameters
        ----------
        timeout
            Seconds to wait for acknowledgements.
        """
        if not self.closed:
            self.closed = True
            self.producer.close(timeout)

    def __enter__(self) -> SensorProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send_bad(self) -> None:
        _reason, value = self.bad[self.stats.bad]
        self.producer.produce_raw(TOPIC, value, key=f"bad-{self.stats.bad}")
        self.stats.bad += 1


@contextmanager
def _truth(path: Path | None) -> Iterator[Callable[[InjectedAnomaly], None]]:
    """Where ``produce`` puts each anomaly as it is injected: into the truth file, a JSON list of ``InjectedAnomaly``
    fields closed however the run ends, or nowhere when none was asked for. Kept until the end of a run of months,
    they grew by some 100 MB a day."""
    if path is None:
        yield lambda anomaly: None
        return
    with path.open("w") as f:
        sep = "["

        def write(anomaly: InjectedAnomaly) -> None:
            nonlocal sep
            f.write(f"{sep}\n{json.dumps(asdict(anomaly))}")
            sep = ","

        try:
            yield write
        finally:
            f.write("[]\n" if sep == "[" else "\n]\n")


def produce(
    settings: KafkaSettings,
    *,
    devices: int,
    rate: float,
    count: int | None,
    duration: float | None,
    anomaly_rate: float,
    bad_events: int,
    truth_path: Path | None = None,
    progress: bool = False,
) -> ProduceStats:
    """Run a ``SensorProducer`` once: the ``eddyline produce sensors`` command.

    Parameters
    ----------
    settings, devices, rate, anomaly_rate, bad_events
        As for ``SensorProducer``.
    count
        Stop after this many messages.
    duration
        Stop after this many seconds.
    truth_path
        Write the injected anomalies here as JSON, for scoring a run afterwards.
    progress
        Show a progress line on the terminal.
    """
    with stop_on_signal() as stop, _truth(truth_path) as on_injected, SensorProducer(
            settings, devices=devices, rate=rate, anomaly_rate=anomaly_rate, bad_events=bad_events,
            on_injected=on_injected) as producer:
        stats = _run(producer, count, duration, progress, stop)
    if stop.is_set():
        print("produce sensors stopped" + (f"; truth of what was sent in {truth_path}" if truth_path else ""),
              file=sys.stderr)
    return stats


def _run(producer: SensorProducer, count: int | None, duration: float | None, progress: bool,
         stop: threading.Event) -> ProduceStats:
    if progress:
        from rich.progress import Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description}"), TimeElapsedColumn(), transient=True) as bar:
            task = bar.add_task("producing")

            def show(s: ProduceStats) -> None:
                bar.update(task, description=f"producing: {s.messages} messages, {s.readings} readings, "
                                             f"{s.injected} anomalies injected")

            return producer.run(count=count, duration=duration, stop=stop, on_progress=show)
    return producer.run(count=count, duration=duration, stop=stop)
