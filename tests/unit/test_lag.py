"""Consumer lag arithmetic and where the metric is listed; the broker side is in tests/integration."""

from __future__ import annotations

from connectors.kafka import KafkaSettings
from connectors.lag import PartitionLag
from streams.catalog import metrics
from streams.engines.lag import consumer_group


def test_lag_counts_from_the_committed_offset_or_the_log_start() -> None:
    assert PartitionLag("t", 0, committed=40, start=10, high=100).lag == 60
    assert PartitionLag("t", 0, committed=None, start=10, high=100).lag == 90
    assert PartitionLag("t", 0, committed=100, start=0, high=100).lag == 0


def test_lag_is_never_negative() -> None:
    assert PartitionLag("t", 0, committed=120, start=0, high=100).lag == 0


def test_the_catalog_lists_the_lag_gauge_without_a_per_device_label() -> None:
    m = metrics()["eddyline_consumer_lag"]
    assert (m.kind, m.labels) == ("gauge", ("flow", "topic", "partition"))


def test_each_engine_has_its_own_group_under_the_namespace() -> None:
    s = KafkaSettings(namespace="staging.")
    assert consumer_group("anomaly", "faust", s) == "staging.eddyline-anomaly"
    assert consumer_group("anomaly", "bytewax", s) == "staging.eddyline-anomaly-bytewax"


def test_a_group_whose_offsets_cannot_be_read_does_not_blank_the_others(monkeypatch) -> None:
    """The live page reads every flow's group in one go: one group mid-rebalance left no sample for any flow."""
    import confluent_kafka
    import pytest

    from connectors.lag import LagReader

    reader = LagReader(KafkaSettings(bootstrap_servers="127.0.0.1:1"), timeout_s=0.5)
    try:
        def committed(group: str, partitions: list) -> dict:
            if group == "rebalancing":
                raise confluent_kafka.KafkaException(confluent_kafka.KafkaError(
                    confluent_kafka.KafkaError.REBALANCE_IN_PROGRESS))
            return {p: 5 for p in partitions}

        monkeypatch.setattr(reader, "partitions", lambda topics: [(t, 0) for t in topics])
        monkeypatch.setattr(reader, "committed", committed)
        monkeypatch.setattr(reader, "watermarks", lambda starts: {key: (0, 9) for key in starts})
        found = reader.lags({"steady": ["a"], "rebalancing": ["b"]})
        assert list(found) == ["steady"] and found["steady"][0].lag == 4
        with pytest.raises(confluent_kafka.KafkaException):  # none readable: the caller's error path, as before
            reader.lags({"rebalancing": ["b"]})
    finally:
        reader.close()
