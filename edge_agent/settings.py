"""The agent's configuration: the ``[edge]`` table of the TOML file and ``EDDYLINE_EDGE_*`` variables.

Sources are a list of tables (``[[edge.sources]]``), each with a ``kind``; the Kafka connection comes from
the ``[kafka]`` table of the same file (``connectors.kafka.KafkaSettings``).
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from connectors.config import Section
from schemas.catalog import MAX_BATCH_READINGS

MAX_SEND_TIMEOUT_S = (2**31 - 1) // 1000  # librdkafka's message.timeout.ms is a signed 32-bit count of ms


class _Source(BaseModel):
    """What every ``[[edge.sources]]`` table has.

    Parameters
    ----------
    name
        Unique among the sources; defaults to the kind (numbered when a kind repeats).
    kind
        Which source: ``simulated``, ``thermal``, ``hwmon``, ``proc``, ``csv``, ``command`` or ``plugin``.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = ""
    interval_s: float = Field(1.0, gt=0, description="How often the source is read.")


class SimulatedSource(_Source):
    """Deterministic synthetic signals: a sine with noise per sensor, ``rate`` readings per second in all.

    Parameters
    ----------
    sensors
        How many sensors.
    seed
        Seeds the noise; the same seed gives the same readings.
    unit
        The unit the readings carry.
    """

    kind: Literal["simulated"]
    sensors: int = Field(4, ge=1)
    rate: float = Field(10.0, gt=0, description="Readings per second across all sensors.")
    seed: int = 0
    unit: str | None = "celsius"


class _SysfsSource(_Source):
    """What the sysfs sources share.

    Parameters
    ----------
    timeout_s
        How long the agent waits for one read of all the source's files: a file whose driver hangs is then
        skipped, counted as an error, until its read returns.
    """

    timeout_s: float = Field(5.0, gt=0)


class ThermalSource(_SysfsSource):
    """Linux thermal zones (``/sys/class/thermal/thermal_zone*/temp``), in degrees Celsius.

    Parameters
    ----------
    root
        Where the thermal zones are (another folder for tests).
    """

    kind: Literal["thermal"]
    root: Path = Path("/sys/class/thermal")


class HwmonSource(_SysfsSource):
    """Linux hwmon sensors (``/sys/class/hwmon/hwmon*/{temp,in,fan,power,curr}*_input``), in SI units.

    Parameters
    ----------
    root
        Where the hwmon devices are (another folder for tests).
    """

    kind: Literal["hwmon"]
    root: Path = Path("/sys/class/hwmon")


class ProcSource(_Source):
    """The device's CPU use, memory and load average from ``/proc``.

    Parameters
    ----------
    root
        Where procfs is mounted (another folder for tests).
    """

    kind: Literal["proc"]
    root: Path = Path("/proc")


class CsvSource(_Source):
    """Replays a CSV file with a header ``timestamp,sensor,value[,unit]`` (timestamps in ms or ISO 8601).

    Parameters
    ----------
    path
        The CSV file.
    rows_per_read
        Rows read each interval.
    loop
        Start again at the end of the file.
    """

    kind: Literal["csv"]
    path: Path
    rows_per_read: int = Field(100, ge=1)
    loop: bool = False
    retime: bool = Field(False, description="Stamp rows with the time they are replayed instead of their own.")


class CommandSource(_Source):
    """Runs a command each interval; every output line ``sensor value [unit]`` (or ``sensor=value``) is a reading.

    Parameters
    ----------
    command
        The program and its arguments (run without a shell).
    timeout_s
        A run taking longer is killed and counted as an error.
    """

    kind: Literal["command"]
    command: list[str] = Field(min_length=1)
    timeout_s: float = Field(5.0, gt=0)


class PluginSource(_Source):
    """A source of your own (I2C, serial, ...): an entry point in ``eddyline.edge.sources`` or ``module:Class``.

    Parameters
    ----------
    options
        Passed to the plugin's constructor as keyword arguments.
    """

    kind: Literal["plugin"]
    target: str = Field(description="An entry point name or a dotted path 'package.module:Class'.")
    options: dict[str, Any] = Field(default_factory=dict)


SourceConfig = Annotated[
    SimulatedSource | ThermalSource | HwmonSource | ProcSource | CsvSource | CommandSource | PluginSource,
    Field(discriminator="kind"),
]


class InferenceSettings(BaseModel):
    """Optional on-device scoring with an int8 ONNX model (needs the ``edge-onnx`` extra).

    Parameters
    ----------
    enabled
        Score readings on the device.
    scarce_backlog
        Buffered batches above which ``send = "auto"`` sends summaries instead of raw readings.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = False
    model_path: Path | None = Field(None, description="Defaults to the model shipped with the agent.")
    threshold: float = Field(4.0, gt=0, description="A reading whose score exceeds this is anomalous.")
    send: Literal["raw", "summary", "auto"] = Field(
        "raw",
        description="raw: every reading; summary: per-sensor summaries plus anomalous readings; "
        "auto: summary while the backlog exceeds scarce_backlog batches, raw otherwise.",
    )
    scarce_backlog: int = Field(100, ge=1)
    providers: list[str] = Field(
        default_factory=list, description="ONNX Runtime providers in order; empty picks TensorRT, CUDA, then CPU."
    )


class ModelUpdateSettings(BaseModel):
    """Signed model updates from the platform (``[edge.models]``; needs the ``edge-onnx`` extra and inference on).

    The agent follows the compacted models and rollouts topics for its device class, verifies each model's
    Ed25519 signature with ``public_key`` before loading it, swaps it in without pausing sampling, and keeps
    the model it replaced for a rollback.

    Parameters
    ----------
    enabled
        Follow model rollouts.
    public_key
        The PEM file from ``eddyline edge keygen`` (``*.pub.pem``): only models it verifies are loaded.
    models_topic
        The logical topic of signed models.
    rollouts_topic
        The logical topic of rollout states.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    public_key: Path | None = None
    models_topic: str = "edge.models"
    rollouts_topic: str = "edge.rollouts"

    @model_validator(mode="after")
    def _key(self) -> ModelUpdateSettings:
        if self.enabled and self.public_key is None:
            raise ValueError("model updates are enabled without a key; set [edge.models] public_key to the .pub.pem file")
        if self.enabled and not self.public_key.is_file():
            raise ValueError(f"public_key {self.public_key} does not exist; copy the .pub.pem from `eddyline edge keygen`")
        return self


class EdgeSettings(Section):
    """Everything the agent needs besides the Kafka connection: ``[edge]`` / ``EDDYLINE_EDGE_*``.

    Nested values use ``__`` in the environment (``EDDYLINE_EDGE_INFERENCE__ENABLED=true``).

    Parameters
    ----------
    device_id
        The device's id: the Kafka key and the ``device_id`` of every batch (default: ``default_device_id``).
    sources
        The ``[[edge.sources]]`` tables; at least one, names unique.
    buffer_path
        The SQLite disk buffer, which keeps batches while the broker is unreachable.
    buffer_full_policy
        What gives way when the buffer is full: ``drop_oldest`` or ``drop_newest`` (counted either way).
    device_class
        The hardware class models are built for (``rpi4``, ``jetson-nano``, ``x86_64``); default: read from
        ``/proc/device-tree/model`` (Raspberry Pi, Jetson), else the CPU architecture.
    health_topic
        Where heartbeats are published as ``device_health`` events (the namespace prefixes it).
    heartbeat_interval_s
        How often the agent logs and publishes its health.
    metrics_host
        Where the metrics port listens.
    log_level
        ``DEBUG``, ``INFO``, ``WARNING`` or ``ERROR``.
    inference
        On-device scoring (``[edge.inference]``).
    models
        Signed model updates (``[edge.models]``).

    Examples
    --------
    >>> from edge_agent.settings import EdgeSettings
    >>> settings = EdgeSettings(device_id="pi-7", sources=[{"kind": "simulated", "sensors": 2}, {"kind": "proc"}])
    >>> [(source.kind, source.name) for source in settings.sources]
    [('simulated', 'simulated'), ('proc', 'proc')]
    >>> EdgeSettings(sources=[{"kind": "proc", "name": "a"}, {"kind": "thermal", "name": "a"}])
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for EdgeSettings
      Value error, two sources are named 'a'; give each [[edge.sources]] a unique name ...
    """

    toml_table = "edge"
    # TOML's inf passes gt=0 but turns into no byte count, timeout or interval: refused here, not as a traceback at run
    model_config = SettingsConfigDict(env_prefix="EDDYLINE_EDGE_", env_nested_delimiter="__", extra="forbid",
                                      allow_inf_nan=False)

    device_id: str = Field(default_factory=lambda: default_device_id())
    topic: str = Field("sensor.readings", description="The logical topic; the Kafka namespace prefixes it.")
    sources: list[SourceConfig] = Field(default_factory=lambda: [ProcSource(kind="proc", interval_s=5.0)])

    batch_max_readings: int = Field(
        1000, ge=1, le=MAX_BATCH_READINGS,
        description="Seal a batch once it holds this many readings; at most 50,000, which fits a Kafka message (1 MB).",
    )
    batch_max_age_s: float = Field(
        1.0, gt=0, description="Seal a batch at the latest this long after its first reading."
    )

    buffer_path: Path = Path("/var/lib/eddyline-edge/buffer.sqlite")
    buffer_max_mb: float = Field(256.0, gt=0, description="Bound on the payload bytes the buffer holds.")
    buffer_min_free_mb: float = Field(64.0, ge=0, description="Treat the buffer as full when the disk has less free.")
    buffer_full_policy: Literal["drop_oldest", "drop_newest"] = "drop_oldest"
    buffer_sync: Literal["full", "normal"] = Field(
        "full", description="full: each sealed batch survives a power cut; normal: survives a crash only."
    )

    send_max_in_flight: int = Field(500, ge=1, description="Batches handed to the producer and not yet acknowledged.")
    send_fresh_share: float = Field(
        0.25, ge=0, le=0.9, description="While draining a backlog, this share of sends goes to the newest batches."
    )
    send_timeout_s: float = Field(
        30.0, gt=0, le=MAX_SEND_TIMEOUT_S,
        description="A send unacknowledged this long is retried from disk; at most 24.8 days (librdkafka's limit).",
    )

    device_class: str = Field(default_factory=lambda: detect_device_class())
    health_topic: str = Field("device.health", description="The logical topic of health events.")
    heartbeat_interval_s: float = Field(60.0, gt=0)
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Serve Prometheus metrics on this port; off when unset."
    )
    metrics_host: str = "127.0.0.1"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    models: ModelUpdateSettings = Field(default_factory=ModelUpdateSettings)

    @field_validator("device_id")
    @classmethod
    def _device_id(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty; set device_id in [edge] or EDDYLINE_EDGE_DEVICE_ID")
        return v.strip()

    @model_validator(mode="after")
    def _models_need_inference(self) -> EdgeSettings:
        if self.models.enabled and not self.inference.enabled:
            raise ValueError("[edge.models] enabled needs [edge.inference] enabled = true (models score readings)")
        return self

    @model_validator(mode="after")
    def _sources(self) -> EdgeSettings:
        if not self.sources:
            raise ValueError("no sources configured; add at least one [[edge.sources]] table")
        seen: set[str] = set()
        for i, src in enumerate(self.sources):
            if not src.name:
                src.name = f"{src.kind}{i}" if sum(s.kind == src.kind for s in self.sources) > 1 else src.kind
            if src.name in seen:
                raise ValueError(f"two sources are named {src.name!r}; give each [[edge.sources]] a unique name")
            seen.add(src.name)
        return self


IMAGE_HOST_NAMES = frozenset({"", "localhost", "localhost.localdomain", "raspberrypi", "ubuntu", "debian",
                              "tegra-ubuntu", "jetson"})


def default_device_id(machine_id: Path = Path("/etc/machine-id")) -> str:
    """The host name, unless it is an image's default (every device flashed from the image has it, and would
    publish as one device, their sequence numbers colliding): then the host name and a hash of the machine id, as
    ``install.sh`` writes it (machine-id(5): a hash keyed to the application, never the id itself).

    Parameters
    ----------
    machine_id
        The file with this machine's id; where it is missing or empty, the host name stays.
    """
    host = socket.gethostname()
    if host not in IMAGE_HOST_NAMES:
        return host
    try:
        machine = machine_id.read_text().strip()
    except OSError:
        machine = ""
    if not machine:
        return host
    return f"{host or 'edge'}-{hashlib.sha256(f'eddyline-edge:{machine}'.encode()).hexdigest()[:12]}"


def detect_device_class(model_file: Path = Path("/proc/device-tree/model")) -> str:
    """``rpi4``, ``rpi5``, ``jetson-nano`` ... from the device tree's model string, else the CPU architecture.

    Parameters
    ----------
    model_file
        The device tree's model string (another file for tests).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from edge_agent.settings import detect_device_class
    >>> f = Path(tempfile.mkdtemp()) / "model"
    >>> _ = f.write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\\x00")
    >>> detect_device_class(f)
    'rpi4'
    >>> _ = f.write_bytes(b"NVIDIA Jetson Nano Developer Kit\\x00")
    >>> detect_device_class(f)
    'jetson-nano'
    """
    import platform
    import re

    try:
        model = model_file.read_bytes().decode(errors="replace").strip("\x00 \n")
    except OSError:
        return platform.machine() or "unknown"
    pi = re.match(r"Raspberry Pi (\d+)", model)
    if pi:
        return f"rpi{pi.group(1)}"
    jetson = re.search(r"Jetson ([A-Za-z0-9]+)", model)
    if jetson:
        return f"jetson-{jetson.group(1).lower()}"
    return re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-") or platform.machine() or "unknown"


def use_config_file(path: Path | None) -> None:
    """Point every settings section at ``path`` (what ``--config`` does), failing early if it is missing.

    Parameters
    ----------
    path
        The TOML file; None leaves ``EDDYLINE_CONFIG`` as it is.
    """
    if path is None:
        return
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist; pass --config with the path of your TOML file")
    os.environ["EDDYLINE_CONFIG"] = str(path)
