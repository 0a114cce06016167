"""The notify flow against the real broker and the loopback PagerDuty/Slack receiver: delivery, outages,
dead letters, redrive and replays."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY

from connectors.alerting import AlertDispatcher
from connectors.dlq import dlq_info
from connectors.kafka import EventProducer, KafkaSettings, create_topics, read_topic
from connectors.pagerduty import PagerDutySettings, PagerDutySink
from connectors.slack import SlackSettings, SlackSink
from connectors.testing.alert_receiver import AlertReceiver
from schemas import ALERT
from schemas.retry import DESTINATION, retry_info
from streams.flows.notify import DLQ_TOPIC, RETRY_TOPIC, Notifier, NotifyFlow, NotifySettings, redrive

pytestmark = pytest.mark.integration
ROUTING_KEY = "0123456789abcdef0123456789abcdef"


def alert(key: str, status: str = "OPENED", n: int = 0) -> dict[str, Any]:
    return {
        "event_id": f"{key}-{status}-{n}",
        "event_time": 1_700_000_000_000 + n,
        "producer": "test",
        "alert_key": key,
        "status": status,
        "severity": "ERROR",
        "source": "sensor-anomaly",
        "entity": f"{key}/temp",
        "summary": f"anomaly on {key}",
        "value": 1.5,
        "details": {},
    }


def publish(settings: KafkaSettings, alerts: list[dict[str, Any]], raw: list[bytes] = ()) -> None:
    create_topics(settings, ["alerts"])
    with EventProducer(settings) as producer:
        for value in raw:
            producer.produce_raw("alerts", value, key="garbage")
        for a in alerts:
            producer.produce("alerts", ALERT, a, key=a["alert_key"])


def channels(receiver: AlertReceiver) -> AlertDispatcher:
    """The real PagerDuty and Slack channels, one attempt each, pointed at the loopback receiver."""
    return AlertDispatcher([
        PagerDutySink(PagerDutySettings(routing_key=ROUTING_KEY, url=receiver.pagerduty_url,
                                        ca_file=str(receiver.ca_file), max_retries=0, timeout=5)),
        SlackSink(SlackSettings(webhook_url=receiver.slack_url, max_retries=0, timeout=5)),
    ])


FAST = {"backoff_s": 0.05, "backoff_cap_s": 0.5, "breaker_failures": 3, "breaker_reset_s": 0.5}


class Running:
    """The notify flow on its own thread while in a ``with`` block. Its waits stop with the thread's exception as
    soon as the thread dies, instead of running to their timeout as if delivery were only slow.

    Parameters
    ----------
    flow
        The flow to run.
    receiver
        The loopback PagerDuty/Slack receiver its channels post to.
    """

    def __init__(self, flow: NotifyFlow, receiver: AlertReceiver) -> None:
        self.flow = flow
        self.receiver = receiver
        self.stop = threading.Event()
        self.died: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.flow.run(self.stop)
        except BaseException as e:  # reported by check(), in the test's thread
            self.died.append(e)

    @property
    def handled(self) -> int:
        return self.flow.handled

    def check(self) -> None:
        """Raise the flow thread's exception if it died; fail if it ended without being asked to stop."""
        if self.died:
            raise AssertionError(f"the notify flow died: {self.died[0]!r}") from self.died[0]
        if not self.thread.is_alive() and not self.stop.is_set():
            raise AssertionError("the notify flow returned before it was stopped")

    def wait(self, predicate: Callable[[], bool], timeout: float = 60.0) -> bool:
        """Poll ``predicate`` until it holds (True) or ``timeout`` passes (False).

        Parameters
        ----------
        predicate
            The condition.
        timeout
            Seconds to wait at most.
        """
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def wait_for(self, predicate: Callable[[AlertReceiver], bool], timeout: float = 60.0) -> bool:
        """``AlertReceiver.wait_for`` in short slices, looking at the flow thread between them.

        Parameters
        ----------
        predicate
            The condition on the receiver.
        timeout
            Seconds to wait at most.
        """
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            if self.receiver.wait_for(predicate, timeout=min(0.5, max(0.0, deadline - time.monotonic()))):
                return True
            if time.monotonic() >= deadline:
                return False

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the notify flow did not stop"
        if exc_type is None:
            self.check()


def notifying(settings: KafkaSettings, receiver: AlertReceiver, **options: Any) -> Running:
    return Running(NotifyFlow(settings, Notifier(channels(receiver), NotifySettings(**{**FAST, **options}))), receiver)


def breaker(sink: str) -> float:
    return REGISTRY.get_sample_value("eddyline_alert_breaker_state", {"sink": sink}) or 0.0


def test_delivers_every_alert_to_both_channels_and_a_replay_opens_no_second_incident(kafka_settings, alert_receiver):
    alerts = [alert("k1"), alert("k1", "UPDATED", 1), alert("k1", "RESOLVED", 2), alert("k2")]
    publish(kafka_settings, alerts)
    with notifying(kafka_settings, alert_receiver) as flow:
        assert flow.wait_for(lambda r: r.counts["pagerduty_events"] == 4 and
                             r.counts["slack_messages"] == 4, timeout=60)
        publish(kafka_settings, alerts)  # a scoring flow replays its last epoch after a crash
        assert flow.wait(lambda: flow.handled >= 8)
    with notifying(kafka_settings, alert_receiver) as flow:  # a restart resumes after the committed offsets
        publish(kafka_settings, [*alerts, alert("k3")])  # and recognises a replay that comes after it
        assert flow.wait_for(lambda r: r.counts["pagerduty_events"] == 5, timeout=60)
        assert flow.wait(lambda: flow.handled == 5)
        time.sleep(1.0)
    assert flow.handled == 5  # only what came after the first run's commits
    assert alert_receiver.counts["pagerduty_events"] == 5 and alert_receiver.counts["slack_messages"] == 5
    assert {k: (i["opened"], i["status"]) for k, i in alert_receiver.incidents.items()} == {
        "k1": (1, "resolved"), "k2": (1, "triggered"), "k3": (1, "triggered")}
    assert not alert_receiver.rejected


def test_a_wait_stops_with_the_flow_threads_exception_when_the_flow_dies(kafka_settings, alert_receiver):
    running = notifying(kafka_settings, alert_receiver)
    running.flow.consumer.close()  # the flow dies as it starts: it cannot subscribe
    returned: list[bool] = []
    with pytest.raises(AssertionError, match="the notify flow died") as died:
        with running as flow:
            returned.append(flow.wait_for(lambda r: r.accepted_total == 1, timeout=600))
    assert returned == [] and isinstance(died.value.__cause__, RuntimeError), died.value.__cause__


def test_an_outage_delays_delivery_loses_nothing_and_opens_each_incident_once(kafka_settings, alert_receiver):
    keys = [f"out-{i}" for i in range(10)]
    alert_receiver.outage(503)
    with notifying(kafka_settings, alert_receiver) as flow:
        publish(kafka_settings, [alert(k) for k in keys])
        assert flow.wait(lambda: breaker("pagerduty") == 2 and breaker("slack") == 2), "the breakers should open"
        publish(kafka_settings, [alert(k, "RESOLVED", 5) for k in keys[:5]])
        assert flow.wait(lambda: flow.handled >= 20)
        time.sleep(2.0)  # the outage goes on; alerts wait on the retry topic, not in memory
        assert alert_receiver.accepted_total == 0
        scheduled = read_topic(kafka_settings, RETRY_TOPIC, timeout=10)
        assert {retry_info(m.headers()).destination for m in scheduled} == {"pagerduty", "slack"}
        alert_receiver.recover()

        def settled(r: AlertReceiver) -> bool:
            resolved = {k for k, i in r.incidents.items() if i["status"] == "resolved"}
            return set(r.incidents) == set(keys) and resolved == set(keys[:5]) and r.counts["slack_messages"] >= 15

        assert flow.wait_for(settled, timeout=60), alert_receiver.counts
    assert all(i["opened"] == 1 and i["triggers"] == 1 for i in alert_receiver.incidents.values())
    # a trigger that got through after its resolve is followed by the resolve again: more resolves, never more
    assert sum(e["event_action"] == "trigger" for e in alert_receiver.events) == 10
    assert breaker("pagerduty") == 0 and breaker("slack") == 0
    assert read_topic(kafka_settings, DLQ_TOPIC, timeout=5) == []


def test_a_dead_lettered_alert_is_redriven_and_delivered_once(kafka_settings, alert_receiver):
    alert_receiver.outage(500)
    with notifying(kafka_settings, alert_receiver, max_attempts=2) as flow:
        publish(kafka_settings, [alert("dead")])
        letters = read_topic(kafka_settings, DLQ_TOPIC, expected=2, timeout=60)
        assert len(letters) == 2
        assert {dict(m.headers())[DESTINATION] for m in letters} == {b"pagerduty", b"slack"}
        for m in letters:
            info = dlq_info(m.headers())
            assert info["reason"] == "delivery_failed" and "2 attempts" in info["error"]
        assert alert_receiver.accepted_total == 0
        alert_receiver.recover()
        report = redrive(kafka_settings)
        assert report.redriven == 2 and report.by_reason == {"delivery_failed": 2}
        assert flow.wait_for(lambda r: r.accepted_total == 2, timeout=60)
        assert redrive(kafka_settings).redriven == 0  # each letter is redriven once
        time.sleep(1.0)
    assert alert_receiver.counts["pagerduty_events"] == 1 and alert_receiver.counts["slack_messages"] == 1
    assert alert_receiver.incidents["dead"]["opened"] == 1


def test_undecodable_and_invalid_alerts_are_dead_lettered_and_the_flow_goes_on(kafka_settings, alert_receiver):
    invalid = alert("bad") | {"summary": ""}
    publish(kafka_settings, [invalid, alert("good")], raw=[b"not an alert"])
    with notifying(kafka_settings, alert_receiver) as flow:
        assert flow.wait_for(lambda r: r.accepted_total == 2, timeout=60)
        letters = read_topic(kafka_settings, DLQ_TOPIC, expected=2, timeout=30)
    assert sorted(dlq_info(m.headers())["reason"] for m in letters) == ["invalid_alert", "undecodable"]
    assert all(dlq_info(m.headers())["topic"] == kafka_settings.topic("alerts") for m in letters)
    assert set(alert_receiver.incidents) == {"good"}


def test_a_refused_alert_is_dead_lettered_at_once(kafka_settings, alert_receiver):
    alert_receiver.routing_keys = frozenset({"f" * 32})  # PagerDuty refuses our key (400): no retry can help
    with notifying(kafka_settings, alert_receiver) as flow:
        publish(kafka_settings, [alert("refused")])
        letters = read_topic(kafka_settings, DLQ_TOPIC, expected=1, timeout=60)
        assert flow.wait_for(lambda r: r.counts["slack_messages"] == 1, timeout=30)
    assert [dlq_info(m.headers())["reason"] for m in letters] == ["refused"]
    assert dict(letters[0].headers())[DESTINATION] == b"pagerduty"
    assert read_topic(kafka_settings, RETRY_TOPIC, timeout=3) == []


def test_scoring_completes_while_pagerduty_is_down_and_every_incident_opens_once_after(
        kafka_settings, alert_receiver, tmp_path):
    from tests.integration.test_sensor_flow import publish as publish_readings
    from tests.integration.test_sensor_flow import reference, simulated, start_flow, start_notify, stop, unique_scores

    records, _ = simulated(devices=4, messages=600, seed=5)
    expected = reference(records)
    opened = {e.record["alert_key"] for e in expected if e.topic == "alerts" and e.record["status"] == "OPENED"}
    assert opened, "the simulated anomalies should raise alerts"
    alert_receiver.outage(503)
    notify = start_notify(kafka_settings, alert_receiver)
    flow = start_flow(kafka_settings, tmp_path / "state")
    try:
        publish_readings(kafka_settings, records)
        scores = unique_scores(kafka_settings, len(records), timeout=120)
        assert len(scores) == len(records)  # every reading scored while no alert could be delivered
        assert alert_receiver.wait_for(lambda r: r.counts["failures_injected"] > 0, timeout=30)  # notify tried
        assert alert_receiver.accepted_total == 0
        alert_receiver.recover()
        assert alert_receiver.wait_for(lambda r: set(r.incidents) >= opened, timeout=90)
    finally:
        log = stop(flow) + stop(notify)
    assert set(alert_receiver.incidents) == opened, log
    assert all(i["opened"] == 1 for i in alert_receiver.incidents.values())
    assert read_topic(kafka_settings, DLQ_TOPIC, timeout=3) == []


def test_alerts_read_again_after_lost_commits_post_nothing_twice(kafka_settings, alert_receiver):
    # Slack has no dedup key: what was delivered is recorded on alerts.delivered, and a flow that reads the
    # same alerts again (its commits lost in a crash, or another group member after a rebalance) skips them.
    alerts = [alert("d1"), alert("d1", "RESOLVED", 1), alert("d2")]
    publish(kafka_settings, alerts)
    with notifying(kafka_settings, alert_receiver, group_id="notify-first") as flow:
        assert flow.wait_for(lambda r: r.counts["slack_messages"] == 3 and
                             r.counts["pagerduty_events"] == 3, timeout=60)
    # a group with no committed offsets reads every alert again, as one whose commits never landed would
    with notifying(kafka_settings, alert_receiver, group_id="notify-second") as flow:
        publish(kafka_settings, [alert("d3")])
        assert flow.wait_for(lambda r: r.counts["slack_messages"] >= 4, timeout=60)
        assert flow.wait(lambda: flow.handled >= 4)
        time.sleep(1.0)
    assert alert_receiver.counts["slack_messages"] == 4 and alert_receiver.counts["pagerduty_events"] == 4
    assert {k: i["opened"] for k, i in alert_receiver.incidents.items()} == {"d1": 1, "d2": 1, "d3": 1}


@pytest.mark.parametrize("committed", [False, True], ids=["killed-at-delivery", "killed-after-commit"])
def test_the_flow_rejoins_after_a_durable_broker_restart_and_delivers_each_alert_once(
        durable_broker, alert_receiver, committed):
    """The broker (Tansu 0.6 on S3) gives a partition's offsets out again from 0 after a restart
    (``tests/chaos/test_broker_restart.py``, a strict xfail), behind the offsets the flow committed before the kill.
    Alerts written first after the restart were hidden there whenever the flow's commit beat the kill (under load:
    the test timed out waiting for them; every time with ``committed``), so the scoring side replays the alerts of
    before first, as it does after a crash: they are read and recognised, or hidden behind the commits, and the
    resolves land past them."""
    kafka = KafkaSettings(bootstrap_servers=durable_broker.bootstrap, namespace="rejoin.", session_timeout_ms=6000,
                          extra={"fetch.wait.max.ms": 100, "enable.idempotence": False,
                                 "max.in.flight.requests.per.connection": 1})
    before = [alert(f"r{i}") for i in range(5)]
    after = [alert(f"r{i}", "RESOLVED", 1) for i in range(5)]
    with notifying(kafka, alert_receiver) as flow:
        publish(kafka, before)
        assert flow.wait_for(lambda r: r.counts["slack_messages"] == 5, timeout=90)
        if committed:
            assert flow.wait(lambda: flow.handled == 5)  # counted once its batch's commit returned
        durable_broker.kill()
        durable_broker.start()
        publish(kafka, [*before, *after])
        assert flow.wait_for(lambda r: r.counts["slack_messages"] >= 10 and
                             r.counts["pagerduty_events"] >= 10, timeout=120), alert_receiver.counts
        time.sleep(2.0)
    assert alert_receiver.counts["slack_messages"] == 10 and alert_receiver.counts["pagerduty_events"] == 10
    assert all(i["opened"] == 1 and i["status"] == "resolved" for i in alert_receiver.incidents.values())


class KillsKafkaAfterPosting:
    """The real Slack channel; the broker is killed as soon as its first message is posted, so that message's
    record on ``alerts.delivered`` cannot be written (the flush fails).

    Parameters
    ----------
    sink
        The Slack channel.
    broker
        The broker to kill.
    """

    name = "slack"

    def __init__(self, sink: SlackSink, broker: Any) -> None:
        self.sink, self.broker, self.killed = sink, broker, False

    def deliver(self, a: dict[str, Any]) -> None:
        self.sink.deliver(a)
        if not self.killed:
            self.killed = True
            self.broker.kill()

    def close(self) -> None:
        self.sink.close()


def test_a_delivery_whose_record_a_flush_lost_is_not_posted_again_after_a_restart(durable_broker, alert_receiver):
    kafka = KafkaSettings(bootstrap_servers=durable_broker.bootstrap, namespace="lost.", session_timeout_ms=6000,
                          extra={"fetch.wait.max.ms": 100, "enable.idempotence": False,
                                 "max.in.flight.requests.per.connection": 1, "message.timeout.ms": 3000})

    def slack() -> SlackSink:
        return SlackSink(SlackSettings(webhook_url=alert_receiver.slack_url, max_retries=0, timeout=5))

    first = NotifyFlow(kafka, Notifier(AlertDispatcher([KillsKafkaAfterPosting(slack(), durable_broker)]),
                                       NotifySettings(**FAST, rejoin_wait_s=600)))
    with Running(first, alert_receiver) as flow:
        publish(kafka, [alert("x")])
        assert flow.wait_for(lambda r: r.counts["slack_messages"] == 1, timeout=90)
        assert flow.wait(lambda: first.rejoins == 1, timeout=60)  # the flush failed: nothing committed
        durable_broker.start()
    # stopped while it waited to rejoin: the alert is read again, by a restart here (or another member)
    second = NotifyFlow(kafka, Notifier(AlertDispatcher([slack()]), NotifySettings(**FAST)))
    with Running(second, alert_receiver) as flow:
        assert flow.wait(lambda: second.handled == 1, timeout=90)
        time.sleep(1.0)
    assert (first.handled, alert_receiver.counts["slack_messages"]) == (0, 1)
