"""Which settings file is read: a set ``EDDYLINE_CONFIG`` must name a file, an empty file gives the defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.config import ConfigError, config_path
from connectors.kafka import KafkaSettings
from streams.runtime import RuntimeSettings


@pytest.fixture(autouse=True)
def _no_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in [n for n in os.environ if n.startswith(("EDDYLINE_KAFKA_", "EDDYLINE_RUNTIME_"))]:
        monkeypatch.delenv(name)


def test_a_mistyped_path_is_an_error_that_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "eddyline.toml").write_text('[kafka]\nnamespace = "prod."\n')
    typo = tmp_path / "eddylin.toml"
    monkeypatch.setenv("EDDYLINE_CONFIG", str(typo))
    with pytest.raises(ConfigError) as caught:
        KafkaSettings()
    assert f"EDDYLINE_CONFIG names {typo}, which does not exist" in str(caught.value)
    assert "fix the path, or unset EDDYLINE_CONFIG" in str(caught.value)
    monkeypatch.setenv("EDDYLINE_CONFIG", str(tmp_path))
    with pytest.raises(ConfigError, match="is a directory, not a TOML file"):
        RuntimeSettings()


def test_an_empty_file_gives_the_defaults(defaults_config: Path) -> None:
    assert defaults_config.read_text() == "" and config_path() == defaults_config
    assert KafkaSettings() == KafkaSettings.model_construct()
    assert RuntimeSettings().batch_size == RuntimeSettings.model_fields["batch_size"].default


def test_unset_or_empty_reads_the_working_directorys_file_and_it_is_optional(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EDDYLINE_CONFIG", raising=False)
    assert config_path() == Path("eddyline.toml")
    default = KafkaSettings().namespace  # no ./eddyline.toml: the defaults, no error
    (tmp_path / "eddyline.toml").write_text('[kafka]\nnamespace = "cwd."\n')
    assert KafkaSettings().namespace == "cwd." != default
    monkeypatch.setenv("EDDYLINE_CONFIG", "")
    assert KafkaSettings().namespace == "cwd."


def test_a_settings_file_that_cannot_be_read_is_an_error_that_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EDDYLINE_CONFIG", raising=False)
    (tmp_path / "eddyline.toml").mkdir()  # silently the defaults before
    with pytest.raises(ConfigError, match="is not a file; remove or rename it"):
        KafkaSettings()
    latin = tmp_path / "latin.toml"
    latin.write_bytes('[kafka]\nnamespace = "caf\xe9."\n'.encode("latin-1"))
    monkeypatch.setenv("EDDYLINE_CONFIG", str(latin))
    with pytest.raises(ConfigError, match="is not UTF-8 text .* save it as UTF-8"):
        KafkaSettings()
