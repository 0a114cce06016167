"""Starting the agent: validate the configuration, then hand it to the lean runtime in the same process.

Validation needs pydantic, which alone costs a Raspberry Pi about 20 MB that the agent would carry for
months. So ``eddyline-edge run`` validates here, writes the plain result (settings, librdkafka config,
topic) to an anonymous in-memory file, and ``exec``s ``python -m edge_agent.runner`` with it: same PID
for systemd, no secret on the command line or in the environment, and a process that never imports
pydantic.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connectors.kafka import KafkaSettings
    from edge_agent.settings import EdgeSettings


def producer_conf(edge: EdgeSettings, kafka: KafkaSettings) -> dict[str, Any]:
    """The platform's producer defaults (idempotent, acks=all, compressed) tuned for a device on a flaky link.

    Options in ``[kafka] extra`` win over the agent's own choices.
    """
    from connectors.kafka import producer_config

    mine = {
        "message.timeout.ms": int(edge.send_timeout_s * 1000),
        "queue.buffering.max.messages": max(1000, edge.send_max_in_flight * 2),
        "reconnect.backoff.max.ms": 5000,  # notice a returning broker within seconds
        "client.id": f"eddyline-edge-{edge.device_id}",
    }
    return producer_config(kafka, **{k: v for k, v in mine.items() if k not in kafka.extra})


def models_plan(edge: EdgeSettings, kafka: KafkaSettings) -> dict[str, Any] | None:
    """The models feed's consumer settings and topics; None unless ``[edge.models]`` is enabled."""
    if not edge.models.enabled:
        return None
    from connectors.kafka import consumer_config

    conf = consumer_config(kafka, f"eddyline-edge-models-{edge.device_id}", **{"client.id": f"eddyline-edge-{edge.device_id}"})
    return {
        "consumer": {k: v for k, v in conf.items() if isinstance(v, (str, int, float, bool))},
        "models_topic": kafka.topic(edge.models.models_topic),
        "rollouts_topic": kafka.topic(edge.models.rollouts_topic),
    }


def plan(edge: EdgeSettings, kafka: KafkaSettings) -> dict[str, Any]:
    import edge_agent

    return {
        "edge": edge.model_dump(mode="json"),
        # Callables and objects (a logger) cannot cross exec; the Sender sets its own logger and callbacks.
        "producer": {k: v for k, v in producer_conf(edge, kafka).items() if isinstance(v, (str, int, float, bool))},
        "topic": kafka.topic(edge.topic),
        "health_topic": kafka.topic(edge.health_topic),
        "version": edge_agent.__version__,
        "models": models_plan(edge, kafka),
    }


def exec_runner(edge: EdgeSettings, kafka: KafkaSettings, duration: float | None, flush_timeout: float) -> None:
    """Replace this process with the lean runtime; returns only if exec fails."""
    fd = os.memfd_create("eddyline-edge-config", 0)  # inheritable: no MFD_CLOEXEC
    data = json.dumps(plan(edge, kafka)).encode()
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    argv = [sys.executable, "-m", "edge_agent.runner", "--plan-fd", str(fd), "--flush-timeout", str(flush_timeout)]
    if duration is not None:
        argv += ["--duration", str(duration)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)
