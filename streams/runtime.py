"""Runtime settings and the registry of runnable flows (``eddyline run FLOW``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from connectors.config import Section
from streams.processor import FlowSpec


class RuntimeSettings(Section):
    """``[runtime]`` / ``EDDYLINE_RUNTIME_*``: where state lives and how often it is checkpointed."""

    toml_table: ClassVar[str] = "runtime"
    model_config = SettingsConfigDict(env_prefix="EDDYLINE_RUNTIME_", extra="ignore")

    state_dir: Path = Field(Path(".eddyline/state"), description="Checkpoints, one folder per flow.")
    epoch_interval_s: float = Field(2.0, gt=0, description="Seconds between checkpoints; a crash replays at most this.")
    batch_size: int = Field(500, gt=0, description="Kafka messages per poll.")
    metrics_port: int | None = Field(None, description="Serve Prometheus metrics on metrics_host:PORT.")
    metrics_host: str = Field("127.0.0.1", description="Where the metrics endpoint listens; 0.0.0.0 in containers.")
    detector: str | None = Field(None, description="Anomaly detector for the sensor flow (default: the best one).")


def _anomaly() -> FlowSpec:
    from connectors.alerting import AlertDispatcher
    from models.anomaly import DEFAULT_DETECTOR
    from streams.sensor_anomaly import sensor_anomaly_flow
    from streams.sensor_metrics import sensor_metrics_sink

    detector = RuntimeSettings().detector or DEFAULT_DETECTOR
    return sensor_anomaly_flow(detector=detector, sinks=[AlertDispatcher.from_settings, sensor_metrics_sink])


def _clicks() -> FlowSpec:
    from streams.retraining import flow

    return flow()


def _drift() -> FlowSpec:
    from connectors.alerting import AlertDispatcher
    from streams.drift import flow
    from streams.drift_metrics import drift_metrics_sink

    spec = flow()
    spec.sinks.extend([AlertDispatcher.from_settings, drift_metrics_sink])
    return spec


def _quality() -> FlowSpec:
    from connectors.influx import InfluxSettings
    from streams.clicks import MODEL_NAME
    from streams.quality import flow

    influx = InfluxSettings()
    return flow(MODEL_NAME, influx_settings=influx if influx.enabled else None)


def _audio() -> FlowSpec:
    from connectors.alerting import AlertDispatcher
    from streams.audio import AudioSettings, audio_flow
    from streams.sentiment_metrics import sentiment_metrics_sink

    return audio_flow(AudioSettings().flow_config(), sinks=[AlertDispatcher.from_settings, sentiment_metrics_sink])


def _sentiment() -> FlowSpec:
    from connectors.alerting import AlertDispatcher
    from streams.audio import AudioSettings, sentiment_flow
    from streams.sentiment_metrics import sentiment_metrics_sink

    return sentiment_flow(AudioSettings().flow_config(), sinks=[AlertDispatcher.from_settings, sentiment_metrics_sink])


FLOWS: dict[str, Callable[[], FlowSpec]] = {
    "anomaly": _anomaly,
    "audio": _audio,
    "sentiment": _sentiment,
    "clicks": _clicks,
    "drift": _drift,
    "quality": _quality,
}


def flow_spec(name: str) -> FlowSpec:
    try:
        return FLOWS[name]()
    except KeyError:
        raise ValueError(f"unknown flow {name!r}; choose one of: {', '.join(sorted(FLOWS))}") from None
