"""The agent's main loop: sample sources on their intervals, seal batches to disk, send, report health.

One thread does everything. It sleeps in the producer's poll until the next source is due, a batch must
be sealed, or a delivery report arrives, so an idle agent costs next to nothing and there is no lock
around the buffer.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import math
import numbers
import signal
import time
from collections.abc import Iterable, Sized
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from connectors.kafka_log import LogLimit
from edge_agent.batching import BatchEncoder, Batcher
from edge_agent.buffer import DiskBuffer
from edge_agent.deadletters import DeadLetterFile, dead_letter_path
from edge_agent.health import CpuMeter, Heartbeat, health_record, process_rss_bytes
from edge_agent.sender import Sender
from edge_agent.sources import Chunk, Source, build_source
from edge_agent.sources.base import MAX_READINGS_PER_READ
from schemas.catalog import DEVICE_HEALTH, SENSOR_BATCH

if TYPE_CHECKING:
    from connectors.kafka import KafkaSettings
    from edge_agent.settings import EdgeSettings

log = logging.getLogger("edge_agent")


class Agent:
    def __init__(
        self,
        settings: Any,
        producer_conf: dict[str, Any],
        topic: str,
        *,
        sources: list[Source] | None = None,
        version: str | None = None,
        health_topic: str | None = None,
        models: dict[str, Any] | None = None,
    ) -> None:
        """``settings`` is an ``EdgeSettings`` or the plain namespace the lean runtime builds from one;
        ``health_topic`` is the full topic name of health events (None: heartbeats are log lines only);
        ``models`` is the models feed's plan (``launch.models_plan``) when ``[edge.models]`` is enabled."""
        self.settings = settings
        self.version = version or _version()
        self.buffer = DiskBuffer(
            Path(settings.buffer_path),
            settings.device_id,
            max_bytes=int(settings.buffer_max_mb * 2**20),
            min_free_bytes=int(settings.buffer_min_free_mb * 2**20),
            policy=settings.buffer_full_policy,
            sync=settings.buffer_sync,
        )
        self.dead_letters = DeadLetterFile(dead_letter_path(Path(settings.buffer_path)))
        self.encoder = BatchEncoder(settings.device_id, f"eddyline-edge/{self.version}@{settings.device_id}", topic)
        self.batcher = Batcher(settings.batch_max_readings, settings.batch_max_age_s)
        conf = producer_conf
        self.sender = Sender(
            self.buffer,
            conf,
            topic,
            settings.device_id.encode(),
            max_in_flight=settings.send_max_in_flight,
            fresh_share=settings.send_fresh_share,
            stall_s=max(10.0, 2 * settings.send_timeout_s),
            dead_letter=self._refused,
        )
        self.inference = None
        if settings.inference.enabled:
            from edge_agent.inference.local import LocalInference  # onnxruntime only when asked for

            self.inference = LocalInference(settings.inference)
        self.updates = self._feed = None
        if models is not None and self.inference is not None:
            self.updates, self._feed = _follow_models(settings, self.inference, models)
        self.metrics = None
        if settings.metrics_port is not None:
            from edge_agent.metrics import MetricsEndpoint

            self.metrics = MetricsEndpoint(settings.metrics_host, settings.metrics_port)
        self.sampled = 0
        self.errors = 0
        self.unencodable = 0  # batches that could not be encoded or split to fit a message: dead-lettered
        self._stop = False
        self._error_log = LogLimit()
        self._cpu = CpuMeter()
        self._hb_acked = 0
        self._hb_time = time.monotonic()
        self.health_topic = health_topic
        self._hb_seq = 0
        self._started_ms = int(time.time() * 1000)
        self._infer_ms = self._infer_calls = 0.0
        # last: a plug-in may start threads, and no failure after them may leave those keeping a dead agent alive
        self.sources = sources if sources is not None else _build_sources(settings.sources)

    @classmethod
    def from_settings(cls, settings: EdgeSettings, kafka: KafkaSettings, **kw: Any) -> Agent:
        """In-process construction from validated settings (tests, benchmarks); ``run`` uses the lean runtime."""
        from edge_agent.launch import models_plan, producer_conf

        kw.setdefault("health_topic", kafka.topic(settings.health_topic))
        kw.setdefault("models", models_plan(settings, kafka))
        return cls(settings, producer_conf(settings, kafka), kafka.topic(settings.topic), **kw)

    # -- control --------------------------------------------------------------------------------------
    def stop(self, *_: object) -> None:
        self._stop = True

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("signal %s: sealing the open batch and flushing", signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    # -- the loop -------------------------------------------------------------------------------------
    def run(self, duration: float | None = None, shutdown_flush_s: float = 5.0) -> None:
        s = self.settings
        log.info(
            "eddyline-edge %s: device %s, %d sources, buffer %s (%d batches waiting, next seq %d), topic %s",
            self.version,
            s.device_id,
            len(self.sources),
            s.buffer_path,
            self.buffer.depth,
            self.buffer.next_seq,
            self.encoder.topic,
        )
        start = time.monotonic()
        due = [start] * len(self.sources)
        next_hb = start + s.heartbeat_interval_s
        end = start + duration if duration else math.inf
        try:
            while not self._stop:
                now = time.monotonic()
                if now >= end:
                    break
                for i, src in enumerate(self.sources):
                    if due[i] <= now:
                        self._sample(src)
                        due[i] += src.interval_s
                        if due[i] < now:  # fell behind (slow source or suspended): skip, don't burst
                            due[i] = now + src.interval_s
                if self.batcher.due(time.monotonic()):
                    self._seal()
                self.sender.pump()
                if self._feed is not None:
                    self._follow_models()
                if now >= next_hb:
                    self.heartbeat()
                    next_hb = now + s.heartbeat_interval_s
                wake = min(min(due, default=math.inf), self.batcher.deadline() or math.inf, next_hb, end)
                self.sender.poll(min(max(0.0, wake - time.monotonic()), 0.5))
        finally:  # on an error too: what was read gets sealed, and the process can end for systemd to restart it
            self._shutdown(shutdown_flush_s)

    def _sample(self, src: Source) -> None:
        try:
            chunks, more = _pull(src.read(), MAX_READINGS_PER_READ)  # a generator's own errors surface here
        except Exception as exc:  # a plug-in may raise (or return) anything; the agent keeps going
            self._error(f"source {src.name}", exc)
            return
        good = []
        for c in chunks:
            try:
                if self._check(src, c):
                    good.append(c)
            except Exception as exc:  # not a Chunk at all: this one is skipped, the rest of the read kept
                self._error(f"source {src.name}", exc)
        if more or sum(len(c.values) for c in good) > MAX_READINGS_PER_READ:
            good = _first(good, MAX_READINGS_PER_READ)
            self._error(f"source {src.name}", ValueError(
                f"more than {MAX_READINGS_PER_READ} readings in one read; the first kept, the rest dropped "
                "(a read returns the readings since the last one: fix the source or shorten interval_s)"))
        self.sampled += sum(len(c.values) for c in good)
        self.batcher.add(good)

    def _check(self, src: Source, c: Chunk) -> bool:
        """Keep what the schema accepts: one bad reading left in a batch would dead-letter every sensor's."""
        if not isinstance(c.sensor, str) or not c.sensor or not isinstance(c.unit, str | None):
            self._error(f"source {src.name}", ValueError(f"chunk of sensor {c.sensor!r}, unit {c.unit!r}: "
                                                         "the sensor must be a non-empty string, the unit one or None"))
            return False
        if len(c.timestamps) != len(c.values):
            self._error(
                f"source {src.name}",
                ValueError(f"{c.sensor}: {len(c.timestamps)} timestamps for {len(c.values)} values"),
            )
            return False
        if not (_all_finite(c.values) and _all_times(c.timestamps)):
            keep = [i for i, (t, v) in enumerate(zip(c.timestamps, c.values)) if _finite(v) and _time(t)]
            self._error(
                f"source {src.name}",
                ValueError(f"{c.sensor}: {len(c.values) - len(keep)} readings rejected "
                           "(values not finite numbers, or timestamps not integer ms since 1970)"),
            )
            c.timestamps = [c.timestamps[i] for i in keep]
            c.values = [c.values[i] for i in keep]
        return bool(c.values)

    def _seal(self) -> None:
        series = self.batcher.seal()
        if not series:
            return
        scored_by = None
        if self.inference is not None:
            t0 = time.perf_counter()
            try:
                series = self.inference.apply(series, backlog=self.buffer.depth)
                scored_by = self.inference.version if any(c.flags is not None for c in series) else None
            except Exception as exc:  # a model that breaks at run time: the readings still go out, raw
                self._error(f"inference with {self.inference.version}", exc)
            self._infer_ms += (time.perf_counter() - t0) * 1000
            self._infer_calls += 1
        self._store(series, scored_by)

    def _store(self, series: list[Chunk], scored_by: str | None) -> None:
        """Encode and buffer; a batch too large for one Kafka message is stored as two halves (the producer
        would refuse it whole)."""
        n = sum(len(c.values) for c in series)
        seq = self.buffer.next_seq
        try:
            payload = self.encoder.encode(seq, series, scored_by)
        except Exception as exc:  # counted where the operator looks for lost readings, and kept on disk
            self._drop(f"encoding failed: {type(exc).__name__}: {exc}", series, scored_by, f"{n} readings: {exc}")
            return
        if len(payload) > self.sender.max_payload:
            halves = _halves(series)
            if halves is None:
                reason = f"{len(payload)} bytes encoded, more than a Kafka message holds ({self.sender.max_payload})"
                self._drop(reason, series, scored_by, reason)
                return
            for half in halves:
                self._store(half, scored_by)
            return
        self.buffer.append(seq, payload, n, max(c.timestamps[-1] for c in series))

    def _drop(self, reason: str, series: list[Chunk], scored_by: str | None, message: str) -> None:
        self.buffer.count_dropped(sum(len(c.values) for c in series))
        self.unencodable += 1
        self._dead_letter(reason, series, scored_by)
        self._error(f"encoding a batch (its readings go to {self.dead_letters.path})", RuntimeError(message))

    def _refused(self, seq: int, payload: bytes, reason: str) -> None:
        """A stored batch the producer refuses for good: its readings go to the dead letters like any other."""
        try:
            rec = self.encoder.serde.decode(payload, SENSOR_BATCH, check=False)
            series = [Chunk(s["sensor"], s["unit"], s["timestamps"], s["values"], s.get("local_flags"))
                      for s in rec["series"]]
        except Exception:  # kept as it was stored
            self._write_dead_letter(reason, {"device_id": self.settings.device_id, "seq": seq,
                                             "payload_base64": base64.b64encode(payload).decode()})
        else:
            self._dead_letter(reason, series, rec.get("local_model"), seq)

    def _dead_letter(self, reason: str, series: list[Chunk], scored_by: str | None, seq: int | None = None) -> None:
        batch = {
            "device_id": self.settings.device_id, "local_model": scored_by,
            "series": [{"sensor": c.sensor, "unit": c.unit, "timestamps": c.timestamps, "values": c.values,
                        "local_flags": c.flags} for c in series],
        }
        self._write_dead_letter(reason, batch if seq is None else {"seq": seq, **batch})

    def _write_dead_letter(self, reason: str, batch: dict[str, Any]) -> None:
        try:
            self.dead_letters.write(reason, batch)
        except (OSError, TypeError, ValueError) as exc:  # the readings stay counted as dropped
            self._error("writing a dead letter", exc)

    def _follow_models(self) -> None:
        try:
            self._feed.poll()
        except Exception as exc:  # the feed is best effort: the running model stays
            self._error("models feed", exc)
        new = self.updates.step()
        if new is not None:
            self.inference = new

    def _error(self, where: str, exc: BaseException) -> None:
        self.errors += 1
        if self._error_log.due(where):
            log.warning("%s: %s (errors so far: %d; repeats are logged once a minute)", where, exc, self.errors)

    def heartbeat(self) -> Heartbeat:
        now = time.monotonic()
        c = self.sender.counters
        hb = Heartbeat(
            device_id=self.settings.device_id,
            buffer_depth=self.buffer.depth,
            buffer_readings=0,
            buffer_bytes=self.buffer.payload_bytes,
            in_flight=self.sender.in_flight,
            sampled_readings=self.sampled,
            acked_readings=c.acked_readings,
            send_rate=(c.acked_readings - self._hb_acked) / max(now - self._hb_time, 1e-6),
            errors=self.errors + c.failed_sends + c.dead_letters + sum(getattr(s, "errors", 0) for s in self.sources),
            dropped_readings=0,
            cpu_percent=self._cpu.percent(),
            rss_mb=process_rss_bytes() / 2**20,
            health_dropped=c.health_skipped + c.health_failed,
            started_ms=self._started_ms,
            dead_letters=c.dead_letters + self.unencodable,
            rollouts_refused=self.updates.rollouts_refused if self.updates is not None else 0,
        )
        st = self.buffer.stats()
        hb.buffer_readings, hb.dropped_readings = st.readings, st.dropped_readings
        hb.buffer_oldest_age_s = max(0.0, st.oldest_age_s or 0.0)
        self._hb_acked, self._hb_time = c.acked_readings, now
        log.info(hb.line())
        if self.metrics is not None:
            self.metrics.update(hb)
        self._publish_health(hb)
        return hb

    def _publish_health(self, hb: Heartbeat) -> None:
        if self.health_topic is None:
            return
        latency = self._infer_ms / self._infer_calls if self._infer_calls else None
        self._infer_ms = self._infer_calls = 0.0
        record = health_record(
            hb, seq=self._hb_seq, device_class=self.settings.device_class, agent_version=self.version,
            interval_s=self.settings.heartbeat_interval_s, event_time_ms=int(time.time() * 1000),
            model=self._model_info(), inference_latency_ms=latency, clock_offset_ms=self.sender.clock.offset_ms,
        )
        self._hb_seq += 1
        try:
            payload = self.encoder.serde.encode(DEVICE_HEALTH, record, topic=self.health_topic)
        except Exception as exc:
            self._error("health encoding", exc)
            return
        self.sender.send_health(self.health_topic, payload)

    def _model_info(self) -> dict[str, str | None] | None:
        """What the inference layer runs, for the health event (None without local inference)."""
        if self.inference is None:
            return None
        if self.updates is not None:
            return self.updates.info()
        return {"model_version": self.inference.version, "model_state": "running"}

    def _shutdown(self, flush_s: float) -> None:
        _close_sources(self.sources)  # first: should sealing fail too, no plug-in thread outlives the agent
        with contextlib.ExitStack() as closing:  # each closes, last first, whatever failed before it (a read-only disk)
            closing.callback(self.buffer.close)
            if self._feed is not None:
                closing.callback(self._feed.close)
            if self.metrics is not None:
                closing.callback(self.metrics.close)
            closing.callback(self.sender.close)
            self._seal()
            deadline = time.monotonic() + flush_s
            while self.buffer.depth and time.monotonic() < deadline:
                self.sender.pump()
                self.sender.poll(0.1)
            left = self.buffer.depth
            self.heartbeat()
            self.sender.flush_health(1.0)
        log.info("stopped; %d batches stay on disk for the next start", left)


def _build_sources(configs: list[Any]) -> list[Source]:
    """The configured sources; when one cannot be set up, those already built are closed before the error goes on."""
    built: list[Source] = []
    try:
        for cfg in configs:
            built.append(build_source(cfg))
    except BaseException:
        _close_sources(built)
        raise
    return built


def _close_sources(sources: list[Source]) -> None:
    for src in sources:
        try:
            src.close()
        except Exception as exc:
            log.warning("closing source %s: %s", getattr(src, "name", src), exc)


def _pull(read: Iterable[Any], limit: int) -> tuple[list[Any], bool]:
    """The items of one read until they hold ``limit`` readings, and whether it had more: a buggy plug-in's
    endless generator or list of millions must not take the device's memory."""
    chunks: list[Any] = []
    n = 0
    for c in read:
        if n >= limit:
            return chunks, True
        chunks.append(c)
        values = getattr(c, "values", None)
        n += max(1, len(values) if isinstance(values, Sized) else 0)  # an endless run of empty chunks ends too
    return chunks, False


def _first(series: list[Chunk], limit: int) -> list[Chunk]:
    """The first ``limit`` readings of checked chunks."""
    out = []
    for c in series:
        if limit <= 0:
            break
        if len(c.values) > limit:
            c = Chunk(c.sensor, c.unit, c.timestamps[:limit], c.values[:limit])
        out.append(c)
        limit -= len(c.values)
    return out


def _finite(v: object) -> bool:
    """A reading: a real number (not a bool), finite, within what a double holds."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an int beyond a double
        return False


def _all_finite(values: list[Any]) -> bool:
    """``_finite`` for every value, at C speed for the usual list of floats."""
    if set(map(type, values)) <= {float}:
        return all(map(math.isfinite, values))
    return all(map(_finite, values))


def _time(t: object) -> bool:
    """A timestamp the schema takes: integer ms since 1970 that fits a long."""
    return isinstance(t, numbers.Integral) and not isinstance(t, bool) and 0 <= t < 2**63


def _all_times(stamps: list[Any]) -> bool:
    """``_time`` for every timestamp, quickly for the usual list of ints."""
    if set(map(type, stamps)) <= {int}:
        return not stamps or (min(stamps) >= 0 and max(stamps) < 2**63)
    return all(map(_time, stamps))


def _halves(series: list[Chunk]) -> tuple[list[Chunk], list[Chunk]] | None:
    """The readings in two batches of about half each (between sensors where it can); None for one reading.

    A series splits at a multiple of 8 readings when it carries flags, so each half's bitmask is a slice."""
    n = sum(len(c.values) for c in series)
    if len(series) > 1:
        seen = 0
        for cut, c in enumerate(series[:-1], 1):
            seen += len(c.values)
            if 2 * seen >= n:
                break
        return series[:cut], series[cut:]
    [c] = series
    k = len(c.values) // 2
    if c.flags is not None:
        k -= k % 8
    if k == 0:
        return None
    head = Chunk(c.sensor, c.unit, c.timestamps[:k], c.values[:k], None if c.flags is None else c.flags[: k // 8])
    tail = Chunk(c.sensor, c.unit, c.timestamps[k:], c.values[k:], None if c.flags is None else c.flags[k // 8 :])
    return [head], [tail]


def _follow_models(settings: Any, current: Any, models: dict[str, Any]) -> tuple[Any, Any]:
    """The models feed for ``[edge.models]``: its trusted key read now, so a bad key stops the start."""
    from pathlib import Path

    from edge_agent.inference.updates import ModelUpdates, UpdateFeed
    from schemas.signing import SignatureError, Verifier

    try:
        verifier = Verifier(Path(settings.models.public_key).read_bytes())
    except (OSError, SignatureError) as exc:
        raise RuntimeError(f"[edge.models] public_key: {exc}") from None
    cache = Path(settings.buffer_path).with_name("edge-model.avro")
    updates = ModelUpdates(settings.device_id, settings.device_class, settings.inference, verifier, current, cache)
    return updates, UpdateFeed(models["consumer"], models["models_topic"], models["rollouts_topic"], updates)


def _version() -> str:
    import edge_agent

    return edge_agent.__version__
