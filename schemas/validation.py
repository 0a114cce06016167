"""Rules an event must keep beyond its Avro types, checked on the way in and on the way out.

Avro says a field is a double; these rules say a reading is finite and that each series has as many
timestamps as values. A broken rule raises ``ValidationError`` naming the field.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

from schemas import catalog
from schemas.errors import ValidationError

Rule = Callable[[dict[str, Any]], None]


def _fail(event_type: str, field: str, why: str) -> None:
    raise ValidationError(f"{event_type}.{field}: {why}", event_type=event_type)


def _common(event_type: str, rec: dict[str, Any]) -> None:
    if not rec.get("event_id"):
        _fail(event_type, "event_id", "must not be empty")
    if rec.get("event_time", 0) < 0:
        _fail(event_type, "event_time", f"{rec.get('event_time')} is before 1970")


def _finite(values: Any) -> bool:
    """Every value finite; ``values`` is a list, or a numpy array (``AvroSerde.decode(arrays=True)``)."""
    if type(values) is list:
        return all(map(math.isfinite, values))
    return bool(sys.modules["numpy"].isfinite(values).all())


def _sensor_batch(rec: dict[str, Any]) -> None:
    if not rec["device_id"]:
        _fail(catalog.SENSOR_BATCH, "device_id", "must not be empty")
    for i, s in enumerate(rec["series"]):
        where = f"series[{i}]"
        if not s["sensor"]:
            _fail(catalog.SENSOR_BATCH, f"{where}.sensor", "must not be empty")
        if len(s["timestamps"]) != len(s["values"]):
            _fail(
                catalog.SENSOR_BATCH,
                where,
                f"{len(s['timestamps'])} timestamps for {len(s['values'])} values; they must pair up",
            )
        if not len(s["values"]):  # nothing to score, and no time to file a summary under
            _fail(catalog.SENSOR_BATCH, f"{where}.values", "is empty; a series carries at least one reading")
        if not _finite(s["values"]):
            _fail(catalog.SENSOR_BATCH, f"{where}.values", "holds NaN or infinity")
        flags = s.get("local_flags")
        if flags is not None and len(flags) != (len(s["values"]) + 7) // 8:
            _fail(catalog.SENSOR_BATCH, f"{where}.local_flags",
                  f"{len(flags)} bytes for {len(s['values'])} readings; the bitmask needs one bit per reading")
        if flags is not None and not rec.get("local_model"):
            _fail(catalog.SENSOR_BATCH, "local_model", "must name the model that set local_flags")


def _audio_chunk(rec: dict[str, Any]) -> None:
    if rec["sample_rate"] != 16000:
        _fail(catalog.AUDIO_CHUNK, "sample_rate", f"{rec['sample_rate']} Hz; audio chunks must be 16000 Hz PCM16 mono")
    if len(rec["pcm"]) % 2:
        _fail(catalog.AUDIO_CHUNK, "pcm", "odd number of bytes; PCM16 samples are 2 bytes each")


def _anomaly_score(rec: dict[str, Any]) -> None:
    for i, s in enumerate(rec["series"]):
        if s.get("packed_scores") is None:  # the plain encoding: no arrays to build for a length check
            if len(s["timestamps"]) != len(s["scores"]):
                _fail(catalog.ANOMALY_SCORE, f"series[{i}]", "timestamps and scores differ in length")
            continue
        if s["timestamps"] or s["scores"]:
            _fail(catalog.ANOMALY_SCORE, f"series[{i}]", "carries both packed and array scores; use one")
        from schemas.scores import series_scores  # numpy: not on the edge agent's light install

        try:
            series_scores(s)
        except ValueError as exc:
            _fail(catalog.ANOMALY_SCORE, f"series[{i}]", str(exc))


def _click(rec: dict[str, Any]) -> None:
    rating = rec.get("rating")
    if rating is not None and not math.isfinite(rating):  # the click model learns ratings into shared statistics
        _fail(catalog.CLICK, "rating", "is NaN or infinite")


def _prediction(rec: dict[str, Any]) -> None:
    if not math.isfinite(rec["score"]):
        _fail(catalog.PREDICTION, "score", "is NaN or infinite")
    features = rec.get("features") or {}
    if not all(map(math.isfinite, features.values())):  # one would blind the drift flow's monitor of that feature
        name = next(k for k, v in features.items() if not math.isfinite(v))
        _fail(catalog.PREDICTION, f"features[{name!r}]", "is NaN or infinite")
    if not 0 <= rec["latency_ms"] < math.inf:  # one NaN makes its quality window's latency percentiles NaN
        _fail(catalog.PREDICTION, "latency_ms", f"is {rec['latency_ms']}; it must be a finite, non-negative number")


def _feedback(rec: dict[str, Any]) -> None:
    if not rec["prediction_id"]:
        _fail(catalog.FEEDBACK, "prediction_id", "must not be empty")
    if not math.isfinite(rec["label"]):
        _fail(catalog.FEEDBACK, "label", "is NaN or infinite")


_HEALTH_COUNTS = ("seq", "buffer_depth", "buffer_readings", "sampled_readings", "acked_readings", "errors",
                  "dropped_readings", "dead_letters", "rollouts_refused")
_HEALTH_MEASURES = ("buffer_oldest_age_s", "send_rate", "cpu_percent", "rss_mb", "inference_latency_ms")


def _device_health(rec: dict[str, Any]) -> None:
    # NaN compares false: a canary reporting it would pass the rollout's latency and silence bounds for ever
    if not 0 < rec["interval_s"] < math.inf:
        _fail(catalog.DEVICE_HEALTH, "interval_s", f"is {rec['interval_s']}; it must be a finite, positive number")
    for name in _HEALTH_MEASURES:
        value = rec.get(name)
        if value is not None and not 0 <= value < math.inf:
            _fail(catalog.DEVICE_HEALTH, name, f"is {value}; it must be a finite, non-negative number")
    for name in _HEALTH_COUNTS:  # a negative error count would hide a canary's errors from its error rate
        if rec.get(name, 0) < 0:
            _fail(catalog.DEVICE_HEALTH, name, f"is {rec[name]}; a count is never negative")
    offset = rec.get("clock_offset_ms")
    if offset is not None and not math.isfinite(offset):
        _fail(catalog.DEVICE_HEALTH, "clock_offset_ms", f"is {offset}; it must be a finite number")


RULES: dict[str, Rule] = {
    catalog.SENSOR_BATCH: _sensor_batch,
    catalog.AUDIO_CHUNK: _audio_chunk,
    catalog.ANOMALY_SCORE: _anomaly_score,
    catalog.CLICK: _click,
    catalog.PREDICTION: _prediction,
    catalog.FEEDBACK: _feedback,
    catalog.DEVICE_HEALTH: _device_health,
}


def check(event_type: str, record: dict[str, Any]) -> None:
    """Raise ``ValidationError`` if the record breaks a rule of its event type.

    Parameters
    ----------
    event_type
        The record's event type (``sensor_batch``, ...); types without rules of their own get the common
        ones (a non-empty ``event_id``, an ``event_time`` after 1970).
    record
        The record, as decoded or about to be encoded.

    Examples
    --------
    >>> from schemas.validation import check
    >>> series = [{"sensor": "t", "unit": None, "timestamps": [1, 2], "values": [1.0]}]
    >>> check("sensor_batch", {"event_id": "b-1", "event_time": 2, "device_id": "d", "series": series})
    Traceback (most recent call last):
    ...
    schemas.errors.ValidationError: sensor_batch.series[0]: 2 timestamps for 1 values; they must pair up
    """
    _common(event_type, record)
    rule = RULES.get(event_type)
    if rule is not None:
        rule(record)
