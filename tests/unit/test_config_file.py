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


def test_a_misspelt_table_or_a_key_outside_any_table_is_an_error_not_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Skipped before: ``[kafak]`` ran the program against 127.0.0.1:9092 while its operator believed the file."""
    config = tmp_path / "eddyline.toml"
    monkeypatch.setenv("EDDYLINE_CONFIG", str(config))
    config.write_text('[kafak]\nbootstrap_servers = "kafka-1:9092"\n[schema_registy]\n')
    with pytest.raises(ConfigError) as caught:
        RuntimeSettings()  # any section refuses the file, not only the one the typo was meant for
    assert "unknown table [kafak]; did you mean [kafka]? Rename or remove it" in str(caught.value)
    assert "unknown table [schema_registy]; did you mean [schema_registry]?" in str(caught.value)
    config.write_text('namespace = "prod."\n[kafka]\n')
    with pytest.raises(ConfigError) as caught:
        KafkaSettings()
    assert "namespace is outside any table, so nothing reads it; move it under its table" in str(caught.value)


def test_a_table_that_another_program_reads_is_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "eddyline.toml"
    monkeypatch.setenv("EDDYLINE_CONFIG", str(config))
    config.write_text('[edge]\ndevice_id = "pi-1"\n[audio]\n[kafka]\nnamespace = "prod."\n')
    assert KafkaSettings().namespace == "prod."


def test_the_known_tables_are_those_of_the_sections() -> None:
    """A section whose table is missing from ``TABLES`` would be refused in every program that does not import it."""
    import importlib

    from connectors import config

    root = Path(config.__file__).resolve().parents[1]
    packages = ("connectors", "edge_agent", "models", "schemas", "streams")
    for package in packages:
        for file in sorted((root / package).rglob("*.py")):
            if "toml_table" in file.read_text():
                parts = file.relative_to(root).with_suffix("").parts
                importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    loaded = {cls.toml_table for cls in config._sections() if cls.toml_table and cls.__module__.startswith(
        tuple(f"{p}." for p in packages))}
    assert len(loaded) > 20 and loaded == config.TABLES
