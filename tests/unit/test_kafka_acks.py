"""Which delivery reports prove nothing: delivered, with no offset (``connectors.kafka_acks``)."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaError, Message

from connectors.kafka_acks import UnconfirmedAcks

LOG = logging.getLogger("tests.kafka_acks")


def _report(offset: int | None) -> Message:
    return Message(topic="t.sensor.readings", partition=2, key=b"pi", value=b"v",
                   **({"offset": offset} if offset is not None else {}))


def test_a_report_without_an_offset_is_unconfirmed_counted_and_logged_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    check = UnconfirmedAcks({"acks": "all"}, LOG)
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        assert check(None, _report(None), "batch seq 7")
        assert check(None, _report(-1001))
    assert check.count == 2
    assert [r.getMessage()[:35] for r in caplog.records] == ["batch seq 7 to t.sensor.readings[2]"]
    assert "2 such" not in caplog.text  # the second is held back


def test_stored_failed_and_acks_0_reports_are_not_unconfirmed() -> None:
    check = UnconfirmedAcks({"acks": "all"}, LOG)
    assert not check(None, _report(0))
    assert not check(None, _report(41))
    assert not check(KafkaError(KafkaError._MSG_TIMED_OUT), _report(None))  # a failure, not an acknowledgement
    assert not UnconfirmedAcks({"acks": "0"}, LOG)(None, _report(None))  # acks=0: no report has an offset
    assert not UnconfirmedAcks({"request.required.acks": 0}, LOG)(None, _report(None))
    assert check.count == 0


def test_the_later_of_acks_and_its_alias_counts_as_librdkafka_applies_them_in_order() -> None:
    """``producer_config`` puts ``acks=all`` first and ``[kafka] extra``'s ``request.required.acks=0`` after it."""
    assert not UnconfirmedAcks({"acks": "all", "request.required.acks": "0"}, LOG)(None, _report(None))
    assert UnconfirmedAcks({"request.required.acks": "0", "acks": "all"}, LOG)(None, _report(None))
