"""The sensor scoring job written the way a Quix Streams 3.28 user would, for ``eddyline bench peers``.

It runs in the peer's own virtual environment (quixstreams, numpy, river, fastavro: nothing of ours, since
quixstreams pins confluent-kafka below 2.13), so it imports none of eddyline and takes the schemas and
detector parameters on the command line. A Quix ``Application`` consumes ``sensor.readings`` (Confluent-framed
Avro, read with Quix's own Avro deserializer after the 5-byte frame), scores every reading and produces one
``scores.anomaly`` record per input batch in the same layout eddyline writes. Detectors:

- ``zscore``: eddyline's ``gauss`` the numpy way: every reading scored against the series' exponentially
  weighted mean and variance before it (the same rate, warm-up and score), the recursion unrolled into
  cumulative sums over each batch; ``[n, mean, var]`` per series lives in Quix state;
- ``hst``: river's ``MinMaxScaler | HalfSpaceTrees`` per series, one reading at a time. Quix state serialises
  every ``set`` (JSON by default), so a user keeps the river models in a dict in the process, as here.

Tansu answers ``describe_configs`` with nothing, and Quix derives its changelog topic's retention from the
input topic's; the input's retention is set here to what Kafka reports by default for such a topic.
"""

from __future__ import annotations

import argparse
import json
import struct
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from quixstreams import State

PRODUCER = "quixstreams/peer"
FRAME = struct.Struct(">bI")


def framed_avro(input_schema: dict, output_schema: dict, output_schema_id: int) -> tuple[Any, Any]:
    """Quix's Avro deserializer and serializer, behind and before the Confluent wire-format frame (no registry)."""
    from quixstreams.models.serializers.avro import AvroDeserializer, AvroSerializer

    class FramedAvroDeserializer(AvroDeserializer):
        def __call__(self, value: bytes, ctx: Any) -> Any:
            return super().__call__(value[FRAME.size:], ctx)

    class FramedAvroSerializer(AvroSerializer):
        def __call__(self, value: Any, ctx: Any) -> bytes:
            return frame + super().__call__(value, ctx)

    frame = FRAME.pack(0, output_schema_id)
    return FramedAvroDeserializer(input_schema), FramedAvroSerializer(output_schema)


def ewma_before(x: np.ndarray, n: float, mean: float, var: float, alpha: float):
    """Running mean and variance before each reading of ``x``, and the state after it, as ``gauss`` learns.

    The first ``1/alpha`` readings of a series are a plain average (one at a time); after that the recursion
    ``m_j = b m_(j-1) + a x_j``, ``v_j = b v_(j-1) + a b d_j^2`` (``b = 1 - a``) is a weighted cumulative sum.
    """
    k = len(x)
    means, variances = np.empty(k), np.empty(k)
    i = 0
    while i < k and n + 1.0 < 1.0 / alpha:
        means[i], variances[i] = mean, var
        a = 1.0 / (n + 1.0)
        d = float(x[i]) - mean
        mean, var, n, i = mean + a * d, (1.0 - a) * (var + a * d * d), n + 1.0, i + 1
    if i < k:
        b = 1.0 - alpha
        powers = b ** np.arange(k - i)
        after = b * powers * mean + alpha * powers * np.cumsum(x[i:] / powers)
        means[i] = mean
        means[i + 1:] = after[:-1]
        d = x[i:] - means[i:]
        v_after = b * powers * var + alpha * b * powers * np.cumsum(d * d / powers)
        variances[i] = var
        variances[i + 1:] = v_after[:-1]
        mean, var = float(after[-1]), float(v_after[-1])
    return means, variances, (n + k - i, mean, var)


def zscore_scorer(alpha: float, z0: float, warmup: float, **_: Any):
    """Scores each reading against the series' running mean and variance, ``[n, mean, var]`` in Quix state."""

    def score(values: np.ndarray, device: str, sensor: str, state: State) -> np.ndarray:
        n, mean, var = state.get(sensor, (0.0, 0.0, 0.0))
        means, variances, after = ewma_before(values, n, mean, var, alpha)
        scale = np.maximum(np.sqrt(variances), 1e-9 * np.maximum(1.0, np.abs(means)))
        z2 = ((values - means) / scale) ** 2
        scores = z2 / (z2 + z0 * z0)
        scores[: max(0, min(len(values), int(warmup - n)))] = 0.0  # gauss scores 0 until the warm-up is over
        state.set(sensor, after)
        return scores

    return score


def hst_scorer(n_trees: int, height: int, window_size: int, seed: int, **_: Any):
    """river's pipeline per (device, sensor), held in the process."""
    from river import anomaly, preprocessing

    models: dict[tuple[str, str], Any] = {}

    def score(values: np.ndarray, device: str, sensor: str, state: State | None) -> np.ndarray:
        key = (device, sensor)
        model = models.get(key)
        if model is None:
            model = models[key] = preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(
                n_trees=n_trees, height=height, window_size=window_size, seed=seed)
        out = np.empty(len(values))
        for i, x in enumerate(values.tolist()):
            features = {"x": x}
            out[i] = model.score_one(features)
            model.learn_one(features)
        return np.clip(out, 0.0, 1.0, out=out)

    return score


SCORERS = {"zscore": zscore_scorer, "hst": hst_scorer}
STATEFUL = {"zscore"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--detector", choices=sorted(SCORERS), required=True)
    parser.add_argument("--params", required=True, help="detector parameters, JSON")
    parser.add_argument("--input-schema", required=True, help="Avro schema, JSON")
    parser.add_argument("--output-schema", required=True, help="Avro schema, JSON")
    parser.add_argument("--output-schema-id", type=int, required=True)
    parser.add_argument("--commit-interval", type=float, default=2.0)
    parser.add_argument("--session-timeout-ms", type=int, default=45_000)
    args = parser.parse_args()

    from quixstreams import Application

    params = json.loads(args.params)
    scorer = SCORERS[args.detector](**params)
    threshold = float(params.get("threshold", 0.5))
    app = Application(broker_address=args.bootstrap, consumer_group=args.group, auto_offset_reset="earliest",
                      state_dir=args.state_dir, commit_interval=args.commit_interval, loglevel="WARNING",
                      consumer_extra_config={"session.timeout.ms": args.session_timeout_ms})
    deserializer, serializer = framed_avro(json.loads(args.input_schema), json.loads(args.output_schema),
                                           args.output_schema_id)
    source = app.topic(args.input, key_deserializer="str", value_deserializer=deserializer)
    source.broker_config.extra_config.setdefault("retention.ms", str(7 * 24 * 3600 * 1000))
    sink = app.topic(args.output, key_serializer="str", value_serializer=serializer)

    def score_batch(batch: dict, state: State | None = None) -> dict:
        series = []
        for s in batch["series"]:
            scores = scorer(np.asarray(s["values"], dtype=np.float64), batch["device_id"], s["sensor"], state)
            series.append({"sensor": s["sensor"], "timestamps": s["timestamps"], "scores": scores.tolist()})
        return {"event_id": f"quix:{batch['event_id']}", "event_time": batch["event_time"], "producer": PRODUCER,
                "source_event_id": batch["event_id"], "device_id": batch["device_id"], "model": args.detector,
                "threshold": threshold, "series": series}

    stateful = args.detector in STATEFUL  # river models live in the process, so that job opens no state
    app.dataframe(source).apply(score_batch, stateful=stateful).to_topic(sink)
    app.run()


if __name__ == "__main__":
    main()
