"""``[kafka] extra`` reaches every client that reads it: the Bytewax source, Faust's consumer and producer (where
aiokafka can say the same), our EventProducer and the notify flow's consumer; a consumer-only key goes to consumers
only and a producer-only key to producers only (librdkafka would log a CONFWARN line for each). Checked on the config
each client is built with."""

from __future__ import annotations

import pytest

from connectors.alerting import AlertDispatcher
from connectors.kafka import CONSUMER_ONLY, PRODUCER_ONLY, EventProducer, KafkaSettings, for_client
from streams.engines.bytewax import QUEUED_KBYTES, build_dataflow
from streams.engines.faust import build_app
from streams.engines.output import FlowOutput
from streams.flows.notify import Notifier, NotifyFlow, NotifySettings
from streams.flows.sensor_anomaly import sensor_anomaly_flow
from streams.processor import Emit

EXTRA = {"fetch.wait.max.ms": "10", "request.timeout.ms": "20000", "linger.ms": "7", "client.id": "tuned",
         "max.partition.fetch.bytes": "123456", "sasl.oauthbearer.extensions": "a=b"}
settings = KafkaSettings(bootstrap_servers="127.0.0.1:9", security_protocol="SASL_SSL",
                         sasl_mechanism="OAUTHBEARER", extra=EXTRA)
FOR_CONSUMERS = {k: v for k, v in EXTRA.items() if k not in PRODUCER_ONLY}  # all but linger.ms, request.timeout.ms
FOR_PRODUCERS = {k: v for k, v in EXTRA.items() if k not in CONSUMER_ONLY}  # all but the two fetch settings


def test_the_bytewax_source_gets_every_client_setting_and_the_extra_keys() -> None:
    flow = build_dataflow(sensor_anomaly_flow(), settings)
    source = flow.substeps[0].source
    config = source.consumer_config()  # every partition's consumer gets it, under the source's own keys
    assert {k: config[k] for k in EXTRA if k in config} == FOR_CONSUMERS
    assert config["queued.max.messages.kbytes"] == QUEUED_KBYTES  # a default of the source's that extra left alone
    admin = for_client(source.config, "admin")  # the admin client that lists partitions: no CONFWARN lines
    assert "fetch.wait.max.ms" not in admin and "max.partition.fetch.bytes" not in admin
    assert admin["sasl.oauthbearer.extensions"] == "a=b" and admin["client.id"] == "tuned"
    assert config["security.protocol"] == "sasl_ssl" and config["sasl.mechanism"] == "OAUTHBEARER"
    assert "group.id" not in config  # Bytewax assigns partitions and keeps offsets itself


def test_event_producer_and_notify_consumer_get_the_extra_keys() -> None:
    producer = EventProducer(settings)
    producer.close()
    assert {k: producer.config[k] for k in EXTRA if k in producer.config} == FOR_PRODUCERS
    flow = NotifyFlow(settings, Notifier(AlertDispatcher([]), NotifySettings()))
    try:
        assert {k: flow.consumer_config[k] for k in EXTRA if k in flow.consumer_config} == FOR_CONSUMERS
        assert flow.consumer_config["enable.auto.commit"] is False
        assert {k: flow.producer.config[k] for k in EXTRA if k in flow.producer.config} == FOR_PRODUCERS
    finally:
        flow.close()
    with pytest.raises(RuntimeError, match="closed"):  # closed, not only flushed: no client outlives the flow
        flow.producer.poll(0)


def test_faust_takes_what_aiokafka_can_express_and_refuses_a_security_key_it_cannot(tmp_path) -> None:
    plain = settings.model_copy(update={"security_protocol": "PLAINTEXT", "sasl_mechanism": None,
                                        "extra": {k: v for k, v in EXTRA.items() if not k.startswith("sasl.")}})
    app = build_app(sensor_anomaly_flow(), plain, state_dir=tmp_path)
    conf = app.conf
    assert conf.broker_client_id == "tuned"
    assert conf.broker_request_timeout == 20.0 and conf.producer_request_timeout == 20.0
    assert conf.producer_linger == 0.007 and conf.consumer_max_fetch_size == 123456
    with pytest.raises(ValueError, match="sasl.oauthbearer.extensions"):
        build_app(sensor_anomaly_flow(), settings.model_copy(update={"security_protocol": "PLAINTEXT",
                                                                     "sasl_mechanism": None}),
                  state_dir=tmp_path)


def test_an_output_no_encoder_takes_becomes_a_dead_letter_not_an_exception() -> None:
    out = FlowOutput(sensor_anomaly_flow(), KafkaSettings(namespace="ns."))
    bad_type = out.encode(Emit("scores.anomaly", "dev", "anomaly_score", {"threshold": "high"}))
    no_key = out.encode(Emit("scores.anomaly", None, "anomaly_score", {}))  # type: ignore[arg-type]
    assert bad_type.topic == no_key.topic == "ns.dlq.scores.anomaly"
    assert bad_type.headers["eddyline.dlq.reason"] == b"invalid_output" and bad_type.key == b"dev"
    assert no_key.headers["eddyline.dlq.reason"] == b"encode_failed" and no_key.key is None


def test_an_output_whose_key_no_encoder_takes_is_dead_lettered_with_that_key() -> None:
    """A key with a lone surrogate failed its encode and then the dead letter's: the flow died of one event."""
    out = FlowOutput(sensor_anomaly_flow(), KafkaSettings(namespace="ns."))
    letter = out.encode(Emit("alerts", "dev-\ud800", "alert", {"event_id": "a-1"}))
    assert letter.topic == "ns.dlq.alerts" and letter.headers["eddyline.dlq.reason"] == b"encode_failed"
    assert letter.key == "dev-\ud800".encode(errors="surrogatepass")
