"""Runtime settings: where flow state lives, how often it is checkpointed, where metrics are served."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from connectors.config import Section

KEEP_DECODED_S = 300.0  # 120 s restored most of 100,000 devices' batches (BENCHMARKS.md, Fleet scale)
DECODED_BYTES = 2 << 30  # 100,000 default-detector devices stay decoded in about 1.5 GB
POLL_LINGER_MS = 0.0  # off: no linger lowered p99 or CPU per live batch (BENCHMARKS.md, Fleet scale, "Linger")


class RuntimeSettings(Section):
    """``[runtime]`` / ``EDDYLINE_RUNTIME_*``: where state lives and how often it is checkpointed."""

    toml_table: ClassVar[str] = "runtime"
    model_config = SettingsConfigDict(env_prefix="EDDYLINE_RUNTIME_", extra="forbid")

    state_dir: Path = Field(Path(".eddyline/state"), description="Checkpoints, one folder per flow.")
    epoch_interval_s: float = Field(2.0, gt=0, description="Seconds between checkpoints; a crash replays at most this.")
    batch_size: int = Field(500, gt=0, description="Kafka messages per poll.")
    poll_linger_ms: float = Field(POLL_LINGER_MS, ge=0, description="Bytewax: a partition holds a poll's messages "
                                  "this long for more (up to batch_size) and hands them on together, so a live flow "
                                  "pays its per-poll costs once per larger batch; adds up to this much latency at a "
                                  "light load. 0 (off) by default: 5, 10 and 20 ms lowered neither p99 nor CPU per "
                                  "live batch beyond the noise (BENCHMARKS.md, Fleet scale, fourth pass and "
                                  "\"Linger, with the light harness\").")
    idle_evict_s: float = Field(600.0, ge=0, description="Seconds of silence after which a key's state leaves "
                                "memory for the state folder (reloaded when it speaks again); 0: never.")
    state_buckets: int = Field(1024, ge=0, description="Bytewax: group the state keys (devices) into this many "
                               "buckets by a stable hash, so a restart resumes at most this many keys and loads only "
                               "recently changed states (older ones load when their device speaks); 0: one key per "
                               "device. Chosen by `eddyline bench scale --buckets 0,1024` (BENCHMARKS.md).")
    keep_decoded_s: float = Field(KEEP_DECODED_S, ge=0, description="Bytewax buckets: seconds a silent device's "
                                  "processor stays decoded after its last event, so a device that reports every "
                                  "few minutes is not restored from its bytes at each batch; 0: dropped at the next "
                                  "checkpoint.")
    decoded_bytes: int = Field(DECODED_BYTES, gt=0, description="Bytewax buckets: about this much memory per "
                               "process for decoded processors (shared evenly by the buckets; a default-detector "
                               "device takes ~15 KB, one with seasonal tables ~75 KB); beyond it the least recently "
                               "spoken are dropped to their bytes. Size it to the worker's memory.")
    metrics_port: int | None = Field(None, description="Serve Prometheus metrics on metrics_host:PORT.")
    metrics_host: str = Field("127.0.0.1", description="Where the metrics endpoint listens; 0.0.0.0 in containers.")
    lag_interval_s: float | None = Field(
        5.0, gt=0, description="Seconds between consumer-lag readings of a flow process; unset: no lag monitor."
    )
    detector: str | None = Field(None, description="Anomaly detector for the sensor flow (default: the best one).")
    packed_scores: bool = Field(False, description="Sensor flow: write scores packed (float32 bytes, anomaly_score "
                                "v2; schemas.scores.series_scores reads both) instead of one Avro double each.")
    idle_retention_s: float = Field(30 * 86400.0, ge=0, description="An evicted key's state is deleted this long "
                                    "after it was last written (a conversation's, a retired device's): from the "
                                    "Bytewax idle store, or from the Faust table and changelog (a tombstone), so "
                                    "stored states follow the keys still in use; 0: kept for ever.")
    forget_sensor_after_s: float = Field(86400.0, ge=0, description="Sensor flow: a sensor silent this long behind "
                                         "its device's newest reading (event time) is forgotten and its open "
                                         "incident resolved, so renamed sensors do not grow state; 0: never.")

    def bytewax_options(self) -> dict[str, Any]:
        """The keyword arguments these settings give ``bytewax.run`` and ``bytewax_cluster.run_cluster``: one
        translation, so the CLI and a cluster process started directly read the same settings the same way."""
        return {
            "epoch_interval": timedelta(seconds=self.epoch_interval_s),
            "batch_size": self.batch_size,
            "lag_interval_s": self.lag_interval_s,
            "idle_after": timedelta(seconds=self.idle_evict_s) if self.idle_evict_s else None,
            "idle_retention_s": self.idle_retention_s or None,
            "buckets": self.state_buckets,
            "linger": timedelta(milliseconds=self.poll_linger_ms),
            "keep_decoded": timedelta(seconds=self.keep_decoded_s),
            "decoded_bytes": self.decoded_bytes,
        }

    def faust_options(self) -> dict[str, Any]:
        """The keyword arguments these settings give ``streams.engines.faust.run`` (and ``run_worker``'s and
        ``build_app``'s share of them): the one translation for ``eddyline run --engine faust`` and the module's
        own entry point. 0 seconds of idle eviction means never."""
        return {
            "batch_size": self.batch_size,
            "lag_interval_s": self.lag_interval_s,
            "idle_after_s": self.idle_evict_s or None,
            "idle_retention_s": self.idle_retention_s or None,
        }


BYTEWAX_DEFAULTS: Mapping[str, Any] = MappingProxyType(RuntimeSettings.model_construct().bytewax_options())
"""``RuntimeSettings``' own defaults (no environment, no file) as Bytewax options: the defaults of
``bytewax.run``, ``run_cluster`` and ``build_dataflow``, so a flow started directly gets what ``eddyline run``
gets with nothing configured (1,024 state buckets included), and each default is written once, here."""


FAUST_DEFAULTS: Mapping[str, Any] = MappingProxyType(RuntimeSettings.model_construct().faust_options())
"""``RuntimeSettings``' own defaults as Faust options: the defaults of ``streams.engines.faust``'s ``run``,
``run_worker`` and ``build_app``, written once, here, as ``BYTEWAX_DEFAULTS`` are for Bytewax."""
