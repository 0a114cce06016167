"""The runnable flows (``eddyline run FLOW``): one module per flow, each building a ``FlowSpec``.

Each entry builds its flow from settings, with the side sinks that flow feeds (dashboards). Scoring flows only
emit alerts; the notify flow delivers them, with its own consumer loop rather than an engine (``SERVICES``).
Modules are imported inside each builder so that asking for one flow never loads another's models, and importing
this registry loads none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from connectors.kafka import KafkaSettings
    from streams.processor import FlowSpec


def _anomaly() -> FlowSpec:
    from connectors.config import ConfigError
    from models.anomaly import DEFAULT_DETECTOR, DETECTORS
    from streams.flows.sensor_anomaly import sensor_anomaly_flow
    from streams.runtime import RuntimeSettings
    from streams.sinks.sensor import sensor_metrics_sink

    runtime = RuntimeSettings()
    detector = runtime.detector or DEFAULT_DETECTOR
    if detector not in DETECTORS:  # else the flow starts and fails at the first reading, inside the engine
        raise ConfigError(f"[runtime] detector or EDDYLINE_RUNTIME_DETECTOR: unknown anomaly detector {detector!r}; "
                          f"use one of {', '.join(sorted(DETECTORS))}, or unset it for the default ({DEFAULT_DETECTOR})")
    return sensor_anomaly_flow(detector=detector, packed=runtime.packed_scores, sinks=[sensor_metrics_sink],
                               forget_after_s=runtime.forget_sensor_after_s or None)


def _clicks() -> FlowSpec:
    from streams.flows.retraining import flow

    return flow()


def _drift() -> FlowSpec:
    from streams.flows.drift import flow
    from streams.sinks.drift import drift_metrics_sink

    spec = flow()
    spec.sinks.append(drift_metrics_sink)
    return spec


def _model_security() -> FlowSpec:
    from streams.flows.model_security import ModelSecuritySettings, flow
    from streams.sinks.model_security import model_security_metrics_sink

    spec = flow(ModelSecuritySettings().limits())
    spec.sinks.append(model_security_metrics_sink)
    return spec


def _quality() -> FlowSpec:
    from streams.flows.names import MODEL_NAME
    from streams.flows.quality import flow
    from streams.sinks.quality import quality_metrics_sink

    spec = flow(MODEL_NAME)
    spec.sinks.append(quality_metrics_sink)
    return spec


def _audio() -> FlowSpec:
    from streams.flows.audio import AudioSettings, audio_flow
    from streams.sinks.sentiment import sentiment_metrics_sink

    return audio_flow(AudioSettings().flow_config(), sinks=[sentiment_metrics_sink])


def _sentiment() -> FlowSpec:
    from streams.flows.audio import AudioSettings, sentiment_flow
    from streams.sinks.sentiment import sentiment_metrics_sink

    return sentiment_flow(AudioSettings().flow_config(), sinks=[sentiment_metrics_sink])


def _fleet() -> FlowSpec:
    from streams.flows.fleet import flow
    from streams.sinks.fleet import fleet_metrics_sink

    return flow(sinks=[fleet_metrics_sink])


FLOWS: dict[str, Callable[[], FlowSpec]] = {
    "anomaly": _anomaly,
    "audio": _audio,
    "sentiment": _sentiment,
    "clicks": _clicks,
    "drift": _drift,
    "quality": _quality,
    "model-security": _model_security,
    "fleet": _fleet,
}


def _notify() -> Callable[[KafkaSettings], None]:
    from streams.flows.notify import run_notify

    return run_notify


# flows that run their own consumer loop (commits after each side effect), not on an engine
SERVICES: dict[str, Callable[[], Callable[[KafkaSettings], None]]] = {"notify": _notify}


def flow_spec(name: str) -> FlowSpec:
    """The flow called ``name``, built from the current settings (TOML file and ``EDDYLINE_*`` environment).

    Parameters
    ----------
    name
        One of ``anomaly``, ``audio``, ``sentiment``, ``clicks``, ``drift``, ``quality``, ``model-security``,
        ``fleet``; an unknown name raises ``ValueError`` listing the known ones.

    Examples
    --------
    >>> from streams.flows import flow_spec
    >>> spec = flow_spec("drift")
    >>> spec.name, sorted(spec.inputs)
    ('drift', ['feedback', 'predictions'])
    >>> flow_spec("anomly")
    Traceback (most recent call last):
    ...
    ValueError: unknown flow 'anomly'; choose one of: anomaly, audio, clicks, drift, fleet, model-security, quality, sentiment
    """
    build = FLOWS.get(name)  # looked up apart from the call: a KeyError inside a builder is not an unknown flow
    if build is None:
        if name in SERVICES:
            raise ValueError(f"{name} runs its own consumer, not on an engine: `eddyline run {name}`")
        raise ValueError(f"unknown flow {name!r}; choose one of: {', '.join(sorted(FLOWS))}")
    return build()
