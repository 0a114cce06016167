"""Signed model updates on the device: follow the rollout for this device's class, verify, load, swap, roll back.

The platform publishes signed models to a compacted models topic and the state of each rollout to a
compacted rollouts topic (``schemas/avro/edge_model``, ``edge_rollout``). The agent reads both from the
beginning, keeps the models of its own class, and works out the version it should run from the latest
rollout: the new one when promoted or when it is a canary, the previous one otherwise. A model is checked
(device class, SHA-256, Ed25519 signature) before it is loaded; loading happens on a worker thread so that
sampling never waits for ONNX Runtime, and the swap itself is one assignment in the agent's loop. The model
it replaced stays loaded, so a rollback is instant. Whatever is refused (bad signature, wrong class, a model
that does not load or cannot score a window) leaves the running model in place and is reported in the health event.

Rollout records are signed with the models' key and ordered by ``sequence``: the agent acts on none that its
key did not sign, nor on one below the highest it accepted (kept on disk beside the model), so write access
to the rollouts topic alone cannot send it back to an older signed model. An operator's rollback is a new,
higher record and is followed. Such refusals are logged and counted; they leave the health event alone, so
a forged record cannot make the controller roll a healthy canary back.

The running model is also kept on disk, signed as it came (``cache``), so an agent that restarts without
the broker runs it again, verified again, instead of falling back to its local model.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from connectors.kafka_log import librdkafka_logger
from edge_agent.inference.local import LocalInference
from schemas import AvroSerde
from schemas.catalog import EDGE_MODEL, EDGE_ROLLOUT
from schemas.signing import SignatureError, Verifier

log = logging.getLogger(__name__)

_KEEP_MODELS = 4  # per class, besides those the latest rollout names: enough for the rollout and a rollback
_METADATA_EVERY_S = 5.0
_METADATA_TIMEOUT_S = 5.0


class ModelUpdates:
    """Decides, checks and loads models for one device; the agent asks it each loop turn for a model to swap in.

    Parameters
    ----------
    device_id
        Decides canary membership (the rollout lists its canaries).
    device_class
        Only models and rollouts of this class apply; a model of another class is refused.
    inference_cfg
        ``[edge.inference]``: threshold, send mode, providers for the loaded models.
    verifier
        Checks signatures against the device's trusted public key.
    current
        The model running at start (the local one), kept for a rollback of the first rollout.
    cache
        Where the running model is kept across restarts, and beside it (``.rollout.json``) the highest rollout
        ``sequence`` accepted with the trusted key; None keeps nothing.
    """

    def __init__(
        self,
        device_id: str,
        device_class: str,
        inference_cfg: Any,
        verifier: Verifier,
        current: LocalInference,
        cache: Path | None = None,
    ) -> None:
        self.device_id = device_id
        self.device_class = device_class
        self.cfg = inference_cfg
        self.verifier = verifier
        self.base = current
        self.current = current
        self.previous: LocalInference | None = None
        self.models: dict[tuple[str, str], dict[str, Any]] = {}  # (class, version) -> edge_model record
        self.rollout: dict[str, Any] | None = None
        self.state = "running"
        self.message: str | None = None
        self.swaps = 0
        self.refused = 0
        self.rollouts_refused = 0
        self._refused: set[tuple[Any, ...]] = set()  # records (by _identity) already refused: not retried
        self._loading: tuple[str, tuple[Any, ...], threading.Thread, list[Any]] | None = None
        self._records: dict[str, dict[str, Any]] = {}  # version -> signed record of current and previous
        self.serde = AvroSerde()
        self.cache = cache
        self.mark_path = cache.with_suffix(".rollout.json") if cache is not None else None
        self.mark = self._read_mark()  # the highest rollout sequence accepted
        if cache is not None and cache.exists():
            self._resume(cache)

    def _read_mark(self) -> int:
        if self.mark_path is None or not self.mark_path.exists():
            return 0
        try:
            kept = json.loads(self.mark_path.read_text())
            # another key's mark goes: after a rotation the old key's records are refused anyway, and its
            # sequences (a controller clock once far ahead) must not hold the new key's records back for ever
            same_key = kept.get("key_id", self.verifier.key_id) == self.verifier.key_id
            return int(kept["sequence"]) if kept["device_class"] == self.device_class and same_key else 0
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("rollout mark %s unreadable (%s); any signed rollout is accepted", self.mark_path, exc)
            return 0

    def _resume(self, cache: Path) -> None:
        try:
            record = self.serde.decode(cache.read_bytes(), EDGE_MODEL)
            if record["device_class"] != self.device_class:
                raise SignatureError(f"built for {record['device_class']}, this device is {self.device_class}")
            self.verifier.verify(record)
            loaded = LocalInference(self.cfg, model=record["model"], version=record["version"])
        except Exception as exc:  # a cache that does not check out is dropped, never trusted
            log.warning("cached model %s not used (%s); running %s", cache, exc, self.current.version)
            cache.unlink(missing_ok=True)
            return
        self._records[record["version"]] = record
        self.previous, self.current = self.current, loaded
        log.info("resumed model %s from %s", loaded.version, cache)

    # -- inputs ---------------------------------------------------------------------------------------
    def on_model(self, record: dict[str, Any]) -> None:
        mine = record["device_class"] == self.device_class
        # Another class's model is kept without its bytes: enough to refuse it by name if our rollout names it.
        self.models[(record["device_class"], record["version"])] = record if mine else {**record, "model": b""}
        self._prune()

    def _prune(self) -> None:
        """Keep the models the rollout names and a few more; this class's are all kept until its rollout is read,
        since the topics are read from the beginning in no set order and a pruned model never comes again."""
        named = self._named_versions()
        for same_class in (True, False) if self.rollout is not None else (False,):
            keys = [k for k in self.models if (k[0] == self.device_class) == same_class and k[1] not in named]
            keys.sort(key=lambda k: self.models[k]["event_time"])
            for k in keys[: max(0, len(keys) - _KEEP_MODELS)]:
                del self.models[k]

    def on_rollout(self, record: dict[str, Any]) -> None:
        if record["device_class"] != self.device_class:
            return
        what = f"rollout {record['rollout_id']} ({record['state']} {record['version']})"
        try:
            self.verifier.verify_rollout(record)
        except SignatureError as exc:
            self._refuse_rollout(str(exc))
            return
        if record["sequence"] < self.mark:
            if self.rollout is None:  # the topic's history, read again after a restart, before the record kept
                log.debug("%s: older than sequence %d, already followed", what, self.mark)
            else:
                self._refuse_rollout(f"{what}: sequence {record['sequence']} is below {self.mark}, the newest "
                                     "accepted (an old record replayed)")
            return
        self.rollout = record
        if record["sequence"] > self.mark:
            self.mark = record["sequence"]
            self._keep_mark()
        self._prune()

    def _refuse_rollout(self, why: str) -> None:
        self.rollouts_refused += 1
        r = self.rollout
        following = f"rollout {r['rollout_id']} ({r['state']} {r['version']})" if r else "no rollout"
        log.warning("refused %s; still following %s (rollouts refused: %d)", why, following, self.rollouts_refused)

    def _keep_mark(self) -> None:
        if self.mark_path is None:
            return
        try:
            _replace(self.mark_path, json.dumps({"device_class": self.device_class, "key_id": self.verifier.key_id,
                                                  "sequence": self.mark}).encode())
        except OSError as exc:  # a full or read-only disk: the mark holds until the agent restarts
            log.warning("cannot keep the rollout mark in %s: %s", self.mark_path, exc)

    def _named_versions(self) -> set[str]:
        r = self.rollout
        return {r["version"], r["previous_version"]} - {None} if r else set()

    # -- decisions ------------------------------------------------------------------------------------
    def wanted(self) -> str | None:
        """The version this device should run now; None means the local model it started with."""
        r = self.rollout
        if r is None:
            return self.current.version if self.current is not self.base else None
        if r["state"] == "promoted" or (r["state"] == "canary" and self.device_id in r["canary_devices"]):
            return r["version"]
        return r["previous_version"]

    def step(self) -> LocalInference | None:
        """The model to swap in now, if any; starts a background load when the wanted model is not loaded."""
        if self._loading is not None:
            return self._finish_load()
        want = self.wanted()
        rolled_back = self.rollout is not None and self.rollout["state"] == "rolled_back"
        if want is None:
            want_model: LocalInference | None = self.base
        elif want == self.current.version:
            want_model = self.current
        elif self.previous is not None and want == self.previous.version:
            want_model = self.previous
        else:
            self._start_load(want)
            return None
        if want_model is self.current:
            return None
        self._set_state("rolled_back" if rolled_back else "running", self.rollout and self.rollout.get("reason"))
        return self._swap(want_model)

    def _start_load(self, version: str) -> None:
        record = self.models.get((self.device_class, version))
        if record is None:
            other = next((m for (c, v), m in self.models.items() if v == version), None)
            if other is not None and _identity(other) not in self._refused:
                self._refuse(version, _identity(other), f"model {version} is built for {other['device_class']}, "
                             f"this device is {self.device_class}")
            return  # not received yet: it may still be on its way
        if _identity(record) in self._refused:
            return
        try:
            self.verifier.verify(record)
        except SignatureError as exc:
            self._refuse(version, _identity(record), str(exc))
            return
        self._records[version] = record
        result: list[Any] = []

        def load() -> None:
            try:
                result.append(LocalInference(self.cfg, model=record["model"], version=version))
            except Exception as exc:  # onnxruntime raises its own types for a model it cannot load
                result.append(exc)

        thread = threading.Thread(target=load, name=f"load-model-{version}", daemon=True)
        self._loading = (version, _identity(record), thread, result)
        thread.start()

    def _finish_load(self) -> LocalInference | None:
        version, identity, thread, result = self._loading  # type: ignore[misc]
        if thread.is_alive():
            return None
        self._loading = None
        loaded = result[0] if result else RuntimeError("the loader thread died")
        if isinstance(loaded, BaseException):
            self._refuse(version, identity, f"model {version} failed to load: {loaded}")
            return None
        if loaded.version != self.wanted():  # the rollout moved on while it loaded
            return None
        self._set_state("running", None)
        return self._swap(loaded)

    def _swap(self, new: LocalInference) -> LocalInference:
        new.take_history(self.current)
        log.info("model %s -> %s", self.current.version, new.version)
        self.previous, self.current = self.current, new
        self.swaps += 1
        self._records = {v: r for v, r in self._records.items() if v in (new.version, self.previous.version)}
        self._keep(self._records.get(new.version) if new is not self.base else None)
        return new

    def _keep(self, record: dict[str, Any] | None) -> None:
        """Write the running model's signed record to the cache (atomically), or remove it for the local model."""
        if self.cache is None:
            return
        try:
            if record is None:
                self.cache.unlink(missing_ok=True)
                return
            _replace(self.cache, self.serde.encode(EDGE_MODEL, record))
        except OSError as exc:  # a full or read-only disk costs the cache, not the model
            log.warning("cannot keep model %s in %s: %s", self.current.version, self.cache, exc)

    def _refuse(self, version: str, identity: tuple[Any, ...], why: str) -> None:
        self._refused.add(identity)
        self.refused += 1
        self._set_state("refused", f"{why}; still running {self.current.version}")
        log.warning("refused model %s: %s; still running %s", version, why, self.current.version)

    def _set_state(self, state: str, message: str | None) -> None:
        self.state, self.message = state, message

    def info(self) -> dict[str, str | None]:
        """``model_version``, ``model_state`` and ``model_message`` for the health event."""
        return {"model_version": self.current.version, "model_state": self.state, "model_message": self.message}


def _replace(path: Path, data: bytes) -> None:
    """Write ``path`` atomically, synced before the rename: after a power cut, the old content or the new."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _identity(record: dict[str, Any]) -> tuple[Any, ...]:
    """What a refusal remembers: the version as signed, so the same version re-signed or rebuilt is tried again."""
    return record["version"], record["device_class"], record["sha256"], record["key_id"], bytes(record["signature"])


class UpdateFeed:
    """Reads the models and rollouts topics from the beginning (no consumer group, nothing committed).

    Whether the topics exist is asked by a background thread (every ``_METADATA_EVERY_S`` until both are
    found): a metadata request waits on the broker, and ``poll`` runs in the agent's sampling loop, which
    never waits.

    Parameters
    ----------
    consumer_conf
        librdkafka settings (connection and security as the producer's).
    models_topic, rollouts_topic
        Full topic names (namespace included).
    updates
        Receives what is read.
    """

    def __init__(self, consumer_conf: dict[str, Any], models_topic: str, rollouts_topic: str,
                 updates: ModelUpdates) -> None:
        from confluent_kafka import Consumer

        self.topics = {models_topic: EDGE_MODEL, rollouts_topic: EDGE_ROLLOUT}
        self.updates = updates
        self.consumer = Consumer({**consumer_conf, "enable.auto.commit": False, "enable.partition.eof": False,
                                  "logger": librdkafka_logger("edge_agent.librdkafka")})  # as the Sender's
        self.bad_records = 0
        self._assigned: set[str] = set()
        self._found: list[Any] = []  # TopicPartitions the metadata thread found, not yet assigned
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._watcher: threading.Thread | None = None

    def poll(self) -> None:
        """Take whatever has arrived, without waiting; assign topics once the metadata thread found them."""
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch_topics, name="models-topics", daemon=True)
            self._watcher.start()
        with self._lock:
            parts, self._found = self._found, []
        if parts:
            self.consumer.incremental_assign(parts)
            self._assigned.update(p.topic for p in parts)
        if not self._assigned:
            return
        for msg in self.consumer.consume(100, timeout=0):
            if msg.error() is not None or msg.value() is None:
                continue
            event_type = self.topics[msg.topic()]
            try:
                record = self.updates.serde.decode(msg.value(), event_type)
            except Exception as exc:
                self.bad_records += 1
                log.warning("unreadable %s record at offset %d: %s", event_type, msg.offset(), exc)
                continue
            if event_type == EDGE_MODEL:
                self.updates.on_model(record)
            else:
                self.updates.on_rollout(record)

    def _watch_topics(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        found: set[str] = set()
        while True:
            try:
                meta = self.consumer.list_topics(timeout=_METADATA_TIMEOUT_S)
            except Exception as exc:  # broker away: try again later
                log.debug("models topics metadata: %s", exc)
            else:
                parts = []
                for name in self.topics:
                    tm = meta.topics.get(name)
                    if name not in found and tm is not None and tm.error is None and tm.partitions:
                        found.add(name)
                        parts += [TopicPartition(name, p, OFFSET_BEGINNING) for p in sorted(tm.partitions)]
                with self._lock:
                    self._found += parts
            if len(found) == len(self.topics) or self._closing.wait(_METADATA_EVERY_S):
                return

    def close(self) -> None:
        self._closing.set()
        if self._watcher is not None:
            self._watcher.join(_METADATA_TIMEOUT_S + 1)
        self.consumer.close()
