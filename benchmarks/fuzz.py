"""Fuzzing every decoder and parser that takes outside input: hypothesis-generated and mutated inputs.

Targets, each the real code path outside bytes take:

- ``avro``: the engines' shared decode path (``Codec.decode``) over the Confluent wire format, per input topic;
- ``gateway-json``: a POST body as the gateway handles it (``parse_json``, then ``Gateway.publish``);
- ``gateway-ws``: a WebSocket frame as the gateway answers it (``_ws_answer``), text and binary;
- ``edge-command``: a command source's output (``parse_output``);
- ``edge-csv``: a CSV replay file (``CsvReplay``);
- ``wav``: a WAV file (``read_wav``);
- ``toml``: an ``eddyline.toml`` (the settings of Kafka, gateway, live page, schema registry, runtime).

The only acceptable outcomes are ``valid`` (an event or settings), ``dlq`` (a dead letter with a reason)
and ``rejected`` (a clear error of the documented kind). Anything else raised is a crash; an input taking
longer than ``hang_s`` is a hang. Inputs are seeds (valid inputs), seeds mutated (bytes flipped,
inserted, deleted, duplicated, truncated) and random bytes, drawn by hypothesis.

``eddyline bench fuzz --minutes N --json PATH`` splits N minutes over the targets and writes
``{"inputs", "crashes", "hangs", "dlq", "rejected", "valid"}`` per target, with a few crashing inputs.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
import time
import wave
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

OUTCOMES = ("valid", "dlq", "rejected")
KEYS = ("inputs", "crashes", "hangs", "dlq", "rejected", "valid")


class Crash(Exception):
    """An outcome the target must never have (a dead letter without a reason, a non-finite reading...)."""


@dataclass
class Target:
    """A parser of outside input: ``run(data)`` returns an outcome in ``OUTCOMES`` or raises (a crash)."""

    name: str
    seeds: list[bytes]
    run: Callable[[bytes], str]


@dataclass
class Tally:
    """Counts per outcome (``inputs``, ``crashes``, ``hangs`` and each of ``OUTCOMES``) and a few bad inputs."""

    counts: Counter = field(default_factory=lambda: Counter(dict.fromkeys(KEYS, 0)))
    examples: list[dict[str, str]] = field(default_factory=list)

    def add(self, target: Target, data: bytes, hang_s: float) -> str:
        """Run one input, count its outcome; returns the outcome (``crash`` for a crash)."""
        self.counts["inputs"] += 1
        start = time.monotonic()
        try:
            outcome = target.run(data)
            if outcome not in OUTCOMES:
                raise Crash(f"unexpected outcome {outcome!r}")
        except Exception as exc:  # noqa: BLE001 - every escape is a crash, counted and kept
            outcome = "crash"
            self.counts["crashes"] += 1
            self._keep(data, f"{type(exc).__name__}: {exc}"[:300])
        else:
            self.counts[outcome] += 1
        took = time.monotonic() - start
        if took > hang_s:
            self.counts["hangs"] += 1
            self._keep(data, f"hang: {took:.1f} s")
        return outcome

    def _keep(self, data: bytes, error: str) -> None:
        if len(self.examples) < 10:
            self.examples.append({"input": data[:200].hex(), "error": error})


# --- targets ------------------------------------------------------------------------------------------


def _avro_target() -> Target:
    from connectors.kafka import KafkaSettings
    from schemas import AUDIO_CHUNK, CLICK, FEEDBACK, PREDICTION, SENSOR_BATCH, TRANSCRIPT, AvroSerde
    from streams.engines.output import Codec, DeadLetter
    from streams.producers.simulator import SensorSimulator

    t0 = 1_767_225_600_000
    base = {"event_id": "e-1", "event_time": t0, "producer": "fuzz"}
    records = {
        SENSOR_BATCH: next(iter(SensorSimulator(devices=1, readings_per_message=4, seed=1))),
        AUDIO_CHUNK: {**base, "conversation_id": "c", "seq": 0, "sample_rate": 16000, "offset_ms": 0,
                      "pcm": b"\x00\x01" * 8, "final": False},
        CLICK: {**base, "user_id": "u", "item_id": "i", "action": "CLICK", "impression_id": None, "position": 1,
                "rating": None, "context": {"page": "home"}},
        FEEDBACK: {**base, "model_name": "m", "prediction_id": "p", "label": 1.0},
        TRANSCRIPT: {**base, "conversation_id": "c", "segment": 0, "start_ms": 0, "end_ms": 10, "text": "hi",
                     "language": "en", "confidence": None, "model": "w"},
        PREDICTION: {**base, "model_name": "m", "model_version": "1", "subject_id": "u", "item_id": None,
                     "features_digest": "d", "features": {"x": 1.0}, "score": 0.5, "label": None,
                     "latency_ms": 1.0, "error": None},
    }
    topics = {SENSOR_BATCH: "sensor.readings", AUDIO_CHUNK: "audio.chunks", CLICK: "clicks",
              FEEDBACK: "feedback", TRANSCRIPT: "transcripts", PREDICTION: "predictions"}
    serde = AvroSerde()
    types = sorted(records)
    codec = Codec(KafkaSettings(namespace=""), {topics[t]: t for t in types}, serde)
    seeds = [bytes([i]) + serde.encode(t, records[t]) for i, t in enumerate(types)]

    def run(data: bytes) -> str:
        event_type = types[data[0] % len(types)] if data else types[0]
        got = codec.decode(topics[event_type], b"k", data[1:], 0, 0)
        if isinstance(got, DeadLetter):
            if not got.reason or not got.error:
                raise Crash("a dead letter without a reason")
            return "dlq"
        return "valid"

    return Target("avro", seeds, run)


@contextmanager
def _gateway() -> Iterator[Any]:
    from connectors.broker import free_port
    from connectors.gateway import GatewaySettings
    from connectors.gateway.app import Gateway
    from connectors.kafka import EventProducer, KafkaSettings
    from schemas import AvroSerde

    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", extra={"log_level": "0"})  # nothing there
    settings = GatewaySettings(tokens={"fuzz": "fuzz-token-0123456789"}, create_topics=False, max_queue=10**9)
    producer = EventProducer(kafka, AvroSerde(), log_level=0, **{"queue.buffering.max.messages": 10_000_000})
    yield Gateway(settings, kafka, producer)


def _gateway_targets(gateway: Any) -> list[Target]:
    from connectors.gateway.app import _ws_answer, parse_json
    from connectors.gateway.errors import GatewayError
    from connectors.gateway.records import ENDPOINTS

    endpoints = list(ENDPOINTS.values())
    sensor = {"device_id": "d1", "seq": 1, "series": [{"sensor": "t", "timestamps": [1, 2], "values": [1, 2.5]}]}
    bodies = [sensor, [sensor, {**sensor, "seq": 2}],
              {"conversation_id": "c", "seq": 0, "pcm": "AAEAAQ==", "sample_rate": 16000, "offset_ms": 0},
              {"user_id": "u", "item_id": "i", "action": "CLICK"}]

    def post(data: bytes) -> str:
        endpoint = endpoints[data[0] % len(endpoints)] if data else endpoints[0]
        try:
            gateway.publish(endpoint, parse_json(data[1:]), "fuzz")
        except GatewayError as exc:
            if exc.status >= 500 and exc.code != "broker_unavailable":
                raise Crash(f"{exc.status} {exc.code}: {exc.message}") from None
            return "rejected"
        return "valid"

    def frame(data: bytes) -> str:
        message = {"bytes": data[1:]} if data[:1] == b"\x00" else {"text": data.decode("utf-8", "replace")}
        answer = _ws_answer(gateway, message, "fuzz")
        status = answer.get("status")
        if status == 202:
            return "valid"
        if isinstance(status, int) and 400 <= status < 500 and answer.get("message"):
            return "rejected"
        if status == 503 and answer.get("error") == "broker_unavailable":
            return "rejected"
        raise Crash(f"answer {answer}")

    post_seeds = [bytes([i]) + json.dumps(b).encode() for i, b in enumerate(bodies)]
    ws_seeds = [json.dumps({"type": e.event_type, "event": b, "ref": 1}).encode()
                for e, b in zip(endpoints, bodies[:1] + bodies[2:], strict=False)]
    return [Target("gateway-json", post_seeds, post), Target("gateway-ws", ws_seeds + [b"\x00\x01\x02"], frame)]


def _edge_command_target() -> Target:
    from edge_agent.sources.command import parse_output

    def run(data: bytes) -> str:
        readings, bad = parse_output(data.decode("utf-8", "replace"))
        for sensor, value, _unit in readings:
            if not sensor or not math.isfinite(value):
                raise Crash(f"reading {sensor!r}={value!r} passed")
        return "rejected" if bad else "valid"

    seeds = [b"temperature 21.5 degC\nhumidity=0.43\n# comment\n", b"fan 1200 rpm\n", b"load nan\n"]
    return Target("edge-command", seeds, run)


def _file_target(name: str, path: Path, parse: Callable[[Path], str], seeds: list[bytes]) -> Target:
    """A parser that reads a file: each input is written to ``path`` first."""

    def run(data: bytes) -> str:
        path.write_bytes(data)
        return parse(path)

    return Target(name, seeds, run)


def _edge_csv_target(folder: Path) -> Target:
    from edge_agent.settings import CsvSource
    from edge_agent.sources.base import SourceError
    from edge_agent.sources.replay import CsvReplay

    def parse(path: Path) -> str:
        try:
            source = CsvReplay(CsvSource(kind="csv", name="fuzz", path=path, rows_per_read=50))
        except SourceError:
            return "rejected"
        try:
            for _ in range(100):
                if not source.read():
                    break
        finally:
            source._file.close()
        return "rejected" if source.errors else "valid"

    seeds = [b"timestamp,sensor,value,unit\n1700000000000,t,1.5,degC\n2026-01-01T00:00:00Z,h,0.4,\n",
             b"timestamp,sensor,value\n1700000000000,t,x\n"]
    return _file_target("edge-csv", folder / "replay.csv", parse, seeds)


def _wav_target(folder: Path) -> Target:
    from connectors.wav import WavError, read_wav

    def parse(path: Path) -> str:
        try:
            read_wav(path)
        except WavError:
            return "rejected"
        return "valid"

    seeds = []
    for rate, width, channels in ((16000, 2, 1), (8000, 1, 2), (44100, 3, 1)):
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(channels)
            w.setsampwidth(width)
            w.setframerate(rate)
            w.writeframes(bytes(range(64)) * width * channels)
        seeds.append(buf.getvalue())
    return _file_target("wav", folder / "in.wav", parse, seeds)


def _toml_target(folder: Path) -> Target:
    from pydantic import ValidationError

    from connectors.gateway import GatewaySettings
    from connectors.kafka import KafkaSettings
    from connectors.schema_registry import SchemaRegistrySettings
    from streams.apps.live.auth import LiveSettings
    from streams.runtime import RuntimeSettings

    def parse(path: Path) -> str:
        before = os.environ.get("EDDYLINE_CONFIG")
        os.environ["EDDYLINE_CONFIG"] = str(path)
        try:
            for section in (KafkaSettings, GatewaySettings, LiveSettings, SchemaRegistrySettings, RuntimeSettings):
                section()
        except (ValidationError, ValueError) as exc:
            if not str(exc):
                raise Crash("an error without a message") from None
            return "rejected"
        finally:
            if before is None:
                os.environ.pop("EDDYLINE_CONFIG", None)
            else:
                os.environ["EDDYLINE_CONFIG"] = before
        return "valid"

    seeds = [
        b'[kafka]\nbootstrap_servers = "k:9092"\nnamespace = "prod."\n\n[runtime]\nmetrics_port = 9108\n',
        b'[gateway]\ntokens = { edge = "0123456789abcdefgh" }\nrates = { edge = 10.0 }\nscopes = { edge = ["click"] }\n',
        b'[live]\ntoken = "0123456789abcdefgh"\n[schema_registry]\nurl = "http://127.0.0.1:1"\n',
    ]
    return _file_target("toml", folder / "eddyline.toml", parse, seeds)


@contextmanager
def targets() -> Iterator[list[Target]]:
    """Every target, set up (a gateway on a closed port, a scratch folder), torn down after."""
    with tempfile.TemporaryDirectory(prefix="eddyline-fuzz-") as tmp, _gateway() as gateway:
        folder = Path(tmp)
        yield [_avro_target(), *_gateway_targets(gateway), _edge_command_target(), _edge_csv_target(folder),
               _wav_target(folder), _toml_target(folder)]


# --- inputs -------------------------------------------------------------------------------------------


def mutate(seed: bytes, ops: list[tuple[int, int, bytes]]) -> bytes:
    """Apply byte-level mutations: flip, insert, delete, truncate, duplicate, overwrite."""
    data = bytearray(seed)
    for op, pos, chunk in ops:
        at = pos % (len(data) + 1)
        if op == 0 and data:
            data[at % len(data)] ^= chunk[0] or 1
        elif op == 1:
            data[at:at] = chunk
        elif op == 2:
            del data[at:at + len(chunk)]
        elif op == 3:
            del data[at:]
        elif op == 4:
            data[at:at] = data[at:at + 8 * len(chunk)]
        else:
            data[at:at + len(chunk)] = chunk
    return bytes(data)


def inputs(seeds: list[bytes]) -> Any:
    """A hypothesis strategy: seeds, mutated seeds and random bytes."""
    from hypothesis import strategies as st

    ops = st.lists(st.tuples(st.integers(0, 5), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=16)),
                   min_size=1, max_size=10)
    return st.one_of(st.sampled_from(seeds), st.builds(mutate, st.sampled_from(seeds), ops), st.binary(max_size=600))


# --- the benchmark ------------------------------------------------------------------------------------


class _TimeUp(Exception):
    pass


def fuzz(target: Target, seconds: float, hang_s: float = 2.0) -> Tally:
    """Feed ``target`` hypothesis-drawn inputs for ``seconds``; crashes are counted, not raised."""
    from hypothesis import HealthCheck, Phase, given, settings

    tally = Tally()
    for seed in target.seeds:  # warm-up, not counted: first calls import libraries (scipy takes seconds)
        Tally().add(target, seed, math.inf)
    deadline = time.monotonic() + seconds

    @settings(max_examples=10**9, deadline=None, phases=[Phase.generate], database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(inputs(target.seeds))
    def feed(data: bytes) -> None:
        tally.add(target, data, hang_s)
        if time.monotonic() > deadline:
            raise _TimeUp

    try:
        feed()
    except _TimeUp:
        pass
    return tally


def run(minutes: float, json_path: Path | None, hang_s: float = 2.0) -> dict[str, Any]:
    import logging
    import platform

    logging.disable(logging.WARNING)  # bad inputs are logged by the code under test; the tally says enough
    results: dict[str, Any] = {}
    with targets() as all_targets:
        share = minutes * 60 / len(all_targets)
        for target in all_targets:
            t = fuzz(target, share, hang_s)
            results[target.name] = {**{k: t.counts[k] for k in KEYS}, "crash_examples": t.examples}
    logging.disable(logging.NOTSET)
    out = {"minutes": minutes, "hang_s": hang_s, "machine": f"{platform.machine()} {os.cpu_count()} cpus",
           "targets": results}
    if json_path is not None:
        json_path.write_text(json.dumps(out, indent=2))
    return out


def command(
    minutes: Annotated[float, typer.Option(help="Total time, split evenly over the targets.")] = 1.0,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the results here.")] = None,
    hang_s: Annotated[float, typer.Option(help="An input taking longer than this counts as a hang.")] = 2.0,
) -> None:
    """Fuzz every parser of outside input; exit 1 if anything crashed or hung."""
    result = run(minutes, json_path, hang_s)
    typer.echo(json.dumps(result, indent=2))
    bad = {n: r for n, r in result["targets"].items() if r["crashes"] or r["hangs"]}
    if bad:
        typer.secho(f"error: crashes or hangs in {', '.join(bad)}; see crash_examples", fg="red", err=True)
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(command)
