from pathlib import Path

import typer
from typer.testing import CliRunner

from streams.cli.audio import transcribe_command

DATA = Path(__file__).resolve().parents[1] / "data" / "audio"


def app() -> typer.Typer:
    a = typer.Typer()
    a.command("transcribe")(transcribe_command)
    a.command("noop")(lambda: None)  # two commands, so typer keeps the subcommand name
    return a


def test_transcribe_prints_the_text():
    result = CliRunner().invoke(app(), ["transcribe", str(DATA / "call09.wav")])
    assert result.exit_code == 0, result.output
    assert "technician was friendly" in result.output.lower()


def test_transcribe_refuses_a_file_that_is_not_wav(tmp_path):
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio")
    result = CliRunner().invoke(app(), ["transcribe", str(bad)], env={"COLUMNS": "400"})
    assert result.exit_code != 0 and "not a PCM WAV" in result.output


def test_a_model_that_cannot_be_loaded_names_the_option_and_what_to_give_instead(tmp_path):
    """A folder that holds no model was a backtrace (CTranslate2's RuntimeError), a path that does not exist an
    error about Hugging Face repo ids: neither said that --model was the problem."""
    from streams.cli import app as eddyline

    (tmp_path / "notes.txt").write_text("not a model")
    for model in (str(tmp_path), str(tmp_path / "missing")):
        result = CliRunner().invoke(eddyline, ["transcribe", "--model", model, str(DATA / "call09.wav")],
                                    env={"COLUMNS": "400"})
        assert result.exit_code == 2, result.output
        assert f"cannot load the speech model {model!r}" in result.output and "--model takes bundled" in result.output
        assert "Traceback" not in result.output
