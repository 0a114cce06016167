"""The MQTT bridge: sensor fleets that already publish to an MQTT broker, into ``sensor.readings``.

``MqttSettings`` (``[mqtt]``, env ``EDDYLINE_MQTT_*``) says where the broker is and how payloads map to
readings; ``MqttBridge`` runs the bridge; ``command`` is ``eddyline bridge mqtt --config FILE``.
paho-mqtt is imported only when the bridge runs.
"""

from connectors.mqtt.mapping import MappingError, Subscription
from connectors.mqtt.settings import MqttSettings

__all__ = ["MappingError", "MqttBridge", "MqttSettings", "Subscription", "command"]


def __getattr__(name: str):  # paho loads only when the bridge is used
    if name in ("MqttBridge", "command"):
        from connectors.mqtt import bridge

        return getattr(bridge, name)
    raise AttributeError(name)
