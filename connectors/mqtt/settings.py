"""The bridge's ``[mqtt]`` settings (env ``EDDYLINE_MQTT_*``): the broker, the session, the batching, the mappings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from connectors.config import Section
from connectors.mqtt.mapping import Subscription
from schemas.catalog import MAX_BATCH_READINGS


class MqttSettings(Section):
    """Where the MQTT broker is, who the bridge is to it, and how payloads become readings.

    The session is persistent (``client_id`` names it): messages published while the bridge is down wait
    in the broker, and messages the bridge received but did not acknowledge are sent again after a crash.
    A message is acknowledged only once Kafka confirmed the batch (or dead letter) that carries it.

    Parameters
    ----------
    host, port
        The MQTT broker (8883 is the usual TLS port).
    protocol
        ``"5"`` or ``"3.1.1"``.
    client_id
        Stable across restarts: the broker keeps the session (subscriptions, unacknowledged messages) under it.
    username, password
        Credentials, if the broker asks for them.
    tls, ca_file, cert_file, key_file, tls_insecure
        TLS to the broker: the CA that signed its certificate, a client certificate if it wants one;
        ``tls_insecure`` skips the host-name check (never in production).
    session_expiry_s
        MQTT 5: how long the broker keeps the session while the bridge is away.
    max_unacked
        Messages the bridge may hold unacknowledged; set it to the broker's in-flight limit (Mosquitto:
        ``max_inflight_messages``, 20 by default; MQTT 5 clients announce it as Receive Maximum). Open
        batches are sent early when the bridge nears it, so the broker never stalls waiting for acks.
    window_ms
        A batch holds one device's readings whose message time falls in one window of this length.
    lateness_ms
        A window closes once the device has sent a reading this much past its end...
    max_wait_ms
        ...or once its first message arrived this long ago, whichever comes first.
    max_readings
        A window with more readings, or one message with more, is sent in parts: a batch must fit a Kafka message
        (at most 50,000, ``schemas.catalog.MAX_BATCH_READINGS``).
    max_payload_bytes
        A larger message goes to the dead letters (``too_large``) unread: parsed, JSON takes some forty times its
        size in memory, and an MQTT message may be 256 MB.
    subscriptions
        Topic filters and how their payloads map (``Subscription``). No topic may match two filters: the broker
        would deliver such a message once per filter.
    """

    toml_table = "mqtt"
    model_config = SettingsConfigDict(env_prefix="EDDYLINE_MQTT_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    protocol: Literal["3.1.1", "5"] = "5"
    client_id: str = Field("eddyline-bridge", min_length=1)
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    tls_insecure: bool = False
    keepalive_s: int = Field(30, ge=5)
    session_expiry_s: int = Field(7 * 24 * 3600, ge=0)
    max_unacked: int = Field(1000, ge=1)
    window_ms: int = Field(1000, gt=0)
    lateness_ms: int = Field(1000, ge=0)
    max_wait_ms: int = Field(2000, gt=0)
    max_readings: int = Field(10_000, gt=0, le=MAX_BATCH_READINGS)
    max_payload_bytes: int = Field(4 * 2**20, gt=0)
    subscriptions: list[Subscription] = Field(default_factory=list)

    @model_validator(mode="after")
    def _usable(self) -> MqttSettings:
        if not self.subscriptions:
            raise ValueError(
                "the bridge has no subscriptions: add [[mqtt.subscriptions]] with topic = \"FILTER\" "
                "(and device/sensor/value mappings) to the config file"
            )
        for i, a in enumerate(self.subscriptions):
            for b in self.subscriptions[i + 1:]:
                if a.overlaps(b):
                    raise ValueError(
                        f"mqtt subscriptions {a.topic!r} and {b.topic!r} overlap: the broker would deliver a message "
                        "matching both twice and its readings would count twice; narrow one filter so that no topic "
                        "matches both"
                    )
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("set both mqtt cert_file and key_file for a client certificate, or neither")
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"mqtt {name} {str(path)!r} does not exist; fix the path in the config file")
        if self.password is not None and self.username is None:
            raise ValueError("mqtt password is set without a username; set username too")
        return self
