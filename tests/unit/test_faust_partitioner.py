"""The partition the Faust adapter re-keys an event to is the one the flow's producers give that key (librdkafka's
``partitioner``), so a state key has one changelog partition whichever path its events take."""

from __future__ import annotations

import pytest

from connectors.kafka import KafkaSettings
from streams.engines.faust import faust_options, producers_partition


def test_an_empty_key_goes_anywhere_as_the_producers_send_it_at_random():
    assert producers_partition(b"", 3) is None


def test_a_partitioner_the_repartition_topic_cannot_follow_is_refused_with_what_to_do():
    assert faust_options(KafkaSettings(extra={"partitioner": "murmur2_random"})) == {}
    with pytest.raises(ValueError, match="--engine bytewax"):
        faust_options(KafkaSettings(extra={"partitioner": "fnv1a_random"}))
