from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from connectors.kafka import KafkaSettings, read_topic
from connectors.wav import read_wav
from schemas import AUDIO_CHUNK, AvroSerde
from streams.cli.audio import produce_command

pytestmark = pytest.mark.integration
DATA = Path(__file__).resolve().parents[1] / "data" / "audio"


def test_produce_audio_streams_wav_files_as_chunks(kafka_settings: KafkaSettings) -> None:
    app = typer.Typer()
    app.command("audio")(produce_command)
    app.command("noop")(lambda: None)
    files = [DATA / "call01.wav", DATA / "call11.wav"]
    env = {"EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
           "EDDYLINE_KAFKA_NAMESPACE": kafka_settings.namespace}
    result = CliRunner().invoke(app, ["audio", *map(str, files), "--speed", "0", "--chunk-ms", "500"], env=env)
    assert result.exit_code == 0, result.output
    serde = AvroSerde()
    records = [serde.decode(m.value(), AUDIO_CHUNK) for m in read_topic(kafka_settings, "audio.chunks", timeout=20, idle=2)]
    for f in files:
        mine = sorted((r for r in records if r["conversation_id"] == f.stem), key=lambda r: r["seq"])
        assert b"".join(r["pcm"] for r in mine) == read_wav(f).pcm
        assert [r["final"] for r in mine] == [False] * (len(mine) - 1) + [True]
