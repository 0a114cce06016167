"""Mosquitto on loopback (Debian's ``mosquitto``) for development, the tests and the ingest benchmark.

The broker is configured the way the bridge wants one in production too: persistent sessions kept,
an in-flight window wide enough for acknowledgements that wait on Kafka (``max_inflight_messages``,
20 by default in Mosquitto), and no cap on messages queued for a client that is away (the default
1000 drops QoS 1 messages once passed).
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from connectors.broker import free_port

INSTALL_HINT = "apt-get install mosquitto mosquitto-clients (Debian/Ubuntu), or `make servers`"


class MosquittoError(RuntimeError):
    """Mosquitto is missing or did not start."""


def mosquitto_binary() -> Path:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise MosquittoError(f"mosquitto is not installed: {INSTALL_HINT}")


class Mosquitto:
    """One Mosquitto on 127.0.0.1 with its files in a folder of its own; ``stop()`` ends it.

    Parameters
    ----------
    users
        name -> password; when given, anonymous clients are refused.
    tls
        (CA file, certificate, key): the listener speaks TLS with that certificate.
    inflight
        ``max_inflight_messages``: QoS 1 messages sent to a client before it must acknowledge.
    """

    def __init__(
        self, users: dict[str, str] | None = None, tls: tuple[Path, Path, Path] | None = None,
        inflight: int = 1000, folder: Path | None = None,
    ) -> None:
        self.folder = Path(folder or tempfile.mkdtemp(prefix="eddyline-mosquitto-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.users = users or {}
        self.tls = tls
        self.inflight = inflight
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.folder / "mosquitto.log"

    def start(self, timeout: float = 15.0) -> Mosquitto:
        binary = mosquitto_binary()
        for attempt in range(3):  # the free port can be taken before mosquitto binds it
            self.port = free_port()
            self._spawn(binary, self._write_config())
            if self._wait(timeout):
                return self
            self.stop()
            if attempt == 2:
                raise MosquittoError(f"mosquitto did not listen on {self.port}: {self.log_tail()}")
        raise AssertionError("unreachable")

    def restart(self, timeout: float = 15.0) -> None:
        """Stop and start again on the same port with the sessions it saved, as an upgrade or a reboot does.

        Parameters
        ----------
        timeout
            Seconds to wait for it to listen again.
        """
        self.stop()
        self._spawn(mosquitto_binary(), self.folder / "mosquitto.conf")
        if not self._wait(timeout):
            raise MosquittoError(f"mosquitto did not listen on {self.port} again: {self.log_tail()}")

    def _spawn(self, binary: Path, conf: Path) -> None:
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen([str(binary), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)

    def _write_config(self) -> Path:
        lines = [
            f"listener {self.port} 127.0.0.1",
            "persistence true",
            f"persistence_location {self.folder}/",
            f"max_inflight_messages {self.inflight}",
            "max_queued_messages 0",
            "log_dest stdout",
            "log_type error",
            "log_type warning",
            f"user {getpass.getuser()}",  # run as root, mosquitto would switch to a user that cannot read our files
        ]
        if self.users:
            passwd = self.folder / "passwd"
            passwd.write_text("".join(f"{u}:{p}\n" for u, p in self.users.items()))
            passwd.chmod(0o600)
            subprocess.run(["mosquitto_passwd", "-U", str(passwd)], check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        if self.tls:
            ca, cert, key = self.tls
            lines += [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}"]
        conf = self.folder / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def _wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:] or "(empty log)"
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
