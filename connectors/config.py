"""Settings for every concern come from one TOML file and ``EDDYLINE_*`` environment variables.

Each concern declares its own ``Section`` subclass with a TOML table and an env prefix, e.g.
``KafkaSettings`` reads ``[kafka]`` and ``EDDYLINE_KAFKA_*``. Precedence: arguments, then environment,
then the file named by ``EDDYLINE_CONFIG`` (default ``eddyline.toml`` in the working directory).

One file serves every eddyline program, so a program accepts the tables of the others (an agent's file may hold the
flows' ``[audio]``) and needs only its own. A table no eddyline program reads (``[kafak]``), or a key outside any
table, is an error: skipped, it would run the program on the defaults while its operator believes the file applies.
Settings of other tools do not belong in this file.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)


OFF = "off"
"""The value that turns an optional channel off explicitly (a deployment that must set every secret, like the
compose stack, says ``off`` instead of leaving it empty)."""


def channel_on(secret: SecretStr | None) -> bool:
    """Whether a channel's secret (a routing key, a webhook URL) turns it on: set, non-empty and not ``off``.

    Parameters
    ----------
    secret
        The channel's secret setting.

    Examples
    --------
    >>> from pydantic import SecretStr
    >>> [channel_on(v) for v in (None, SecretStr(""), SecretStr("off"), SecretStr("R0UT1NG"))]
    [False, False, False, True]
    """
    return secret is not None and secret.get_secret_value().strip() not in ("", OFF)


def config_path() -> Path:
    """The settings file: ``EDDYLINE_CONFIG`` if set, else ``eddyline.toml`` in the working directory.

    A set ``EDDYLINE_CONFIG`` that names no file is an error rather than the defaults: a mistyped path
    (``/etc/eddyline/eddylin.toml``) would otherwise run a deployment on embedded defaults without a word.
    Only the working directory's ``eddyline.toml`` is optional. An empty value counts as unset.
    """
    named = os.environ.get("EDDYLINE_CONFIG", "").strip()
    if not named:
        path = Path("eddyline.toml")
        if path.exists() and not path.is_file():
            raise ConfigError(f"./{path} is not a file; remove or rename it, or set EDDYLINE_CONFIG to the TOML file")
        return path
    path = Path(named)
    if not path.is_file():
        what = "is a directory, not a TOML file" if path.is_dir() else "does not exist"
        raise ConfigError(
            f"EDDYLINE_CONFIG names {path}, which {what}; fix the path, or unset EDDYLINE_CONFIG "
            "to read ./eddyline.toml (or the defaults without it)"
        )
    return path


class ConfigError(ValueError):
    """A configuration a person must fix: the message names the key and what to change.

    Entry points exit with status 2 on it, which systemd units treat as final (``RestartPreventExitStatus=2``).
    """


class Section(BaseSettings):
    """Base for a concern's settings: subclasses set ``toml_table`` and ``model_config['env_prefix']``.

    Values come from, in order of precedence: constructor arguments, the environment
    (``EDDYLINE_<SECTION>_<FIELD>``), then the section's table in the file of ``config_path()``. A file
    without the table gives the defaults; a file that is not valid TOML, or holds a table or key that no section
    reads, is an error that names it.
    Subclasses document their fields (a ``Field(description=...)`` or a ``Parameters`` entry).

    Examples
    --------
    >>> import os
    >>> from connectors.kafka import KafkaSettings
    >>> os.environ["EDDYLINE_KAFKA_NAMESPACE"] = "test."
    >>> KafkaSettings().namespace, KafkaSettings(namespace="arg.").namespace
    ('test.', 'arg.')
    >>> del os.environ["EDDYLINE_KAFKA_NAMESPACE"]
    """

    toml_table: ClassVar[str] = ""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = config_path()
        if path.is_file() and cls.toml_table and cls.toml_table in _tables(path):
            sources.append(TomlConfigSettingsSource(settings_cls, path, toml_table_header=(cls.toml_table,)))
        return tuple(sources)


def _tables(path: Path) -> set[str]:
    """The top-level tables of a TOML file, each read by some program; a concern without its table has defaults."""
    import tomllib

    try:
        with path.open("rb") as f:
            document = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}; fix it or point EDDYLINE_CONFIG elsewhere") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8 or point "
                          "EDDYLINE_CONFIG elsewhere") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path} ({exc.strerror}); make it readable or point EDDYLINE_CONFIG "
                          "elsewhere") from None
    _refuse_unread(path, document)
    return set(document)


def _refuse_unread(path: Path, document: dict[str, Any]) -> None:
    known = known_tables()
    problems = []
    for key, value in document.items():
        if not isinstance(value, dict):
            problems.append(f"{key} is outside any table, so nothing reads it; move it under its table ([kafka], "
                            "[edge], ...)")
        elif key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean [{close[0]}]?" if close else f" (eddyline reads {', '.join(sorted(known))})"
            problems.append(f"unknown table [{key}]{hint} Rename or remove it")
    if problems:
        raise ConfigError(f"{path} holds settings that no eddyline program reads:\n  " + "\n  ".join(problems))


# Every table some eddyline program reads. A program imports only its own sections (the edge agent never imports the
# flows, and its image does not carry them), so the list is written out; a unit test checks it against every Section.
TABLES = frozenset({
    "audio", "broker", "drift", "edge", "fleet", "gateway", "influx", "kafka", "live", "mlflow", "model_security",
    "mqtt", "notify", "pagerduty", "quality", "recommend", "retraining", "rollout", "routing", "runtime",
    "schema_registry", "slack",
})


def known_tables() -> frozenset[str]:
    """Every table that some eddyline program reads (``TABLES``), and those of sections defined elsewhere once their
    module is imported.

    Examples
    --------
    >>> {"kafka", "edge", "audio", "schema_registry"} <= known_tables()
    True
    """
    return TABLES | {cls.toml_table for cls in _sections() if cls.toml_table}


def _sections() -> list[type[Section]]:
    """Every ``Section`` subclass imported so far."""
    found, pending = [], list(Section.__subclasses__())
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def _section(title: str) -> type[Section] | None:
    return next((cls for cls in _sections() if cls.__name__ == title), None)


def _problem(error: dict[str, Any], fields: list[str]) -> str:
    key = str(error["loc"][0]) if error["loc"] else ""
    if error["type"] == "extra_forbidden":
        close = difflib.get_close_matches(key, fields, n=1)
        return "unknown key" + (f"; did you mean {close[0]}?" if close else "") + " Rename or remove it"
    got = f" (got {error['input']!r})" if "input" in error and not isinstance(error["input"], dict) else ""
    return f"{error['msg']}{got}; change it to a valid value"


def explain(exc: ValidationError | SettingsError) -> str:
    """A settings error as lines a person can act on: table, key, what is wrong, where to change it.

    Parameters
    ----------
    exc
        pydantic's error from building a settings section, or pydantic-settings' for a value it could not parse
        (a table or list setting in the environment that is not JSON).
    """
    if isinstance(exc, SettingsError):
        return _unparsable(exc)
    cls = _section(exc.title)
    table = cls.toml_table if cls else ""
    prefix = str(cls.model_config.get("env_prefix", "")) if cls else ""
    fields = list(cls.model_fields) if cls else []
    lines = []
    for error in exc.errors():
        where = ".".join(str(x) for x in error["loc"]) or "(table)"
        env = f" or {prefix}{str(error['loc'][0]).upper()}" if prefix and error["loc"] else ""
        lines.append(f"[{table}] {where}{env}: {_problem(error, fields)}" if table else f"{where}: {_problem(error, fields)}")
    source = f"the [{table}] table of {config_path()}" if table else str(config_path())
    return (f"invalid configuration in {source} (or its {prefix}* variables):\n  " if prefix else
            f"invalid configuration in {source}:\n  ") + "\n  ".join(lines)


def _unparsable(exc: SettingsError) -> str:
    """pydantic-settings names the field and the source only; the environment variable is found by its suffix."""
    found = re.search(r'field "([^"]+)" from source "(\w+)"', str(exc))
    if found is None:
        return str(exc)
    field, source = found.groups()
    why = f" ({exc.__cause__})" if exc.__cause__ is not None else ""
    if source != "EnvSettingsSource":
        return f"setting {field} from {source} cannot be read{why}"
    names = sorted(k for k in os.environ if k.upper().startswith("EDDYLINE_") and k.upper().endswith(f"_{field.upper()}"))
    name = " or ".join(names) or f"EDDYLINE_<SECTION>_{field.upper()}"
    return (f"{name} cannot be read{why}: a table or list setting takes JSON in the environment, "
            f"e.g. {names[0] if names else name}='{{\"key\": \"value\"}}' (or set it in eddyline.toml)")


class MlflowSettings(Section):
    """``[mlflow]`` / ``EDDYLINE_MLFLOW_*``: where trainings, evaluations and model versions are recorded.

    Without a ``tracking_uri`` (here or in MLflow's own ``MLFLOW_TRACKING_URI``) eddyline keeps an embedded
    store: a SQLite database and an artifact folder under ``store_dir``, so nothing needs to run.

    Parameters
    ----------
    tracking_uri
        A team's MLflow server (``http://mlflow.internal:5000``) or any MLflow tracking URI; it is also
        the model registry.
    store_dir
        The embedded store's folder when no tracking URI is set.
    poll_s
        How often a flow asks the registry whether its champion alias moved (off the scoring path).
    retry_s
        How long a flow waits before retrying a registry change the server did not take.
    """

    toml_table: ClassVar[str] = "mlflow"
    model_config = SettingsConfigDict(env_prefix="EDDYLINE_MLFLOW_", extra="forbid")

    tracking_uri: str | None = Field(None, description="A team's MLflow server; default: the embedded store.")
    store_dir: Path = Field(Path(".eddyline/mlflow"), description="The embedded store (SQLite and artifacts).")
    poll_s: float = Field(5.0, gt=0, le=300, description="Seconds between checks of the champion alias.")
    retry_s: float = Field(10.0, gt=0, le=600, description="Seconds before a failed registry change is retried.")
