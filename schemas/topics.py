"""The logical topics and the event type each carries (names get the configured namespace prefix)."""

TOPICS: dict[str, str] = {
    "sensor.readings": "sensor_batch",
    "audio.chunks": "audio_chunk",
    "transcripts": "transcript",
    "clicks": "click",
    "predictions": "prediction",
    "feedback": "feedback",
    "scores.anomaly": "anomaly_score",
    "scores.sentiment": "sentiment_score",
    "drift": "drift",
    "alerts": "alert",
    "device.health": "device_health",
    "security.quarantine": "quarantine",  # compacted: the latest record per source is its standing
    "edge.models": "edge_model",
    "edge.rollouts": "edge_rollout",
    "routing": "routing_recommendation",
}
INPUT_TOPICS = (
    "sensor.readings", "audio.chunks", "transcripts", "clicks", "predictions", "feedback", "device.health",
    "security.quarantine",
)
# Topic settings eddyline creates a topic with. device.health: the broker stamps each heartbeat with its own
# clock, so the agent learns its clock offset from the acknowledgement and the fleet flow judges silence on
# broker time, not on device clocks.
# security.quarantine, edge.models and edge.rollouts are compacted: the latest record per key (source,
# class/version, class) is the state. alerts.delivered (the notify flow's record of deliveries made) is read back
# only as far as its window: it keeps a day more, the notify flow creating it from its configured window.
DELIVERED_TOPIC = "alerts.delivered"
DELIVERED_WINDOW_S = 7 * 86_400.0  # the default of [notify] delivered_window_s
RETENTION_MARGIN_S = 86_400.0


def retention_above(window_s: float) -> dict[str, str]:
    """Topic settings that keep records ``RETENTION_MARGIN_S`` (a day) longer than a reader's window.

    Parameters
    ----------
    window_s
        How far back the topic is read, in seconds.

    Examples
    --------
    >>> from schemas.topics import retention_above
    >>> retention_above(7 * 86_400)
    {'retention.ms': '691200000'}
    """
    return {"retention.ms": str(int((window_s + RETENTION_MARGIN_S) * 1000))}


TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    "device.health": {"message.timestamp.type": "LogAppendTime"},
    "security.quarantine": {"cleanup.policy": "compact"},
    "edge.models": {"cleanup.policy": "compact"},
    "edge.rollouts": {"cleanup.policy": "compact"},
    DELIVERED_TOPIC: retention_above(DELIVERED_WINDOW_S),
}
DLQ_PREFIX = "dlq."
RETRY_SUFFIX = ".retry"


def dlq_topic(source_topic: str) -> str:
    """The logical dead-letter topic of a logical topic: where what could not be read from it, or written to
    it, goes with the reason in headers.

    Parameters
    ----------
    source_topic
        The logical topic, without the namespace (the namespace is applied to the result like to any topic).

    Examples
    --------
    >>> from schemas.topics import dlq_topic
    >>> dlq_topic("sensor.readings")
    'dlq.sensor.readings'
    """
    return f"{DLQ_PREFIX}{source_topic}"


def retry_topic(topic: str) -> str:
    """The logical retry topic of a logical topic: its events again, each with the time it is due (headers), for
    a consumer whose side effect failed and must be tried later without holding the event in memory.

    Parameters
    ----------
    topic
        A logical topic name, e.g. ``alerts``.
    """
    return f"{topic}{RETRY_SUFFIX}"


RETRIED_TOPICS = ("alerts",)  # topics whose consumers retry through <topic>.retry (alert delivery)
ALL_TOPICS = [
    *TOPICS,
    *(dlq_topic(t) for t in INPUT_TOPICS),
    *(retry_topic(t) for t in RETRIED_TOPICS),
    *(dlq_topic(t) for t in RETRIED_TOPICS),
    DELIVERED_TOPIC,
]
