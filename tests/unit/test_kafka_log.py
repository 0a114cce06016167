"""librdkafka's FAIL lines are said once a minute per client and broker, and the filter forgets what is older."""

from __future__ import annotations

import logging

from connectors.kafka_log import OncePerMinute


def _fail(client: str, broker: str = "127.0.0.1:9/bootstrap") -> logging.LogRecord:
    """A FAIL line as confluent-kafka hands it to the logger (``"%s [%s] %s"``: facility, client, librdkafka's text)."""
    text = f"[thrd:{broker}]: {broker}: Connect to ipv4#127.0.0.1:9 failed: Connection refused (after 0ms)"
    return logging.LogRecord("librdkafka", logging.ERROR, __file__, 0, "%s [%s] %s", ("FAIL", client, text), None)


def test_a_client_and_broker_are_said_once_a_minute_and_other_brokers_on_their_own() -> None:
    now = [0.0]
    once = OncePerMinute(clock=lambda: now[0])
    assert once.filter(_fail("edge#producer-1"))
    assert not once.filter(_fail("edge#producer-1"))
    assert once.filter(_fail("edge#producer-1", "kafka-2:9092/2"))  # another broker of the same client
    assert once.filter(_fail("edge#producer-2"))  # another client
    now[0] = 60.0
    assert once.filter(_fail("edge#producer-1"))


def test_clients_of_more_than_a_minute_ago_are_forgotten() -> None:
    """Each client has a name of its own (``#producer-N``): a process that made a new one every minute while its
    broker was away (the edge sender does) kept an entry for each for ever, a Raspberry Pi offline for months."""
    now = [0.0]
    once = OncePerMinute(clock=lambda: now[0])
    for minute in range(1_000):
        now[0] = 61.0 * minute
        assert once.filter(_fail(f"edge#producer-{minute}"))
    assert len(once._last) == 1
