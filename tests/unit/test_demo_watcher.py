"""The demo's output watcher reads what the flows write, with whatever schema registry they write through."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.kafka import KafkaSettings
from schemas import TRANSCRIPT


class _Msg:
    def __init__(self, value: bytes) -> None:
        self._value = value

    def value(self) -> bytes:
        return self._value


def test_transcripts_written_through_a_configured_schema_registry_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``[schema_registry] url`` set the flows write the registry's ids: read with the local registry only, the
    watcher's thread died on the first one and the demo counted nothing."""
    from connectors.schema_registry import configured_serde
    from connectors.testing.schema_registry import SchemaRegistryStandIn
    from streams.cli.demo import OutputWatcher

    record: dict[str, Any] = {"event_id": "t1", "event_time": 1_700_000_000_000, "producer": "demo",
                              "conversation_id": "c1", "segment": 0, "start_ms": 0, "end_ms": 1000, "text": "hello",
                              "language": "en", "confidence": None, "model": "tiny.en"}
    with SchemaRegistryStandIn() as registry:
        monkeypatch.setenv("EDDYLINE_SCHEMA_REGISTRY_URL", registry.url)
        settings = KafkaSettings()
        value = configured_serde().encode(TRANSCRIPT, record, topic=settings.topic("transcripts"))
        watcher = OutputWatcher(settings)
        watcher._take("transcripts", _Msg(value))
    assert watcher.transcripts == 1
