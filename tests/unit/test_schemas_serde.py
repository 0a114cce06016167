"""AvroSerde: every event type round-trips; bad bytes and bad records fail with a reason and a useful message."""

from __future__ import annotations

import io
import math
import struct

import fastavro
import pytest

from schemas import (
    AvroSerde,
    DecodeError,
    LocalRegistry,
    UnknownSchemaError,
    ValidationError,
    catalog,
    derive_id,
    event_types,
    new_id,
)
from schemas import wire

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in ms


def _examples() -> dict[str, dict]:
    pcm = struct.pack("<8h", 0, 1200, 2400, 1200, 0, -1200, -2400, -1200)
    return {
        catalog.SENSOR_BATCH: {
            "event_id": new_id(), "event_time": T0, "producer": "eddyline-edge/0.1.0@pi-kitchen",
            "device_id": "pi-kitchen", "seq": 41,
            "series": [
                {"sensor": "temperature", "unit": "degC", "timestamps": [T0, T0 + 1000, T0 + 2000],
                 "values": [21.5, 21.625, 21.75], "local_flags": b"\x04"},  # the device's model flagged the third
                {"sensor": "humidity", "unit": None, "timestamps": [T0], "values": [0.43], "local_flags": None},
            ],
            "local_model": "residual_w16_int8",
        },
        catalog.AUDIO_CHUNK: {
            "event_id": new_id(), "event_time": T0, "producer": "gateway", "conversation_id": "call-7",
            "seq": 3, "sample_rate": 16000, "offset_ms": 1500, "pcm": pcm, "final": False,
        },
        catalog.TRANSCRIPT: {
            "event_id": derive_id("call-7", 0), "event_time": T0, "producer": "flow.speech",
            "conversation_id": "call-7", "segment": 0, "start_ms": 0, "end_ms": 2300,
            "text": "Hello, I'd like to cancel my order.", "language": "en", "confidence": -0.21,
            "model": "whisper-tiny.en",
        },
        catalog.CLICK: {
            "event_id": new_id(), "event_time": T0, "producer": "web", "user_id": "u-17", "item_id": "sku-9",
            "action": "CLICK", "impression_id": "imp-3", "position": 2, "rating": None,
            "context": {"page": "home", "device": "mobile"},
        },
        catalog.PREDICTION: {
            "event_id": new_id(), "event_time": T0, "producer": "flow.clicks", "model_name": "ctr",
            "model_version": "7", "subject_id": "u-17", "item_id": "sku-9", "features_digest": "ab12cd",
            "features": {"hour": 14.0, "position": 2.0}, "score": 0.137, "label": None, "latency_ms": 0.42,
            "error": None,
        },
        catalog.FEEDBACK: {
            "event_id": new_id(), "event_time": T0 + 5000, "producer": "web", "model_name": "ctr",
            "prediction_id": "p-1", "label": 1.0,
        },
        catalog.ANOMALY_SCORE: {
            "event_id": derive_id("anomaly", "e-1"), "event_time": T0, "producer": "flow.anomaly",
            "source_event_id": "e-1", "device_id": "pi-kitchen", "model": "ewma", "threshold": 0.99,
            "series": [{"sensor": "temperature", "timestamps": [T0, T0 + 1000], "scores": [0.1, 0.998],
                        "packed_timestamps": None, "packed_scores": None}],
        },
        catalog.SENTIMENT_SCORE: {
            "event_id": derive_id("sentiment", "t-1"), "event_time": T0, "producer": "flow.sentiment",
            "source_event_id": "t-1", "conversation_id": "call-7", "segment": 0,
            "text": "This is the third time it broke.", "label": "negative", "score": -0.71,
            "probabilities": {"negative": 0.81, "neutral": 0.15, "positive": 0.04}, "rolling_score": -0.5,
            "model": "minilm-sentiment-1", "emotion": "anger",
            "emotions": {"anger": 0.75, "fear": 0.25, "joy": 0.0, "sadness": 0.0, "neutral": 0.0},
            "emotion_model": "nrc-emotion-lexicon",
        },
        catalog.ROUTING_RECOMMENDATION: {
            "event_id": derive_id("routing", "call-7", 3), "event_time": T0, "producer": "flow.sentiment",
            "source_event_id": "t-3", "conversation_id": "call-7", "segment": 3, "action": "escalate_supervisor",
            "previous_action": "keep", "rule": "angry",
            "reason": "anger in 3 of the last 4 segments (furious, ridiculous), rolling sentiment -0.62",
            "rolling_score": -0.62, "trend": -0.9, "emotion": "anger", "emotion_share": 0.75,
            "emotion_model": "nrc-emotion-lexicon",
        },
        catalog.DRIFT: {
            "event_id": new_id(), "event_time": T0, "producer": "flow.drift", "model_name": "ctr",
            "feature": "hour", "kind": "DATA", "detector": "ks", "statistic": 0.31, "threshold": 0.2,
            "window_start": T0 - 60_000, "window_end": T0, "reference_size": 1000, "window_size": 250,
        },
        catalog.ALERT: {
            "event_id": new_id(), "event_time": T0, "producer": "flow.alerts", "alert_key": "anomaly/pi-kitchen/t",
            "status": "OPENED", "severity": "CRITICAL", "source": "anomaly", "entity": "pi-kitchen/temperature",
            "summary": "temperature 35.0 degC is anomalous (score 0.998)", "value": 35.0,
            "details": {"threshold": "0.99"},
            "explanation": {"rule": "spike", "expected": 21.5, "lower": 19.0, "upper": 24.0, "deviation": 12.6,
                            "context": [21.4, 21.6, 35.0]},
        },
        catalog.DEVICE_HEALTH: {
            "event_id": "pi-kitchen-health-17", "event_time": 1_700_000_000_000, "producer": "eddyline-edge/0.1.0@pi-kitchen",
            "device_id": "pi-kitchen", "seq": 17, "device_class": "rpi4", "agent_version": "0.1.0", "interval_s": 10.0,
            "model_version": "edge-ae-3", "model_state": "running", "model_message": None,
            "buffer_depth": 2, "buffer_readings": 300, "buffer_oldest_age_s": 1.5, "send_rate": 29.8,
            "sampled_readings": 5_100, "acked_readings": 4_800, "errors": 0, "dropped_readings": 0,
            "cpu_percent": 3.2, "rss_mb": 41.0, "inference_latency_ms": 0.4, "clock_offset_ms": -12.0,
            "dead_letters": 0, "rollouts_refused": 0,
        },
        catalog.QUARANTINE: {
            "event_id": new_id(), "event_time": T0, "producer": "flow.model_security", "source": "producer:bot",
            "action": "QUARANTINE", "rule": "label_flip", "reason": "producer:bot: its labels go against the crowd",
            "statistic": 10.3, "threshold": 6.0, "events": 50,
        },
        catalog.EDGE_MODEL: {
            "event_id": "m-1", "event_time": 1_700_000_000_000, "producer": "eddyline-cli@build",
            "name": "anomaly", "version": "7", "device_class": "rpi4", "format": "onnx", "sha256": "ab" * 32,
            "model": b"\x08\x09onnx", "key_id": "0123456789abcdef", "signature": b"\x01" * 64,
        },
        catalog.EDGE_ROLLOUT: {
            "event_id": "r-1", "event_time": 1_700_000_000_000, "producer": "eddyline-rollout@ops",
            "rollout_id": "r", "device_class": "rpi4", "version": "7", "previous_version": "6", "state": "canary",
            "canary_percent": 10.0, "canary_devices": ["pi-3"], "started_ms": 1_700_000_000_000, "reason": None,
            "sequence": 1_700_000_000_000, "key_id": "0123456789abcdef", "signature": b"\x02" * 64,
        },
    }


EXAMPLES = _examples()


@pytest.fixture(scope="module")
def serde() -> AvroSerde:
    return AvroSerde()


def test_examples_cover_every_event_type() -> None:
    assert sorted(EXAMPLES) == event_types()


@pytest.mark.parametrize("event_type", sorted(EXAMPLES))
def test_round_trip(serde: AvroSerde, event_type: str) -> None:
    record = EXAMPLES[event_type]
    assert serde.decode(serde.encode(event_type, record), event_type) == record


def test_defaults_are_filled_on_encode(serde: AvroSerde) -> None:
    minimal = {k: v for k, v in EXAMPLES[catalog.CLICK].items()
               if k not in ("impression_id", "position", "rating", "context")}
    decoded = serde.decode(serde.encode(catalog.CLICK, minimal), catalog.CLICK)
    assert decoded["context"] == {} and decoded["impression_id"] is None


def test_wire_framing(serde: AvroSerde) -> None:
    record = EXAMPLES[catalog.FEEDBACK]
    data = serde.encode(catalog.FEEDBACK, record)
    version = catalog.latest(catalog.FEEDBACK)
    assert data[0] == 0
    assert struct.unpack(">I", data[1:5])[0] == LocalRegistry().id_for("feedback", version)
    body = io.BytesIO()
    fastavro.schemaless_writer(body, version.parsed, record)
    assert data[5:] == body.getvalue()
    assert wire.unframe(data)[0] == struct.unpack(">I", data[1:5])[0]


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"", "too short"),
        (b"\x00\x00", "too short"),
        (b'{"event_id": "x"}', "magic byte"),
        (b"hello world, not avro", "magic byte"),
    ],
)
def test_not_wire_format(serde: AvroSerde, data: bytes, needle: str) -> None:
    with pytest.raises(DecodeError, match=needle) as info:
        serde.decode(data, catalog.SENSOR_BATCH)
    assert info.value.reason == "undecodable"


def test_none_is_undecodable(serde: AvroSerde) -> None:
    with pytest.raises(DecodeError):
        serde.decode(None, catalog.SENSOR_BATCH)  # type: ignore[arg-type]


@pytest.mark.parametrize("cut", [1, 5, 20])
def test_truncated_body(serde: AvroSerde, cut: int) -> None:
    data = serde.encode(catalog.SENSOR_BATCH, EXAMPLES[catalog.SENSOR_BATCH])
    with pytest.raises(DecodeError, match="sensor_batch: Avro body does not decode with schema id") as info:
        serde.decode(data[:-cut], catalog.SENSOR_BATCH)
    assert info.value.reason == "undecodable" and info.value.event_type == catalog.SENSOR_BATCH


def test_trailing_bytes(serde: AvroSerde) -> None:
    data = serde.encode(catalog.FEEDBACK, EXAMPLES[catalog.FEEDBACK])
    with pytest.raises(DecodeError, match="3 bytes left over"):
        serde.decode(data + b"\x01\x02\x03", catalog.FEEDBACK)


def test_garbage_body_with_valid_header(serde: AvroSerde) -> None:
    sid = LocalRegistry().id_for("", catalog.latest(catalog.SENSOR_BATCH))
    with pytest.raises(DecodeError):
        serde.decode(wire.frame(sid, b"\xff" * 40), catalog.SENSOR_BATCH)


def test_unknown_schema_id(serde: AvroSerde) -> None:
    known = {LocalRegistry().id_for("", v) for t in event_types() for v in catalog.versions(t)}
    unknown = next(i for i in range(1, 1000) if i not in known)
    with pytest.raises(UnknownSchemaError, match=f"schema id {unknown} is not one of eddyline's") as info:
        serde.decode(wire.frame(unknown, b"\x00"), catalog.SENSOR_BATCH)
    assert info.value.reason == "unknown_schema"


def test_other_event_type_does_not_decode(serde: AvroSerde) -> None:
    data = serde.encode(catalog.CLICK, EXAMPLES[catalog.CLICK])
    with pytest.raises(DecodeError, match="sensor_batch"):
        serde.decode(data, catalog.SENSOR_BATCH)


def test_unknown_event_type(serde: AvroSerde) -> None:
    with pytest.raises(UnknownSchemaError, match="no schema for event type 'nope'; known types: alert"):
        serde.encode("nope", {})


def _sensor(**series_changes) -> dict:
    rec = EXAMPLES[catalog.SENSOR_BATCH]
    return {**rec, "series": [{**rec["series"][0], **series_changes}]}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_reading_rejected_on_encode(serde: AvroSerde, bad: float) -> None:
    with pytest.raises(ValidationError, match=r"sensor_batch\.series\[0\]\.values: holds NaN or infinity") as info:
        serde.encode(catalog.SENSOR_BATCH, _sensor(values=[1.0, bad, 2.0]))
    assert info.value.reason == "invalid"


def test_mismatched_series_lengths_rejected(serde: AvroSerde) -> None:
    with pytest.raises(ValidationError, match=r"series\[0\]: 3 timestamps for 2 values"):
        serde.encode(catalog.SENSOR_BATCH, _sensor(values=[1.0, 2.0]))


def test_a_series_without_readings_is_rejected_on_encode_and_decode(serde: AvroSerde) -> None:
    """Nothing to score and no time to file its summary under: the sensor flow died of one (IndexError)."""
    with pytest.raises(ValidationError, match=r"series\[0\]\.values: is empty") as info:
        serde.encode(catalog.SENSOR_BATCH, _sensor(timestamps=[], values=[]))
    assert info.value.reason == "invalid"
    data = serde.encode(catalog.SENSOR_BATCH, _sensor(timestamps=[], values=[]), check=False)
    for arrays in (False, True):
        with pytest.raises(ValidationError, match="is empty"):
            serde.decode(data, catalog.SENSOR_BATCH, arrays=arrays)


def test_invalid_record_rejected_on_decode(serde: AvroSerde) -> None:
    data = serde.encode(catalog.SENSOR_BATCH, _sensor(values=[1.0, math.nan, 2.0]), check=False)
    with pytest.raises(ValidationError, match="NaN"):
        serde.decode(data, catalog.SENSOR_BATCH)
    assert math.isnan(serde.decode(data, catalog.SENSOR_BATCH, check=False)["series"][0]["values"][1])


def test_anomaly_score_lengths(serde: AvroSerde) -> None:
    rec = EXAMPLES[catalog.ANOMALY_SCORE]
    bad = {**rec, "series": [{**rec["series"][0], "scores": [0.1]}]}
    with pytest.raises(ValidationError, match="differ in length"):
        serde.encode(catalog.ANOMALY_SCORE, bad)


@pytest.mark.parametrize(
    ("event_type", "changes", "needle"),
    [
        (catalog.AUDIO_CHUNK, {"sample_rate": 44100}, "must be 16000 Hz"),
        (catalog.AUDIO_CHUNK, {"pcm": b"\x00\x01\x02"}, "odd number of bytes"),
        (catalog.PREDICTION, {"score": math.nan}, "score: is NaN"),
        (catalog.PREDICTION, {"latency_ms": -1.0}, "latency_ms: is -1.0; it must be a finite, non-negative"),
        (catalog.PREDICTION, {"latency_ms": math.nan}, "latency_ms: is nan; it must be a finite"),
        (catalog.PREDICTION, {"latency_ms": math.inf}, "latency_ms: is inf; it must be a finite"),
        (catalog.FEEDBACK, {"prediction_id": ""}, "prediction_id: must not be empty"),
        (catalog.CLICK, {"event_id": ""}, "event_id: must not be empty"),
        (catalog.CLICK, {"event_time": -5}, "before 1970"),
        (catalog.CLICK, {"rating": math.nan}, r"click\.rating: is NaN or infinite"),
        (catalog.CLICK, {"rating": -math.inf}, r"click\.rating: is NaN or infinite"),
        (catalog.PREDICTION, {"features": {"a": 1.0, "b": math.inf}}, r"prediction\.features\['b'\]: is NaN"),
        (catalog.PREDICTION, {"features": {"a": math.nan}}, r"prediction\.features\['a'\]: is NaN"),
        # NaN compares false: the rollout controller's latency and silence bounds would never roll a canary back
        (catalog.DEVICE_HEALTH, {"inference_latency_ms": math.nan}, r"health\.inference_latency_ms: is nan; it must"),
        (catalog.DEVICE_HEALTH, {"inference_latency_ms": -1.0}, r"health\.inference_latency_ms: is -1\.0; it must"),
        (catalog.DEVICE_HEALTH, {"interval_s": math.nan}, r"health\.interval_s: is nan; it must be a finite, positive"),
        (catalog.DEVICE_HEALTH, {"interval_s": math.inf}, r"health\.interval_s: is inf"),
        (catalog.DEVICE_HEALTH, {"interval_s": 0.0}, r"health\.interval_s: is 0\.0"),
        (catalog.DEVICE_HEALTH, {"errors": -1000}, r"health\.errors: is -1000; a count is never negative"),
        (catalog.DEVICE_HEALTH, {"send_rate": math.inf}, r"health\.send_rate: is inf"),
        (catalog.DEVICE_HEALTH, {"clock_offset_ms": math.nan}, r"health\.clock_offset_ms: is nan"),
    ],
)
def test_rules(serde: AvroSerde, event_type: str, changes: dict, needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        serde.encode(event_type, {**EXAMPLES[event_type], **changes})


def test_a_heartbeat_the_rollout_could_not_judge_is_dead_lettered_by_the_fleet_flow_with_field_and_value() -> None:
    from connectors.kafka import KafkaSettings
    from streams.engines.output import Codec, DeadLetter
    from streams.flows.fleet import flow

    codec = Codec(KafkaSettings(namespace="unit."), flow().inputs, serde=AvroSerde(compiled=True))
    nan_latency = {**EXAMPLES[catalog.DEVICE_HEALTH], "inference_latency_ms": math.nan}
    bad = AvroSerde().encode(catalog.DEVICE_HEALTH, nan_latency, check=False)
    letter = codec.decode("unit.device.health", b"pi-kitchen", bad, 0, 7)
    assert isinstance(letter, DeadLetter) and letter.reason == "invalid"
    assert "inference_latency_ms: is nan" in letter.error
    without_model = {**EXAMPLES[catalog.DEVICE_HEALTH], "model_version": None, "inference_latency_ms": None,
                     "clock_offset_ms": -250.0}  # no local model yet, a clock behind the broker's
    good = codec.decode("unit.device.health", b"pi-kitchen", AvroSerde().encode(catalog.DEVICE_HEALTH, without_model),
                        0, 8)
    assert not isinstance(good, DeadLetter) and good.record["clock_offset_ms"] == -250.0


def test_a_click_rated_or_not_and_finite_features_pass(serde: AvroSerde) -> None:
    for rating in (None, 0.0, 4.5):
        rec = {**EXAMPLES[catalog.CLICK], "rating": rating}
        assert serde.decode(serde.encode(catalog.CLICK, rec), catalog.CLICK)["rating"] == rating
    pred = {**EXAMPLES[catalog.PREDICTION], "features": {"a": 0.0, "b": -1e300}}
    assert serde.decode(serde.encode(catalog.PREDICTION, pred), catalog.PREDICTION)["features"] == pred["features"]


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"action": "LIKE"}, "action"),
        ({"user_id": 17}, "user_id"),
        ({"position": "2"}, "position"),
    ],
)
def test_avro_type_errors_name_the_field(serde: AvroSerde, changes: dict, needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        serde.encode(catalog.CLICK, {**EXAMPLES[catalog.CLICK], **changes})


def test_missing_required_field(serde: AvroSerde) -> None:
    rec = {k: v for k, v in EXAMPLES[catalog.DRIFT].items() if k != "statistic"}
    with pytest.raises(ValidationError, match="statistic"):
        serde.encode(catalog.DRIFT, rec)


@pytest.mark.parametrize(
    ("event_type", "field"),
    [(catalog.SENSOR_BATCH, "device_id"), (catalog.SENSOR_BATCH, "series"), (catalog.PREDICTION, "score"),
     (catalog.AUDIO_CHUNK, "pcm"), (catalog.ANOMALY_SCORE, "series")],
)
def test_missing_field_is_a_validation_error_not_a_crash(serde: AvroSerde, event_type: str, field: str) -> None:
    """The Avro type check runs before the content rules, which assume the fields are there."""
    rec = {k: v for k, v in EXAMPLES[event_type].items() if k != field}
    with pytest.raises(ValidationError, match=field):
        serde.encode(event_type, rec)


def test_wrong_item_type_in_a_series(serde: AvroSerde) -> None:
    with pytest.raises(ValidationError, match="values"):
        serde.encode(catalog.SENSOR_BATCH, _sensor(values=["21.5", 21.6, 21.7]))


def test_derived_ids_of_parts_holding_the_separator_do_not_collide() -> None:
    """A producer's id holding the separator could pass for two parts: the drift flow derives from a feature name and
    a prediction's id, so two different drifts got one id and the second was dropped as a repeat."""
    assert derive_id("drift", "ctr", "hour\x1fp-2", "p-1") != derive_id("drift", "ctr", "hour", "p-2\x1fp-1")
    assert derive_id("a\x1e", "\x1fb") != derive_id("a\x1e\x1f", "b")
    assert derive_id("a\x1f") != derive_id("a", "")
    assert derive_id("scores.anomaly", "batch-1") == "7cc7a334cd00eda8ce3db2fd962af5f4"  # as before: replays repeat it


def test_a_derived_id_takes_any_text() -> None:
    """A lone surrogate (JSON's ``"\\ud800"`` decodes to one) gives an id instead of a UnicodeEncodeError."""
    assert derive_id("gateway", "\ud800") != derive_id("gateway", "\ud801")
