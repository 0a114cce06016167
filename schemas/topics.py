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
}
INPUT_TOPICS = ("sensor.readings", "audio.chunks", "transcripts", "clicks", "predictions", "feedback")
ALL_TOPICS = [*TOPICS, *(f"dlq.{t}" for t in INPUT_TOPICS)]
